"""The records contract every dataset adapter produces, and the label sets.

Records are one row per IMAGE in a pandas DataFrame with these columns:

=================  =======================================================
column             meaning
=================  =======================================================
dataset            adapter name: ``mimic-cxr``, ``chexpert``, ``nih14``, ``openi``
image_id           unique within the dataset (dicom_id, CheXpert Path, Image Index, ...)
patient_id         str; splits and bootstrap resampling go by this
study_id           str; a report / label unit (NIH: the image itself)
view               normalised view: ``PA``, ``AP``, ``LATERAL``, ``LL``, other strings kept, ``""`` unknown
split              ``train`` | ``val`` | ``test`` | ``""`` (no official split: tasks assign one)
path               absolute path of the image file
institution        the site / source style (synthetic world: its institution); ``""`` when unknown
indication         report INDICATION (or HISTORY / REASON FOR EXAMINATION) section, ``""`` if absent
findings           report FINDINGS section, ``""`` if absent
impression         report IMPRESSION section, ``""`` if absent
age                float years or NaN; sex ``M`` / ``F`` / ``""``
label columns      one float column per name in ``Records.label_names``:
                   1.0 positive, 0.0 negative, -1.0 uncertain, NaN not mentioned
ehr_* columns      MIMIC-IV join (mimic-cxr only); NaN where no EHR row matched
labelled           optional bool: False where the image's study has no row in the label
                   file (its labels are NaN because nothing was labelled, not because
                   nothing was mentioned); labelled tasks remove such rows (counted)
=================  =======================================================

Uncertain (-1.0) stays distinguishable from blank (NaN) until a task applies its
label policy (``harness.cohort.apply_label_policy``).

What an adapter learned while reading is never only an internal count:

- ``Records.skipped`` (reason -> count): rows or values REMOVED (a missing image file,
  an impossible age set to NaN, a label row with no image);
- ``Records.warnings`` (reason -> count): rows KEPT but suspicious (a study with no
  label row, contradictory labels, a blank or unknown view, several candidate files
  for one image, a patient in more than one official split);
- ``Records.problems``: ``file:row: field: what`` lines that make ``harness data check``
  fail (exit 2), e.g. an official split that is not patient-disjoint.

Runs carry skipped and warnings into the cohort, the run summary and the result record
(aggregate counts only: reason strings never hold an identifier).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

DataSource = Literal["real", "synthetic"]

BASE_COLUMNS = (
    "dataset", "image_id", "patient_id", "study_id", "view", "split", "path",
    "institution", "indication", "findings", "impression", "age", "sex",
)
SPLITS = ("train", "val", "test")
FRONTAL_VIEWS = ("PA", "AP")

# MIMIC-CXR / CheXpert labeller, in the MIMIC CSV column order.
CHEXPERT_14 = (
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum",
    "Fracture", "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion",
    "Pleural Other", "Pneumonia", "Pneumothorax", "Support Devices",
)
# CheXpert competition labels (GLoRIA / ConVIRT protocol).
CHEXPERT_5 = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
NIH_14 = (
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Effusion", "Emphysema",
    "Fibrosis", "Hernia", "Infiltration", "Mass", "Nodule", "Pleural_Thickening",
    "Pneumonia", "Pneumothorax",
)
# Harmonisation by name (torchxrayvision conventions), applied only when a task asks.
HARMONISE = {"Pleural Effusion": "Effusion", "Infiltrate": "Infiltration"}
# Labels that may be positive together with "No Finding": a device is not a finding (CheXpert: 8,808 rows).
NOT_FINDINGS = ("No Finding", "Support Devices")
CONTRADICTORY = "No Finding together with a positive finding (labels kept as in the file)"


class DataError(ValueError):
    """Bad input that stops a run: the message names the file, row and field."""


@dataclass
class Records:
    """One dataset's records plus what the adapter learned while reading it."""

    dataset: str
    frame: pd.DataFrame
    label_names: tuple[str, ...]
    root: Path
    data_source: DataSource
    skipped: dict[str, int] = field(default_factory=dict)   # reason -> count of rows/values removed
    problems: list[str] = field(default_factory=list)       # "file:row: field: what" (first few of each kind)
    extras: dict[str, object] = field(default_factory=dict)  # e.g. nih14 bounding boxes frame
    warnings: dict[str, int] = field(default_factory=dict)  # reason -> count of rows kept but suspicious
    # official split -> the file that assigns it (named by split-leak errors); {} without an official split
    split_files: dict[str, str] = field(default_factory=dict)
    # view values (besides "", always unknown) that are not a known value of this dataset: a task's views
    # filter that excludes them counts them instead of dropping them silently
    unknown_views: tuple[str, ...] = ()

    def fingerprint(self) -> str:
        """sha256 over ids, splits, views and labels: changes whenever the cohort would."""
        cols = ["image_id", "patient_id", "study_id", "view", "split", *self.label_names]
        h = hashlib.sha256(self.dataset.encode())
        h.update(pd.util.hash_pandas_object(self.frame[cols], index=False).values.tobytes())
        return h.hexdigest()

    def validate(self) -> None:
        missing = [c for c in (*BASE_COLUMNS, *self.label_names) if c not in self.frame.columns]
        if missing:
            raise DataError(f"{self.dataset}: adapter produced no column(s) {missing}")
        if self.frame["image_id"].duplicated().any():
            dup = self.frame.loc[self.frame["image_id"].duplicated(), "image_id"].iloc[0]
            raise DataError(f"{self.dataset}: duplicated image_id {dup!r}")
        bad = set(self.frame["split"].unique()) - {*SPLITS, ""}
        if bad:
            raise DataError(f"{self.dataset}: unknown split value(s) {sorted(bad)}")


def count(counts: dict[str, int], reason: str, n: int) -> None:
    """Add ``n`` to ``counts[reason]`` (nothing when ``n`` is 0, so an empty dict means a clean read)."""
    if n:
        counts[reason] = counts.get(reason, 0) + int(n)


def split_leaks(frame: pd.DataFrame, column: str = "split") -> dict[tuple[str, str], tuple[str, ...]]:
    """(dataset, patient_id) -> its splits (in ``SPLITS`` order), for patients in more than one split.

    Rows whose ``column`` is not a split name (``""``, ``unused``) are ignored. Grouped with pandas,
    so a MIMIC-sized frame takes well under a second.
    """
    rows = frame.loc[frame[column].isin(SPLITS), ["dataset", "patient_id", column]]
    per_patient = rows.drop_duplicates().groupby(["dataset", "patient_id"], sort=True)[column]
    many = per_patient.nunique()
    many = many[many > 1]
    if many.empty:
        return {}
    rank = {s: i for i, s in enumerate(SPLITS)}
    found = rows[rows.set_index(["dataset", "patient_id"]).index.isin(many.index)].drop_duplicates()
    out: dict[tuple[str, str], tuple[str, ...]] = {}
    for (dataset, patient), splits in found.groupby(["dataset", "patient_id"], sort=True)[column]:
        out[(str(dataset), str(patient))] = tuple(sorted(set(splits), key=rank.__getitem__))
    return out


def split_names(splits: tuple[str, ...]) -> str:
    """``("train", "test")`` -> ``"train and test"``; three -> ``"train, val and test"``."""
    return " and ".join(splits) if len(splits) < 3 else f"{', '.join(splits[:-1])} and {splits[-1]}"


def leak_files(split_files: dict[str, str], splits: tuple[str, ...]) -> str:
    """The file(s) that put a patient into ``splits``, joined with `` + `` (``official split`` if unknown)."""
    files = list(dict.fromkeys(split_files[s] for s in splits if s in split_files))
    return " + ".join(files) if files else "official split"


def note_split_leaks(records: Records) -> None:
    """Record the patients of ``records`` that are in more than one official split.

    One problem line (so ``harness data check`` fails) naming the split file(s), the number of
    patients and the first one with its splits; a warning counting their images (the rows are
    kept: a run refuses them, or drops them where the task says ``split: {on_leak: drop}``).
    """
    leaks = split_leaks(records.frame)
    if not leaks:
        return
    (_, patient), splits = next(iter(leaks.items()))
    every = sorted({s for found in leaks.values() for s in found}, key=SPLITS.index)
    records.problems.append(
        f"{leak_files(records.split_files, tuple(every))}: split: {len(leaks)} patient(s) in more than one split "
        f"(first: patient {patient} in {split_names(splits)}); the split is not patient-disjoint, runs refuse "
        "it unless the task says split: {on_leak: drop}")
    keys = pd.MultiIndex.from_tuples(list(leaks), names=["dataset", "patient_id"])
    in_leak = records.frame.set_index(["dataset", "patient_id"]).index.isin(keys)
    count(records.warnings, "image of a patient in more than one official split", int(in_leak.sum()))


def contradictory(frame: pd.DataFrame, label_names: tuple[str, ...]) -> np.ndarray:
    """Rows whose ``No Finding`` is 1.0 while a finding (any label but ``NOT_FINDINGS``) is 1.0 too."""
    findings = [n for n in label_names if n not in NOT_FINDINGS]
    if "No Finding" not in label_names or not findings:
        return np.zeros(len(frame), dtype=bool)
    return ((frame["No Finding"] == 1.0) & (frame[findings] == 1.0).any(axis=1)).to_numpy()
