"""Target prevalence of every finding per source: the published counts, or a local calibration.

Default (``"spec"``), whatever is installed: fractions taken from the counts quoted in
``docs/datasets.md`` (NIH-14 image counts, torchxrayvision's OpenI report counts)
and the CheXpert / MIMIC-CXR-JPG papers' label tables, rounded. Rare labels are
floored at 1 % so that every label has positives in a small world.

Only when asked for (``"torchxrayvision"``: ``write_world(calibration=...)``,
``harness data synth --calibration``, or ``HARNESS_SYNTH_CALIBRATION`` for the default
world): the bundled metadata of a locally installed torchxrayvision
(``<package>/data/chexpert_train.csv.gz`` and ``Data_Entry_2017_v2020.csv.gz``) is read
to recompute the CheXpert and NIH rates (MIMIC and OpenI keep the spec rates). Installing
the package never changes a world by itself: a world that depends on what happens to be
installed would give different numbers under the same name. Nothing from that package is
copied into this repository; ``calibration_sha256`` (a digest of the two files it read)
goes into the world's marker and its cache folder name, so a different torchxrayvision
release makes a different, differently named world.
"""

from __future__ import annotations

import hashlib
import importlib.util
from functools import lru_cache
from pathlib import Path

FLOOR, CAP = 0.01, 0.6
CALIBRATIONS = ("spec", "torchxrayvision")
ENV_CALIBRATION = "HARNESS_SYNTH_CALIBRATION"
XRV_FILES = {"chexpert": "chexpert_train.csv.gz", "nih14": "Data_Entry_2017_v2020.csv.gz"}

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


class CalibrationError(ValueError, RuntimeError):
    """A calibration that cannot be used: unknown, or its package or files are missing (the message says which).

    A ValueError (a bad argument) and a RuntimeError (what a missing package raised before).
    """


def default_calibration() -> str:
    """Always ``spec``: a world never depends on which optional packages are installed."""
    return "spec"


def check_calibration(calibration: str, where: str = "calibration") -> str:
    """``calibration`` itself when it is one of ``CALIBRATIONS``.

    Raises:
        CalibrationError: any other value (``where`` names the option or variable it came from).
    """
    if calibration not in CALIBRATIONS:
        raise CalibrationError(f"{where} must be one of {', '.join(CALIBRATIONS)}; got {calibration!r}")
    return calibration


def _xrv_data() -> Path:
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or spec.origin is None:
        raise CalibrationError("calibration 'torchxrayvision' asked for, but the torchxrayvision package is not "
                               "installed (use the default calibration 'spec')")
    return Path(spec.origin).parent / "data"


def _xrv_files() -> dict[str, Path]:
    data = _xrv_data()
    files = {source: data / name for source, name in XRV_FILES.items()}
    for path in files.values():
        if not path.is_file():
            raise CalibrationError(f"calibration 'torchxrayvision': {path} not found (this torchxrayvision "
                                   "does not bundle the metadata the calibration reads)")
    return files


def calibration_sha256(calibration: str) -> str | None:
    """Digest of what a calibration reads beyond this repository: None for ``spec``.

    Raises:
        CalibrationError: unknown calibration, or torchxrayvision / its metadata files missing.
    """
    if check_calibration(calibration) == "spec":
        return None
    h = hashlib.sha256()
    for source, path in sorted(_xrv_files().items()):
        h.update(f"{source}:{path.name}:".encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def _bounded(rates: dict[str, float]) -> dict[str, float]:
    return {k: min(CAP, max(FLOOR, float(v))) for k, v in rates.items()}


def prevalence_targets(source: str, calibration: str = "spec") -> dict[str, float]:
    """Finding -> target prevalence for ``source`` (mimic | chexpert | nih14 | openi).

    Raises:
        CalibrationError: see ``calibration_sha256``.
    """
    # keyed by the files' digest too: another torchxrayvision on sys.path gives other rates, never stale ones
    return dict(_targets(source, calibration, calibration_sha256(calibration)))


@lru_cache(maxsize=32)
def _targets(source: str, calibration: str, digest: str | None) -> dict[str, float]:
    rates = dict(_SPEC[source])
    if calibration == "torchxrayvision":
        rates.update(_from_torchxrayvision(source))
    return _bounded(rates)


def _from_torchxrayvision(source: str) -> dict[str, float]:
    import pandas as pd

    if source not in XRV_FILES:
        return {}
    path = _xrv_files()[source]
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError, EOFError) as exc:
        raise CalibrationError(f"calibration 'torchxrayvision': {path}: unreadable ({exc})") from None
    columns = list(_CHEXPERT_COLUMNS) if source == "chexpert" else ["Finding Labels"]
    missing = [c for c in columns if c not in frame.columns]
    if missing or frame.empty:
        raise CalibrationError(f"calibration 'torchxrayvision': {path}: "
                               + (f"no column(s) {missing}" if missing else "no rows"))
    out: dict[str, float] = {}
    if source == "chexpert":
        for column, names in _CHEXPERT_COLUMNS.items():
            rate = float(frame[column].isin([1.0, -1.0]).mean())
            for name in names:
                out[name] = rate / len(names)
    else:
        labels = frame["Finding Labels"].fillna("").astype(str).str.split("|")
        for label, name in _NIH_LABELS.items():
            out[name] = float(labels.map(lambda ls, lab=label: lab in ls).mean())
    return out
