"""CheXpert v1.0 (Irvin et al., AAAI 2019): 224,316 chest radiographs of 65,240 patients, Stanford.

Access: registration on Stanford AIMI and the CheXpert Dataset Research Use
Agreement (personal, non-commercial; no redistribution). Nothing of it is in
this repository; tests write synthetic files in the same layout.
Cite: Irvin J. et al., "CheXpert: A Large Chest Radiograph Dataset with
Uncertainty Labels and Expert Comparison", AAAI 2019.

Layout read (``<data root>/chexpert/``; spec ``datasets.md`` section 3)::

    chexpert/CheXpert-v1.0-small/          # or CheXpert-v1.0/ (original resolution),
      train.csv  valid.csv                 # or the files directly in chexpert/ (Kaggle mirrors)
      train/patient00001/study1/view1_frontal.jpg
      valid/patient64541/study1/view1_frontal.jpg
      test/patient64741/study1/view1_frontal.jpg   # optional, with groundtruth.csv
      groundtruth.csv                      # optional (here or in chexpert/): study-level 0/1 test labels

Records (one row per image):

- ``split``: ``train.csv`` -> ``train``; ``valid.csv`` (the official 200-study,
  radiologist-consensus validation set) -> ``val``; test images joined to
  ``groundtruth.csv`` -> ``test``. Tasks that evaluate on ``valid.csv`` (as
  most papers do) say so in their split choice; the adapter keeps the names.
- ``image_id``: the CSV ``Path`` with everything before ``(train|valid|test)/patient``
  stripped (``train/patient00001/study1/view1_frontal.jpg``), so ids are the
  same for the ``-small`` and the original release; ``path`` joins it to the
  release folder actually found on disk (whatever the CSV prefix says).
- ``patient_id`` ``patient00001``; ``study_id`` ``patient00001/study1``.
- ``view``: the ``AP/PA`` value of a Frontal row when given (``AP``, ``PA``, and on
  17 *Frontal* rows ``LL`` / ``RL``, kept as written, so frontal-only cohorts (PA/AP)
  leave these contradictory rows out); ``LATERAL`` for every Lateral row (its AP/PA
  is empty in the real files; a value there is a warning and Frontal/Lateral wins);
  ``FRONTAL`` for frontal images whose projection is not known (a blank AP/PA, test
  images). Warnings (rows kept): a blank AP/PA on a Frontal row, an AP/PA value other
  than AP / PA / LL / RL, LL / RL on a Frontal row, AP/PA on a Lateral row.
- ``age``: years; ``0`` (3 train rows) means unknown and becomes NaN; ``90``
  means "90 or older" and is kept as 90.
- ``sex``: ``Male`` -> ``M``, ``Female`` -> ``F``, ``Unknown`` / blank -> ``""``.
- labels: the 14 CheXpert columns as 1.0 / 0.0 / -1.0 (uncertain) / NaN
  (blank), unchanged; ``No Finding``=1 rows keep their ``Support Devices`` and
  nothing is zero-filled (that is a task's label policy).
- report sections are ``""`` (CheXpert ships no reports).

Also warned (rows kept): ``No Finding`` = 1.0 together with a positive finding
(``Support Devices`` is not a finding), and, when both releases are present, images
that exist in both (the release read, ``-small`` first, is the one used). A patient
in more than one of train.csv / valid.csv / test (the official split is
patient-disjoint by patient number) is a problem for ``harness data check``.

Bad input: a missing column, an unknown value in Sex / Frontal/Lateral / a
label, a non-numeric age, an unparseable Path or a duplicated Path is a
``DataError`` naming file, line and column; so is a CSV that ends in the middle
of a row (a truncated copy). With ``check_files`` a CSV row whose
image file is absent is skipped and counted (``"image file missing"``), and so is a
JPG under ``train/`` or ``valid/`` that no CSV row lists (a CSV with rows missing);
test images and ``groundtruth.csv`` studies that do not match are counted too.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from harness.data.check import CheckReport
from harness.data.schema import (
    BASE_COLUMNS,
    CHEXPERT_14,
    CONTRADICTORY,
    DataError,
    DataSource,
    Records,
    contradictory,
    count,
    note_split_leaks,
)
from harness.data.tables import ensure_complete

NAME = "chexpert"
INSTITUTION = "Stanford"
RELEASES = ("CheXpert-v1.0-small", "CheXpert-v1.0")
# The CSV header of train.csv / valid.csv, byte for byte (label order of the CSV, not of CHEXPERT_14).
CSV_LABELS = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
    "Fracture", "Support Devices",
)
CSV_HEADER = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CSV_LABELS)
SPLIT_OF_CSV = {"train.csv": "train", "valid.csv": "val"}

_REL_PATH = re.compile(r"(?:^|/)((?:train|valid|test)/(patient\d+)/(study\d+)/[^/]+\.jpg)$")
_TEST_STUDY = re.compile(r"(?:^|/)(test/patient\d+/study\d+)/?$")
_LABEL_VALUES = {"1.0": 1.0, "0.0": 0.0, "-1.0": -1.0, "1": 1.0, "0": 0.0, "-1": -1.0, "": np.nan}
_SEX = {"Male": "M", "Female": "F", "Unknown": "", "": ""}
PROJECTIONS = ("AP", "PA", "LL", "RL")  # the AP/PA values of the real train.csv
VIEW_BLANK = "AP/PA blank on a Frontal image (view FRONTAL)"
VIEW_UNKNOWN = "AP/PA not a known value (AP, PA, LL, RL)"
VIEW_LATERAL_ON_FRONTAL = "AP/PA LL or RL on a Frontal image (view kept as written)"
VIEW_ON_LATERAL = "AP/PA given on a Lateral image (view LATERAL: Frontal/Lateral wins)"
JPG_WITHOUT_ROW = "JPG under train/ or valid/ without a row in train.csv / valid.csv (not loaded)"


def find_release(root: Path) -> tuple[Path | None, list[str]]:
    """The folder holding train.csv / valid.csv, and notes about the choice."""
    base = root / "chexpert"
    found = [base / r for r in RELEASES if _has_csv(base / r)]
    if _has_csv(base):
        found.append(base)
    notes = []
    if len(found) > 1:
        notes.append(f"several CheXpert releases found ({', '.join(p.name for p in found)}); "
                     f"reading {found[0].name}")
    return (found[0] if found else None), notes


def _has_csv(folder: Path) -> bool:
    return any((folder / name).is_file() for name in SPLIT_OF_CSV)


def _read_csv(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    """All cells as stripped strings, blanks as ``""``; missing columns are a DataError."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot parse CSV: {e}") from e
    if not isinstance(frame.index, pd.RangeIndex):  # pandas made an index of the surplus leading fields
        raise DataError(f"{path}:2: row: more fields than the header has columns")
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataError(f"{path}:1: header: missing column(s) {missing}")
    ensure_complete(path, len(frame.columns))  # pandas pads a cut last row with blanks: blank labels
    return frame.apply(lambda col: col.str.strip())


def _bad_value(path: Path, frame: pd.DataFrame, mask: pd.Series, column: str, allowed: str) -> DataError:
    i = int(np.flatnonzero(mask.to_numpy())[0])
    value = frame[column].iloc[i]
    return DataError(f"{path}:{i + 2}: {column}: unexpected value {value!r} (expected {allowed})")


def parse_labels(path: Path, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """The 14 label columns as float arrays (1 / 0 / -1 / NaN)."""
    out = {}
    for name in CHEXPERT_14:
        col = frame[name]
        bad = ~col.isin(_LABEL_VALUES.keys())
        if bad.any():
            raise _bad_value(path, frame, bad, name, "1.0, 0.0, -1.0 or blank")
        out[name] = col.map(_LABEL_VALUES).to_numpy(dtype=float)
    return out


def _parse_age(path: Path, frame: pd.DataFrame) -> np.ndarray:
    age = pd.to_numeric(frame["Age"].replace("", np.nan), errors="coerce")
    bad = (age.isna() & (frame["Age"] != "")) | (age < 0) | (age > 90)  # CheXpert writes 90+ as 90
    if bad.any():
        raise _bad_value(path, frame, bad, "Age", "years 0-90 or blank")
    return age.where(age != 0).to_numpy(dtype=float)  # 0 = unknown in CheXpert


def _parse_views(path: Path, frame: pd.DataFrame, warnings: dict[str, int]) -> np.ndarray:
    fl, appa = frame["Frontal/Lateral"], frame["AP/PA"].str.upper()
    bad = ~fl.isin(("Frontal", "Lateral"))
    if bad.any():
        raise _bad_value(path, frame, bad, "Frontal/Lateral", "Frontal or Lateral")
    frontal, given = (fl == "Frontal").to_numpy(), (appa != "").to_numpy()
    count(warnings, VIEW_BLANK, int((frontal & ~given).sum()))
    count(warnings, VIEW_UNKNOWN, int((given & ~appa.isin(PROJECTIONS)).sum()))
    count(warnings, VIEW_LATERAL_ON_FRONTAL, int((frontal & appa.isin(("LL", "RL"))).sum()))
    count(warnings, VIEW_ON_LATERAL, int((~frontal & given).sum()))
    return np.where(frontal, np.where(given, appa.to_numpy(), "FRONTAL"), "LATERAL")


def _rel_paths(path: Path, frame: pd.DataFrame) -> pd.DataFrame:
    """Path -> (image_id, patient, study) with the archive prefix stripped."""
    parts = frame["Path"].str.extract(_REL_PATH)
    bad = parts[0].isna()
    if bad.any():
        raise _bad_value(path, frame, bad, "Path", "'.../(train|valid|test)/patientN/studyK/viewK_*.jpg'")
    dup = parts[0].duplicated()
    if dup.any():
        raise _bad_value(path, frame, dup, "Path", "each image once")
    return parts


def _csv_records(release: Path, csv_name: str, warnings: dict[str, int]) -> tuple[pd.DataFrame, list[str]]:
    path = release / csv_name
    frame = _read_csv(path, CSV_HEADER)
    parts = _rel_paths(path, frame)
    sex = frame["Sex"]
    bad = ~sex.isin(_SEX.keys())
    if bad.any():
        raise _bad_value(path, frame, bad, "Sex", "Male, Female or Unknown")
    age = _parse_age(path, frame)
    notes = []
    n_age0 = int((frame["Age"].isin(("0", "0.0"))).sum())
    if n_age0:
        notes.append(f"{csv_name}: {n_age0} row(s) with Age 0 read as unknown (NaN)")
    out = pd.DataFrame({
        "image_id": parts[0], "patient_id": parts[1], "study_id": parts[1] + "/" + parts[2],
        "view": _parse_views(path, frame, warnings), "split": SPLIT_OF_CSV[csv_name],
        "path": [str(release / p) for p in parts[0]], "age": age, "sex": sex.map(_SEX),
        **parse_labels(path, frame),
    })
    return out, notes


def _test_records(release: Path, base: Path,
                  skipped: dict[str, int]) -> tuple[pd.DataFrame | None, list[str]]:
    """Test images (``test/`` folder) joined to the study-level ``groundtruth.csv``."""
    gt_path = next((p for p in (release / "groundtruth.csv", base / "groundtruth.csv") if p.is_file()), None)
    test_dir = next((d for d in (release / "test", base / "test") if d.is_dir()), release / "test")
    if gt_path is None and not test_dir.is_dir():
        return None, []
    if gt_path is None:
        images = _list_test_images(test_dir)
        _count(skipped, "test image without groundtruth", len(images))
        return None, [f"{test_dir} has no groundtruth.csv: test images not loaded"]
    gt = _read_csv(gt_path, ("Study", *CSV_LABELS))
    studies = gt["Study"].str.extract(_TEST_STUDY)[0]
    if studies.isna().any():
        raise _bad_value(gt_path, gt, studies.isna(), "Study", "'.../test/patientN/studyK'")
    if studies.duplicated().any():
        raise _bad_value(gt_path, gt, studies.duplicated(), "Study", "each study once")
    labels = pd.DataFrame(parse_labels(gt_path, gt), index=studies.to_numpy())
    if not test_dir.is_dir():
        return None, [f"{gt_path.name} found but no {test_dir}: test set not loaded"]
    images = _list_test_images(test_dir)
    rel = [f"test/{p.parent.parent.name}/{p.parent.name}/{p.name}" for p in images]
    study = [r.rsplit("/", 1)[0] for r in rel]
    known = np.array([s in labels.index for s in study], dtype=bool)
    _count(skipped, "test image without groundtruth", int((~known).sum()))
    _count(skipped, "test study without images", len(set(labels.index) - set(study)))
    keep = np.flatnonzero(known)
    rel_k, study_k = [rel[i] for i in keep], [study[i] for i in keep]
    out = pd.DataFrame({
        "image_id": rel_k, "patient_id": [s.split("/")[1] for s in study_k],
        "study_id": [s.split("/", 1)[1] for s in study_k],
        "view": ["LATERAL" if "lateral" in r.rsplit("/", 1)[1] else "FRONTAL" for r in rel_k],
        "split": "test", "path": [str(images[i]) for i in keep], "age": np.nan, "sex": "",
    })
    for name in CHEXPERT_14:
        out[name] = labels.loc[study_k, name].to_numpy(dtype=float) if keep.size else np.zeros(0)
    return out, []


def _list_test_images(test_dir: Path) -> list[Path]:
    return sorted(p for p in test_dir.glob("patient*/study*/*.jpg") if p.is_file())


def _count(skipped: dict[str, int], reason: str, n: int) -> None:
    if n:
        skipped[reason] = skipped.get(reason, 0) + n


def load(root: Path, *, data_source: DataSource = "real", check_files: bool = True) -> Records:
    """Read ``root/chexpert`` into Records (see the module docstring for every choice)."""
    root = Path(root).expanduser().resolve()
    release, notes = find_release(root)
    if release is None:
        raise DataError(f"{root / 'chexpert'}: no train.csv or valid.csv (looked in "
                        f"{', '.join(RELEASES)} and the folder itself)")
    parts, skipped, warnings, split_files = [], {}, {}, {}
    rows_without_file: list[str] = []
    for csv_name in SPLIT_OF_CSV:
        if not (release / csv_name).is_file():
            notes.append(f"{release / csv_name} not found")
            continue
        frame, csv_notes = _csv_records(release, csv_name, warnings)
        notes += csv_notes
        split_files[SPLIT_OF_CSV[csv_name]] = str(release / csv_name)
        if check_files:
            exists = np.array([os.path.isfile(p) for p in frame["path"]], dtype=bool)
            _count(skipped, "image file missing", int((~exists).sum()))
            rows_without_file += frame.loc[~exists, "image_id"].tolist()
            frame = frame[exists]
        parts.append(frame)
    test, test_notes = _test_records(release, root / "chexpert", skipped)
    notes += test_notes
    if test is not None:
        parts.append(test)
        split_files["test"] = str(Path(test["path"].iloc[0]).parents[2]) if len(test) else "test/"
    frame = pd.concat(parts, ignore_index=True)
    if check_files and len(frame) == 0:
        raise DataError(f"{release}: no image file of the CSVs exists (is the data root right?)")
    frame["dataset"], frame["institution"] = NAME, INSTITUTION
    for section in ("indication", "findings", "impression"):
        frame[section] = ""
    frame = frame[[*BASE_COLUMNS, *CHEXPERT_14]]
    count(warnings, CONTRADICTORY, int(contradictory(frame, CHEXPERT_14).sum()))
    if check_files:
        _count_other_release(frame, release, root / "chexpert", warnings)
        listed = set(frame["image_id"]) | set(rows_without_file)
        _count(skipped, JPG_WITHOUT_ROW, sum(1 for rel in _csv_images_on_disk(release) if rel not in listed))
    unknown = sorted(set(frame["view"]) - {"AP", "PA", "LATERAL", "LL", "RL", ""})  # FRONTAL: projection unknown
    records = Records(NAME, frame, CHEXPERT_14, root, data_source, skipped=skipped,
                      extras={"release": release.name, "notes": notes}, warnings=warnings,
                      split_files=split_files, unknown_views=tuple(unknown))
    records.validate()
    note_split_leaks(records)
    return records


def _csv_images_on_disk(release: Path) -> list[str]:
    """``train/...`` / ``valid/...`` relative paths of the JPGs under the release (what the CSVs should list)."""
    found = []
    for sub in ("train", "valid"):
        for dirpath, _, filenames in os.walk(release / sub):
            rel = os.path.relpath(dirpath, release)
            found += [f"{rel}/{name}" for name in filenames if name.lower().endswith(".jpg")]
    return found


def _count_other_release(frame: pd.DataFrame, release: Path, base: Path, warnings: dict[str, int]) -> None:
    """Images present in another release folder too (``-small`` next to the original): one file is read."""
    others = [f for f in (*(base / r for r in RELEASES), base) if f != release and _has_csv(f)]
    if not others:
        return
    n = sum(any(os.path.isfile(o / image_id) for o in others) for image_id in frame["image_id"])
    count(warnings, f"image in several CheXpert releases ({release.name} used)", n)


def _report(name: str, root: Path, present: bool, records_or_error: Records | DataError | None) -> CheckReport:
    return CheckReport.from_load(name, root, present, records_or_error)


def check(root: Path) -> CheckReport:
    """Load ``root/chexpert`` and summarise it (aggregate counts only)."""
    root = Path(root).expanduser().resolve()
    release, _ = find_release(root)
    if release is None:
        rep = _report(NAME, root, False, None)
        rep.notes.append(f"expected {root / 'chexpert'}/{RELEASES[0]}/train.csv (or {RELEASES[1]}/)")
        return rep
    try:
        return _report(NAME, root, True, load(root))
    except DataError as e:
        return _report(NAME, root, True, e)


class ChexpertAdapter:
    """The ``chexpert`` entry of ``harness.catalog.DATASETS``."""

    name = NAME
    label_names = CHEXPERT_14
    views = ("PA", "AP", "LL", "RL", "LATERAL", "FRONTAL")  # see ``view`` in the module docstring
    splits = ("train", "val", "test")  # train.csv, valid.csv, test/ with groundtruth.csv

    def load(self, root: Path, *, data_source: DataSource = "real", check_files: bool = True) -> Records:
        return load(root, data_source=data_source, check_files=check_files)

    def check(self, root: Path) -> CheckReport:
        return check(root)


ADAPTER = ChexpertAdapter()
