"""Target prevalence of every finding per source: the published counts, or a local calibration.

Default (``"spec"``): fractions taken from the counts quoted in
``specs/datasets.md`` (NIH-14 image counts, torchxrayvision's OpenI report counts)
and the CheXpert / MIMIC-CXR-JPG papers' label tables, rounded. Rare labels are
floored at 1 % so that every label has positives in a small world.

Optional (``"torchxrayvision"``): when the torchxrayvision package is installed
locally, its bundled metadata (``chexpert_train.csv.gz``,
``Data_Entry_2017_v2020.csv.gz``) is read at run time to recompute the CheXpert
and NIH rates. Nothing from that package is copied into this repository; the
marker file records which calibration built a world.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

FLOOR, CAP = 0.01, 0.6

_SPEC = {
    # study-level positive-or-uncertain rates (MIMIC-CXR-JPG paper, CheXpert labeler)
    "mimic": {
        "pleural_effusion": 0.24, "cardiomegaly": 0.2, "enlarged_cardiomediastinum": 0.04,
        "pneumothorax": 0.045, "consolidation": 0.06, "pneumonia": 0.08, "lung_opacity": 0.16,
        "edema": 0.12, "nodule": 0.02, "mass": 0.012, "atelectasis": 0.2, "support_devices": 0.29,
        "fracture": 0.02, "emphysema": 0.02, "fibrosis": 0.012, "hernia": 0.01,
        "pleural_thickening": 0.012, "granuloma": 0.01,
    },
    # CheXpert train (Irvin et al. 2019, Table 1): positive + uncertain
    "chexpert": {
        "pleural_effusion": 0.44, "cardiomegaly": 0.15, "enlarged_cardiomediastinum": 0.1,
        "pneumothorax": 0.1, "consolidation": 0.19, "pneumonia": 0.11, "lung_opacity": 0.38,
        "edema": 0.29, "nodule": 0.025, "mass": 0.02, "atelectasis": 0.3, "support_devices": 0.52,
        "fracture": 0.04, "emphysema": 0.02, "fibrosis": 0.01, "hernia": 0.01,
        "pleural_thickening": 0.02, "granuloma": 0.01,
    },
    # NIH ChestX-ray14 image counts / 112,120 (spec 4.3); devices and fractures exist but are unlabelled
    "nih14": {
        "pleural_effusion": 0.119, "cardiomegaly": 0.025, "enlarged_cardiomediastinum": 0.01,
        "pneumothorax": 0.047, "consolidation": 0.042, "pneumonia": 0.013, "lung_opacity": 0.177,
        "edema": 0.021, "nodule": 0.056, "mass": 0.052, "atelectasis": 0.103, "support_devices": 0.12,
        "fracture": 0.01, "emphysema": 0.022, "fibrosis": 0.015, "hernia": 0.01,
        "pleural_thickening": 0.03, "granuloma": 0.02,
    },
    # OpenI report counts / 3,955 (torchxrayvision rule, spec 5.6)
    "openi": {
        "pleural_effusion": 0.05, "cardiomegaly": 0.07, "enlarged_cardiomediastinum": 0.02,
        "pneumothorax": 0.01, "consolidation": 0.02, "pneumonia": 0.021, "lung_opacity": 0.11,
        "edema": 0.02, "nodule": 0.021, "mass": 0.01, "atelectasis": 0.097, "support_devices": 0.05,
        "fracture": 0.025, "emphysema": 0.025, "fibrosis": 0.01, "hernia": 0.014,
        "pleural_thickening": 0.01, "granuloma": 0.1,
    },
}

_CHEXPERT_COLUMNS = {
    "Pleural Effusion": ("pleural_effusion",), "Cardiomegaly": ("cardiomegaly",),
    "Enlarged Cardiomediastinum": ("enlarged_cardiomediastinum",), "Pneumothorax": ("pneumothorax",),
    "Consolidation": ("consolidation",), "Pneumonia": ("pneumonia",), "Lung Opacity": ("lung_opacity",),
    "Edema": ("edema",), "Lung Lesion": ("nodule", "mass"), "Atelectasis": ("atelectasis",),
    "Support Devices": ("support_devices",), "Fracture": ("fracture",), "Pleural Other": ("pleural_thickening",),
}
_NIH_LABELS = {
    "Effusion": "pleural_effusion", "Cardiomegaly": "cardiomegaly", "Pneumothorax": "pneumothorax",
    "Consolidation": "consolidation", "Pneumonia": "pneumonia", "Infiltration": "lung_opacity",
    "Edema": "edema", "Nodule": "nodule", "Mass": "mass", "Atelectasis": "atelectasis",
    "Emphysema": "emphysema", "Fibrosis": "fibrosis", "Hernia": "hernia", "Pleural_Thickening": "pleural_thickening",
}


def default_calibration() -> str:
    """``torchxrayvision`` when that package is installed here, else ``spec``."""
    return "torchxrayvision" if importlib.util.find_spec("torchxrayvision") is not None else "spec"


def _bounded(rates: dict[str, float]) -> dict[str, float]:
    return {k: min(CAP, max(FLOOR, float(v))) for k, v in rates.items()}


@lru_cache(maxsize=16)
def prevalence_targets(source: str, calibration: str = "spec") -> dict[str, float]:
    """Finding -> target prevalence for ``source`` (mimic | chexpert | nih14 | openi)."""
    if calibration not in ("spec", "torchxrayvision"):
        raise ValueError(f"calibration must be 'spec' or 'torchxrayvision', got {calibration!r}")
    rates = dict(_SPEC[source])
    if calibration == "torchxrayvision":
        rates.update(_from_torchxrayvision(source))
    return _bounded(rates)


def _from_torchxrayvision(source: str) -> dict[str, float]:  # pragma: no cover - needs the package
    import pandas as pd

    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or spec.origin is None:
        raise RuntimeError("calibration='torchxrayvision' but the package is not installed")
    data = Path(spec.origin).parent / "data"
    out: dict[str, float] = {}
    if source == "chexpert" and (data / "chexpert_train.csv.gz").exists():
        frame = pd.read_csv(data / "chexpert_train.csv.gz")
        for column, names in _CHEXPERT_COLUMNS.items():
            rate = float(frame[column].isin([1.0, -1.0]).mean()) if column in frame else None
            for name in names if rate is not None else ():
                out[name] = rate / len(names)
    if source == "nih14" and (data / "Data_Entry_2017_v2020.csv.gz").exists():
        labels = pd.read_csv(data / "Data_Entry_2017_v2020.csv.gz")["Finding Labels"].str.split("|")
        for label, name in _NIH_LABELS.items():
            out[name] = float(labels.map(lambda ls, lab=label: lab in ls).mean())
    return out
