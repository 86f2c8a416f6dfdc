"""``--pretraining-manifest FILE``: the ids the weights were trained on, and their overlap with a task.

A public CXR encoder was usually pretrained on some of the very datasets the benchmark
evaluates on (MIMIC-CXR, CheXpert, NIH-14). ``--pretraining-data mimic-cxr:train`` says
so by name; a manifest says it by id, and the harness computes, locally, how many of the
task's **validation and test patients** the weights have seen (``overlap``). Only
counts leave this module: the ids are never stored, printed or logged.

The file (``read_manifest``) is either

- a CSV (or TSV) with a header naming one or more id columns: ``image_id``, ``dicom_id``,
  ``Image Index``, ``Path``, ``path``, ``image``, ``study_id``, ``study``, ``patient_id``,
  ``subject_id``, ``Patient ID``, ``patient`` (case-insensitive); or
- plain text, one id per line (its first comma- or whitespace-separated field; blank lines
  and ``#`` comments skipped).

Ids of any kind are matched against every row's image, study and patient id, after the
same normalisation on both sides (``variants``): case and surrounding quotes ignored,
MIMIC's ``p``/``s`` prefixes and leading zeros dropped from numeric ids (``p10000032`` is
subject ``10000032``, ``00000001`` is NIH patient ``1``), an image path also matches by its
file name, its file name without extension (MIMIC's ``files/p10/.../DICOM_ID.jpg``) and its
last three or more path parts (CheXpert's ``patient00001/study1/view1_frontal.jpg``,
whichever of its folders it was copied from). A patient counts as seen when any of their
images, studies or their patient id is in the manifest.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.encoders.errors import SubmissionError

ID_COLUMNS = ("image_id", "dicom_id", "image index", "path", "image", "study_id", "study", "patient_id",
              "subject_id", "patient id", "patient")
_NUMERIC = re.compile(r"[ps]?(\d+)")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".dcm", ".dicom", ".tif", ".tiff")
_MIN_PARTS = 3  # path suffixes shorter than this (``study1/view1_frontal.jpg``) are not unique


@dataclass(frozen=True)
class Manifest:
    """A manifest's ids (normalised variants), how many entries it has, and its content's sha256."""

    path: str
    sha256: str
    entries: tuple[frozenset[str], ...]  # the variants of each entry

    @property
    def n_ids(self) -> int:
        return len(self.entries)


def _norm(value: str) -> str:
    text = value.strip().strip("\"'").strip().lower().replace("\\", "/")
    found = _NUMERIC.fullmatch(text)
    return str(int(found.group(1))) if found else text


def variants(value: str, image: bool = True) -> set[str]:
    """Every form of an id that may match the same image, study or patient (see the module docstring)."""
    text = _norm(str(value))
    if not text:
        return set()
    out = {text}
    if image and "/" in text:
        parts = [p for p in text.split("/") if p]
        out.add(parts[-1])
        out |= {"/".join(parts[i:]) for i in range(len(parts)) if len(parts) - i >= _MIN_PARTS}
    if image and text.endswith(_IMAGE_SUFFIXES):
        out.add(_norm(text.rsplit("/", 1)[-1].rsplit(".", 1)[0]))
    return out


def _row_keys(image_id: str, study_id: str, patient_id: str) -> set[str]:
    image = _norm(str(image_id))
    keys = {image}
    if "/" in image:  # a path-like image id (CheXpert): its unique suffixes, never the bare file name
        parts = [p for p in image.split("/") if p]
        keys |= {"/".join(parts[i:]) for i in range(len(parts)) if len(parts) - i >= _MIN_PARTS}
    elif image.endswith(_IMAGE_SUFFIXES):  # NIH's 00000001_000.png: also without its extension
        keys.add(_norm(image.rsplit(".", 1)[0]))
    return keys | {_norm(str(study_id)), _norm(str(patient_id))} - {""}


def _decode(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except IsADirectoryError:
        raise SubmissionError(f"--pretraining-manifest {path} is a folder; pass the manifest file") from None
    except OSError as exc:
        raise SubmissionError(f"--pretraining-manifest {path} cannot be read: {exc.strerror or exc}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise SubmissionError(f"--pretraining-manifest {path}: not a text file (expected one id per line or a CSV "
                              "with an id column)") from None


def read_manifest(path: str | Path) -> Manifest:
    """The manifest at ``path`` (see the module docstring).

    Raises:
        SubmissionError: one line naming the file and, for a CSV, its header: missing, not text,
            no id column, no ids at all.
    """
    path = Path(path)
    if not path.exists():
        raise SubmissionError(f"--pretraining-manifest {path} does not exist")
    text = _decode(path)
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise SubmissionError(f"--pretraining-manifest {path}: holds no ids (one image, study or patient id per "
                              "line, or a CSV with an image_id / study_id / patient_id column)")
    first = lines[0]
    delimiter = "\t" if "\t" in first else "," if "," in first else None
    header = [h.strip().strip("\"'").lower() for h in (first.split(delimiter) if delimiter else [first])]
    id_columns = [i for i, h in enumerate(header) if h in ID_COLUMNS]
    values: list[list[str]] = []
    if delimiter and id_columns:
        rows = csv.reader(io.StringIO("\n".join(lines[1:])), delimiter=delimiter)
        values = [[row[i] for i in id_columns if i < len(row)] for row in rows]
    elif delimiter and any(c.isalpha() for c in first) and not any(h in ID_COLUMNS for h in header) and \
            len(header) > 1 and not _looks_like_id(header[0]):
        raise SubmissionError(f"--pretraining-manifest {path}: line 1 {first[:80]!r} names no id column (expected "
                              f"one of {list(ID_COLUMNS)}, or one id per line)")
    else:
        start = 1 if header[0] in ID_COLUMNS else 0
        values = [[re.split(r"[\s,\t]+", ln.strip())[0]] for ln in lines[start:]]
    entries = tuple(frozenset(set().union(*(variants(v) for v in row))) for row in values if any(v.strip()
                                                                                                for v in row))
    if not entries:
        raise SubmissionError(f"--pretraining-manifest {path}: holds no ids below its header")
    return Manifest(str(path), hashlib.sha256(text.encode()).hexdigest(), entries)


def _looks_like_id(value: str) -> bool:
    return bool(_NUMERIC.fullmatch(value)) or "/" in value or value.endswith(_IMAGE_SUFFIXES)


def overlap(manifest: Manifest, data: Any) -> dict[str, Any]:
    """Counts of the task's patients (and the manifest's ids) the manifest covers; no id is returned.

    Args:
        manifest: from ``read_manifest``.
        data: a ``harness.cohort.TaskData`` (train / val / test frames with image, study, patient ids).

    Returns:
        ``manifest_sha256``, ``manifest_ids``, ``matched_ids`` (entries found in any split), and per
        split ``<split>_patients`` (patients seen in pretraining) and ``<split>_patients_total``.
    """
    wanted: set[str] = set().union(*manifest.entries)
    found: set[str] = set()
    out: dict[str, Any] = {"manifest_sha256": manifest.sha256, "manifest_ids": manifest.n_ids}
    for name in ("train", "val", "test"):
        frame = data.split(name).frame
        seen: set[str] = set()
        for image, study, patient in zip(frame["image_id"].astype(str), frame["study_id"].astype(str),
                                         frame["patient_id"].astype(str)):
            hit = _row_keys(image, study, patient) & wanted
            if hit:
                found |= hit
                seen.add(patient)
        out[f"{name}_patients"] = len(seen)
        out[f"{name}_patients_total"] = int(frame["patient_id"].astype(str).nunique())
    out["matched_ids"] = sum(1 for entry in manifest.entries if entry & found)
    return out


def leaks(counts: dict[str, Any]) -> bool:
    """Whether the manifest covers any validation or test patient."""
    return bool(counts.get("val_patients") or counts.get("test_patients"))
