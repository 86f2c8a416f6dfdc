"""A tiny dataset for unit tests: 96 grey 32x32 PNGs with two learnable labels.

``Square`` is a bright square in the upper left, ``Bar`` a horizontal bar near the
bottom; each present with probability 1/2, noise elsewhere. Written on first
use under ``$HARNESS_CACHE/mock/v2`` and read back like any other dataset, so the
whole flow (cache, cohort, encoder, protocol, record) runs in seconds.

Like every cache it is validated before use: ``manifest.json`` holds the sha256 of
each file, and a folder whose files are missing, damaged or unlisted is rewritten
(with a warning), never trusted.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from harness.data.schema import Records
from harness.storage import cache_root

LABELS = ("Square", "Bar")
N_PATIENTS, IMAGES_PER_PATIENT, SIZE, VERSION = 48, 2, 32, 2


def _root() -> Path:
    return cache_root() / "mock" / f"v{VERSION}"


def _write(root: Path) -> None:
    rng = np.random.default_rng(0)
    rows = []
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=".mock-"))
    for p in range(N_PATIENTS):
        for k in range(IMAGES_PER_PATIENT):
            square, bar = rng.random(2) < 0.5
            img = rng.normal(90, 30, (SIZE, SIZE))
            if square:
                img[5:11, 5:11] += 28
            if bar:
                img[24:26, 6:26] += 28
            name = f"p{p:03d}_{k}.png"
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), mode="L").save(tmp / name)
            rows.append({"image_id": name, "patient_id": f"p{p:03d}", "Square": float(square), "Bar": float(bar)})
    pd.DataFrame(rows).to_csv(tmp / "labels.csv", index=False)
    (tmp / MANIFEST).write_text(json.dumps(_digests(tmp), indent=0, sort_keys=True))
    try:
        os.replace(tmp, root)
    except OSError:  # another process won the race; its copy is identical
        shutil.rmtree(tmp, ignore_errors=True)


MANIFEST = "manifest.json"


def _digests(folder: Path) -> dict[str, str]:
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(folder.iterdir())
            if f.is_file() and f.name != MANIFEST}


def _problem(root: Path) -> str:
    """Why the mock folder cannot be trusted ("" when it can; "absent" when there is none)."""
    if not root.is_dir():
        return "absent"
    try:
        expected = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return f"{MANIFEST} missing or unreadable"
    expected_files = N_PATIENTS * IMAGES_PER_PATIENT + 1  # the PNGs and labels.csv
    if not isinstance(expected, dict) or len(expected) != expected_files:
        return f"{MANIFEST} does not list the {expected_files} files"
    actual = _digests(root)
    bad = sorted(set(expected) ^ set(actual) | {n for n in expected if actual.get(n) != expected[n]})
    return f"{len(bad)} file(s) missing, extra or changed (e.g. {bad[0]})" if bad else ""


def _ensure(root: Path) -> None:
    """Write the mock data unless a valid copy is there; rewrite a damaged copy."""
    from harness.storage import file_lock

    if not _problem(root):
        return
    root.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(root.parent / f".{root.name}.lock"):
        why = _problem(root)
        if not why:
            return  # another process wrote it while we waited
        if why != "absent":
            warnings.warn(f"mock data {root}: {why}; rewriting it", stacklevel=3)
            shutil.rmtree(root)
        _write(root)


class MockAdapter:
    name = "mock"
    needs_data_root = False  # it writes itself into the cache; no data root is resolved for it
    views = ("PA",)
    splits = ()  # tasks assign a patient-hash split

    def load(self, root: Path | None = None, *, data_source: str = "synthetic", **_: object) -> Records:
        root = _root()
        _ensure(root)
        df = pd.read_csv(root / "labels.csv", dtype={"image_id": str, "patient_id": str})
        frame = pd.DataFrame({
            "dataset": "mock", "image_id": df["image_id"], "patient_id": df["patient_id"],
            "study_id": df["image_id"], "view": "PA", "split": "", "path": [str(root / n) for n in df["image_id"]],
            "institution": "mock", "indication": "", "findings": "", "impression": "", "age": np.nan, "sex": "",
            "Square": df["Square"], "Bar": df["Bar"],
        })
        return Records(dataset="mock", frame=frame, label_names=LABELS, root=root, data_source="synthetic")

    def check(self, root: Path | None = None):
        from harness.data.check import CheckReport

        recs = self.load(root)
        return CheckReport.from_load("mock", recs.root, True, recs)  # with its image paths: data check decodes


ADAPTER = MockAdapter()
