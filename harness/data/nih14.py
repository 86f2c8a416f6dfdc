"""NIH ChestX-ray14 (Wang et al., CVPR 2017): 112,120 frontal PNGs of 30,805 patients, NIH Clinical Center.

Access: public (NIH Box ``https://nihcc.app.box.com/v/ChestXray-NIHCC``; Kaggle
mirror ``nih-chest-xrays/data``), attribution required: link the NIH download
site, cite Wang X. et al., "ChestX-ray8: Hospital-scale Chest X-ray Database and
Benchmarks ...", CVPR 2017, and acknowledge the NIH Clinical Center.

Layout read (``<data root>/nih14/``; spec ``datasets.md`` section 4)::

    nih14/Data_Entry_2017_v2020.csv   # or the original Data_Entry_2017.csv (trailing header comma)
    nih14/BBox_List_2017.csv          # optional: 984 boxes on 880 images
    nih14/train_val_list.txt  nih14/test_list.txt   # official patient-disjoint split
    nih14/images/00000001_000.png ... # extracted Box archives: one flat folder, or
    nih14/images_001/images/*.png ... # the Kaggle mirror's batch folders; PNGs are found recursively

Records (one row per image; NIH labels are image level, so ``study_id`` = ``image_id``):

- labels: the 14 ``NIH_14`` findings plus ``No Finding``, from ``Finding Labels``
  split on ``|`` (never substring matching): 1.0 listed, 0.0 not listed. The
  labels are NLP-mined from reports; there is no uncertain value and no NaN.
- ``split``: ``train_val_list.txt`` -> ``train`` (tasks carve their validation
  set out of it by patient), ``test_list.txt`` -> ``test``, neither -> ``""``.
- ``patient_id``: ``Patient ID`` as an unpadded integer string; ``view``:
  ``View Position`` (``PA`` / ``AP``); ``sex``: ``M`` / ``F``.
- ``age``: ``Patient Age`` in years (``058Y``-style values of older copies are
  read too). The original 2017 CSV has a few impossible ages (148-414): ages
  above 100 become NaN and are counted as the skip reason ``"impossible age"``
  (the row itself is kept).
- ``Records.extras["boxes"]``: ``BBox_List_2017.csv`` as a DataFrame with
  ``image_id, label, x, y, w, h`` (pixels), ``width, height`` (the PNG's own
  size, read from its header without decoding) and ``x0, y0, x1, y1`` (the box
  normalised to [0, 1] by that size, clipped). ``Infiltrate`` is renamed
  ``Infiltration``. Boxes of images that are not in the records are counted
  (``"box of an image not loaded"``).

The label file's header has commas inside two names, so a CSV parser sees 11
fields (``OriginalImage[Width``, ``Height]``, ``OriginalImagePixelSpacing[x``,
``y]``); the 2017 copy adds a trailing comma (pandas' ``Unnamed: 11``). Both are
read with explicit names; any other header, a row with a wrong field count (a
truncated copy ends with one), an unknown label, a bad age, sex or id, a split-list
line that is not an image file name, an image listed in both split files, or a
truncated or corrupt ``.csv.gz`` is a ``DataError`` naming file, line and field.
With ``check_files`` a row whose PNG is not found is skipped and counted
(``"image file missing"``); split-list entries that are not in the label file and
PNGs without a row in it (a label file with rows missing) are counted too.

Warnings (rows kept, counted): ``No Finding`` listed together with a finding (labels
kept as in the file), a ``View Position`` that is blank or not PA / AP (NIH has no
laterals), a PNG present in several image folders (the first in sorted path order is
used). A patient with images in both split lists (the official split is
patient-disjoint) is a problem for ``harness data check`` and refused by runs.
"""

from __future__ import annotations

import csv
import gzip
import os
from pathlib import Path
from typing import TextIO

import numpy as np
import pandas as pd
from PIL import Image

from harness.data.check import CheckReport
from harness.data.schema import (
    BASE_COLUMNS,
    CONTRADICTORY,
    NIH_14,
    DataError,
    DataSource,
    Records,
    contradictory,
    count,
    note_split_leaks,
)
from harness.data.tables import GZIP_ERRORS, gzip_error, utf8_error

NAME = "nih14"
INSTITUTION = "NIH-CC"
LABELS = (*NIH_14, "No Finding")
ENTRY_FILES = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017_v2020.csv.gz",
               "Data_Entry_2017.csv", "Data_Entry_2017.csv.gz")
ENTRY_COLUMNS = ("Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age",
                 "Patient Gender", "View Position", "OriginalImage[Width", "Height]",
                 "OriginalImagePixelSpacing[x", "y]")
BOX_FILE = "BBox_List_2017.csv"
BOX_COLUMNS = ("image_id", "label", "x", "y", "w", "h", "width", "height", "x0", "y0", "x1", "y1")
BOX_RENAME = {"Infiltrate": "Infiltration"}
SPLIT_FILES = {"train_val_list.txt": "train", "test_list.txt": "test"}
MAX_AGE = 100  # above this an age is a data-entry error of the 2017 CSV
VIEWS = ("PA", "AP")  # every real NIH image is one of these
VIEW_BLANK = "View Position blank"
VIEW_UNKNOWN = "View Position not PA or AP"
SEVERAL_COPIES = "PNG in several image folders (the first in sorted path order is used)"
NOT_IN_LABEL_FILE = "split-list entry not in the label file"
PNG_WITHOUT_ROW = "PNG without a row in the label file (not loaded)"


def _bad(path: Path, frame: pd.DataFrame, mask, field: str, message: str) -> DataError:
    """A DataError naming the file line of the first row where ``mask`` is true (``{value}``: its cell)."""
    i = int(np.flatnonzero(np.asarray(mask, dtype=bool))[0])
    value = repr(frame[field].iloc[i]) if field in frame.columns else ""
    return DataError(f"{path}:{frame['_line'].iloc[i]}: {field}: " + message.replace("{value}", value))


def _open_text(path: Path) -> TextIO:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def _header_fields(path: Path) -> list[str]:
    try:
        with _open_text(path) as f:
            return next(csv.reader(f), [])
    except UnicodeDecodeError as err:
        raise utf8_error(path) from err
    except GZIP_ERRORS as err:
        raise gzip_error(path, err) from err


def _read_rows(path: Path, n_fields: int) -> pd.DataFrame:
    """Rows after the header as stripped strings in columns ``c0..``, with their file line in ``_line``.

    Parsed with ``csv`` rather than pandas: pandas, given a first row longer
    than the names, silently turns the leading fields into an index. Trailing
    extra fields must be empty (trailing commas).
    """
    rows, lines = [], []
    with _open_text(path) as f:
        reader = csv.reader(f)
        try:
            next(reader, None)
            for row in reader:
                if not "".join(row).strip():
                    continue  # blank line
                if len(row) < n_fields or any(cell.strip() for cell in row[n_fields:]):
                    raise DataError(f"{path}:{reader.line_num}: row: {len(row)} fields, expected {n_fields}")
                rows.append([cell.strip() for cell in row[:n_fields]])
                lines.append(reader.line_num)
        except UnicodeDecodeError as err:
            raise utf8_error(path) from err
        except GZIP_ERRORS as err:  # the header decompressed, the cut is further in
            raise gzip_error(path, err) from err
    frame = pd.DataFrame(rows, columns=[f"c{i}" for i in range(n_fields)], dtype=str)
    frame["_line"] = lines
    return frame


def _read_entries(path: Path) -> pd.DataFrame:
    header = _header_fields(path)
    names = [h.strip() for h in header]
    while names and names[-1] == "":  # Data_Entry_2017.csv: trailing comma, pandas' "Unnamed: 11"
        names.pop()
    if tuple(names) != ENTRY_COLUMNS:
        raise DataError(f"{path}:1: header: {header} is not the NIH header {list(ENTRY_COLUMNS)}")
    frame = _read_rows(path, len(ENTRY_COLUMNS))
    frame.columns = [*ENTRY_COLUMNS, "_line"]
    return frame


def _parse_labels(path: Path, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    text = frame["Finding Labels"].str.replace(r"\s*\|\s*", "|", regex=True)
    if (text == "").any():
        raise _bad(path, frame, text == "", "Finding Labels", "empty (expected 'No Finding')")
    dummies = text.str.get_dummies(sep="|")
    unknown = [c for c in dummies.columns if c not in LABELS]
    if unknown:
        raise _bad(path, frame, dummies[unknown[0]], "Finding Labels",
                   f"unknown label {unknown[0]!r} in {{value}} (known: {', '.join(LABELS)})")
    return {name: (dummies[name].to_numpy(dtype=float) if name in dummies else np.zeros(len(frame)))
            for name in LABELS}


def _parse_age(path: Path, frame: pd.DataFrame, skipped: dict[str, int]) -> np.ndarray:
    """Years (``058Y`` / ``007M`` / ``010D`` forms too); blank -> NaN; above MAX_AGE -> NaN, counted."""
    parts = frame["Patient Age"].str.extract(r"^(\d+(?:\.\d+)?)([YMD]?)$")
    bad = parts[0].isna() & (frame["Patient Age"] != "")
    if bad.any():
        raise _bad(path, frame, bad, "Patient Age", "unexpected value {value}")
    unit = parts[1].map({"": 1.0, "Y": 1.0, "M": 1 / 12, "D": 1 / 365}).to_numpy(dtype=float)
    age = parts[0].astype(float).to_numpy() * unit
    impossible = age > MAX_AGE
    if impossible.any():
        skipped["impossible age"] = int(impossible.sum())
    return np.where(impossible, np.nan, age)


def _parse_entries(path: Path, skipped: dict[str, int], warnings: dict[str, int]) -> pd.DataFrame:
    frame = _read_entries(path)
    ids, patient = frame["Image Index"], frame["Patient ID"]
    sex = frame["Patient Gender"].str.upper()
    checks = (
        (~ids.str.fullmatch(r"[^/\\]+\.png"), "Image Index", "{value}: expected NNNNNNNN_NNN.png"),
        (ids.duplicated(), "Image Index", "{value} listed twice"),
        (~patient.str.fullmatch(r"\d+"), "Patient ID", "unexpected value {value}"),
        (~sex.isin(("M", "F", "")), "Patient Gender", "unexpected value {value} (expected M or F)"),
    )
    for mask, field, message in checks:
        if mask.any():
            raise _bad(path, frame, mask, field, message)
    view = frame["View Position"].str.upper().replace({"L": "LATERAL", "LAT": "LATERAL"})
    count(warnings, VIEW_BLANK, int((view == "").sum()))
    count(warnings, VIEW_UNKNOWN, int((~view.isin([*VIEWS, ""])).sum()))
    return pd.DataFrame({
        "image_id": ids, "patient_id": patient.astype(int).astype(str), "study_id": ids, "view": view,
        "age": _parse_age(path, frame, skipped), "sex": sex, **_parse_labels(path, frame),
    })


def _splits(folder: Path, image_ids: pd.Series, notes: list[str], skipped: dict[str, int],
            split_files: dict[str, str]) -> np.ndarray:
    """``train`` / ``test`` from the official lists, ``""`` elsewhere; an image in both is an error."""
    split_of: dict[str, str] = {}
    source: dict[str, str] = {}
    for name, split in SPLIT_FILES.items():
        path = folder / name
        if not path.is_file():
            notes.append(f"{name} not found: its images get no official split")
            continue
        split_files[split] = str(path)
        try:
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as err:
            raise utf8_error(path) from err
        for number, line in enumerate(text.splitlines(), start=1):
            image = line.strip()
            if not image:
                continue
            if not image.lower().endswith(".png") or "/" in image or "," in image:  # a cut last line too
                raise DataError(f"{path}:{number}: image: {image[:40]!r} is not an image file name "
                                "(NNNNNNNN_NNN.png); truncated or damaged copy?")
            if image in split_of and split_of[image] != split:
                raise DataError(f"{path}: {image} is also in {source[image]}: "
                                "the official split is not disjoint")
            split_of[image], source[image] = split, name
    if split_of:
        known = set(image_ids)
        count(skipped, NOT_IN_LABEL_FILE, sum(1 for i in split_of if i not in known))
    splits = image_ids.map(split_of).fillna("").to_numpy(dtype=object)
    if split_of and (splits == "").any():
        notes.append(f"{int((splits == '').sum())} image(s) are in neither split list (split '')")
    return splits


def index_pngs(folder: Path, copies: dict[str, int] | None = None) -> dict[str, str]:
    """File name -> path of every PNG below ``folder`` (flat ``images/`` or ``images_NNN/images/``).

    Folders are walked in sorted order, so with several copies of one name (an archive extracted
    twice, ``images/`` next to ``images_001/images/``) the first in sorted path order is used;
    ``copies`` (when given) receives name -> number of files for such names.
    """
    index: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in sorted(filenames):
            if name.lower().endswith(".png"):
                if name in index:
                    if copies is not None:
                        copies[name] = copies.get(name, 1) + 1
                    continue
                index[name] = os.path.join(dirpath, name)
    return index


def _png_size(path: str) -> tuple[float, float]:
    try:
        with Image.open(path) as im:  # reads the header only
            return float(im.width), float(im.height)
    except Exception:  # missing, empty or not an image: the size is unknown
        return np.nan, np.nan


def read_boxes(path: Path, images: pd.DataFrame, skipped: dict[str, int], notes: list[str]) -> pd.DataFrame:
    """``BBox_List_2017.csv`` -> boxes in pixels and normalised by each image's real size."""
    if not path.is_file():
        notes.append(f"{BOX_FILE} not found: no boxes")
        return pd.DataFrame({c: pd.Series(dtype=object if c in ("image_id", "label") else float)
                             for c in BOX_COLUMNS})
    header = _header_fields(path)
    if [h.strip() for h in header[:2]] != ["Image Index", "Finding Label"]:
        raise DataError(f"{path}:1: header: {header} is not the NIH box header")
    raw = _read_rows(path, 6)
    raw.columns = ["Image Index", "Finding Label", "x", "y", "w", "h", "_line"]
    label = raw["Finding Label"].replace(BOX_RENAME)
    if not label.isin(NIH_14).all():
        raise _bad(path, raw, ~label.isin(NIH_14), "Finding Label", "unknown label {value}")
    xywh = raw[["x", "y", "w", "h"]].apply(pd.to_numeric, errors="coerce")
    bad = xywh.isna().any(axis=1) | (xywh["w"] <= 0) | (xywh["h"] <= 0)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise _bad(path, raw, bad, "Bbox [x,y,w,h]",
                   f"expected 4 numbers with w, h > 0, got {list(raw.iloc[i, 2:6])}")
    known = raw["Image Index"].isin(images.index).to_numpy()
    if (~known).any():
        skipped["box of an image not loaded"] = int((~known).sum())
    boxes = pd.DataFrame({"image_id": raw["Image Index"], "label": label, **xywh})[known]
    boxes = boxes.reset_index(drop=True)
    sizes = {i: _png_size(images.loc[i, "path"]) for i in boxes["image_id"].unique()}
    boxes["width"] = boxes["image_id"].map(lambda i: sizes[i][0]).astype(float)
    boxes["height"] = boxes["image_id"].map(lambda i: sizes[i][1]).astype(float)
    n_unreadable = int(boxes["width"].isna().sum())
    if n_unreadable:
        notes.append(f"{n_unreadable} box(es) on images whose size cannot be read: normalised box is NaN")
    width, height = boxes["width"], boxes["height"]
    corners = {"x0": boxes["x"] / width, "y0": boxes["y"] / height,
               "x1": (boxes["x"] + boxes["w"]) / width, "y1": (boxes["y"] + boxes["h"]) / height}
    outside = sum(((v < 0) | (v > 1)).to_numpy() for v in corners.values()).astype(bool)
    if outside.any():
        notes.append(f"{int(outside.sum())} box(es) extend past the image border: clipped to [0, 1]")
    for name, values in corners.items():
        boxes[name] = values.clip(0.0, 1.0)
    return boxes[list(BOX_COLUMNS)]


def find_entry_file(folder: Path) -> tuple[Path | None, list[str]]:
    found = [folder / n for n in ENTRY_FILES if (folder / n).is_file()]
    notes = [f"several label files found; reading {found[0].name}"] if len(found) > 1 else []
    return (found[0] if found else None), notes


def load(root: Path, *, data_source: DataSource = "real", check_files: bool = True) -> Records:
    """Read ``root/nih14`` into Records (see the module docstring for every choice)."""
    root = Path(root).expanduser().resolve()
    folder = root / "nih14"
    entry, notes = find_entry_file(folder)
    if entry is None:
        raise DataError(f"{folder}: no {' or '.join(ENTRY_FILES[::2])}")
    skipped: dict[str, int] = {}
    warnings: dict[str, int] = {}
    split_files: dict[str, str] = {}
    frame = _parse_entries(entry, skipped, warnings)
    frame["split"] = _splits(folder, frame["image_id"], notes, skipped, split_files)
    copies: dict[str, int] = {}
    pngs = index_pngs(folder, copies)
    count(skipped, PNG_WITHOUT_ROW, len(pngs.keys() - set(frame["image_id"])))
    found = frame["image_id"].map(pngs)
    if check_files:
        missing = found.isna().to_numpy()
        if missing.all() and len(frame):
            raise DataError(f"{folder}: none of the {len(frame)} images of {entry.name} is there "
                            f"(expected images/*.png or images_NNN/images/*.png)")
        if missing.any():
            skipped["image file missing"] = int(missing.sum())
        frame, found = frame[~missing], found[~missing]
    frame["path"] = found.fillna(frame["image_id"].map(lambda i: str(folder / "images" / i)))
    frame = frame.assign(dataset=NAME, institution=INSTITUTION, indication="", findings="", impression="")
    frame = frame[[*BASE_COLUMNS, *LABELS]].reset_index(drop=True)
    boxes = read_boxes(folder / BOX_FILE, frame.set_index("image_id"), skipped, notes)
    count(warnings, CONTRADICTORY, int(contradictory(frame, LABELS).sum()))
    count(warnings, SEVERAL_COPIES, int(frame["image_id"].isin(copies.keys()).sum()))
    records = Records(NAME, frame, LABELS, root, data_source, skipped=skipped,
                      extras={"boxes": boxes, "label_file": entry.name, "notes": notes}, warnings=warnings,
                      split_files=split_files, unknown_views=tuple(sorted(set(frame["view"]) - {*VIEWS, ""})))
    records.validate()
    note_split_leaks(records)
    return records


def _report(root: Path, present: bool, loaded: Records | DataError | None) -> CheckReport:
    notes = ((f"label file {loaded.extras['label_file']}", f"{len(loaded.extras['boxes'])} bounding boxes")
             if isinstance(loaded, Records) else ())
    return CheckReport.from_load(NAME, root, present, loaded, notes)


def check(root: Path) -> CheckReport:
    """Load ``root/nih14`` and summarise it (aggregate counts only)."""
    root = Path(root).expanduser().resolve()
    if find_entry_file(root / "nih14")[0] is None:
        rep = _report(root, False, None)
        rep.notes.append(f"expected {root / 'nih14'}/{ENTRY_FILES[0]} (or {ENTRY_FILES[2]})")
        return rep
    try:
        return _report(root, True, load(root))
    except DataError as e:
        return _report(root, True, e)


class Nih14Adapter:
    """The ``nih14`` entry of ``harness.catalog.DATASETS``."""

    name = NAME
    label_names = LABELS
    views = ("PA", "AP", "LATERAL")  # View Position (PA / AP; L or LAT in some copies)
    splits = ("train", "test")  # train_val_list.txt, test_list.txt: no official validation split

    def load(self, root: Path, *, data_source: DataSource = "real", check_files: bool = True) -> Records:
        return load(root, data_source=data_source, check_files=check_files)

    def check(self, root: Path) -> CheckReport:
        return check(root)


ADAPTER = Nih14Adapter()
