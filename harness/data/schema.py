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
=================  =======================================================

Uncertain (-1.0) stays distinguishable from blank (NaN) until a task applies its
label policy (``harness.data.labels``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

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
    skipped: dict[str, int] = field(default_factory=dict)   # reason -> count (reported by runs)
    problems: list[str] = field(default_factory=list)       # "file:row: field: what" (first few of each kind)
    extras: dict[str, object] = field(default_factory=dict)  # e.g. nih14 bounding boxes frame

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
