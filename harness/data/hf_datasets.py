"""A CXR collection you hold in Hugging Face format on disk: the datasets ``hf/<name>``.

Layout read (``<data root>/hf/<name>/``, or the folder ``HARNESS_ROOT_HF`` points to, holding
``<name>/``; spec ``docs/datasets.md``, "Hugging Face-format collections")::

    hf/<name>/harness_columns.yaml     # the column map (harness.data.hf_columns): image, patient, labels, ...
    hf/<name>/dataset_dict.json        # datasets' save_to_disk output: a DatasetDict (one folder per split) ...
    hf/<name>/train/state.json  train/dataset_info.json  train/data-00000-of-00001.arrow  ...
    hf/<name>/data/train-00000-of-00001.parquet ...   # ... or parquet files (harness.data.hf_files)

A task names one as ``dataset: hf/<name>``; the name is a folder name (letters, digits, ``.``,
``_``, ``-``). Its labels, views and splits are the collection's own, known only once its column
map is read, so ``harness validate`` does not check them against the task; a run refuses a task
label the column map does not declare, in one line naming the task file.

Records (one row per image, ``harness.data.schema``): ``image_id`` from the ``image_id`` column
(or ``<data file>#<row>``), ``patient_id`` and ``study_id`` as strings (a blank one is an error
naming file, row and column), ``view`` upper-cased after ``view_values`` (``L`` / ``LAT`` ->
``LATERAL``), ``split`` from the ``split`` column (mapped by ``split_values`` on top of train,
validation / valid / val / dev -> val, test) or from the layout, ``sex`` ``M`` / ``F`` / ``""``,
``age`` in years, the report sections, and one label column per label of the map as 1 / 0 / -1 /
NaN (``label_values``; ``label_list``: 1 listed, 0 not).

Counted skips (rows removed): a row without an image (``hf_images.NO_IMAGE``), a path that is not
there (``image file missing``), an age outside 0-120 (set to NaN, the row kept). Counted
warnings (rows kept): a blank view, a view that is not PA / AP / LATERAL / LL, ``No Finding``
together with a finding. A patient in more than one split is a problem (``harness data check``
exits 2) and refused by runs unless the task says ``split: {on_leak: drop}``. Everything else
(a missing column, a label value outside the convention, an unknown split value, a duplicated
image id, a damaged file) is one ``DataError`` line naming the file, the row and the column.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.data.check import CheckReport
from harness.data.hf_columns import SPLIT_VALUES, ColumnMap, find_column_map, read_column_map, value_key
from harness.data.hf_files import DataFile, check_columns, class_names, find_data_files, read_columns
from harness.data.hf_images import FILE_MISSING, NO_IMAGE, image_paths
from harness.data.schema import (
    BASE_COLUMNS,
    CONTRADICTORY,
    DataError,
    DataSource,
    Records,
    contradictory,
    count,
    note_split_leaks,
)

PREFIX = "hf/"
SOURCE = "hf"  # the data root's folder of collections (harness.data.roots.SOURCES)
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
KNOWN_VIEWS = ("PA", "AP", "LATERAL", "LL")
VIEW_ALIASES = {"L": "LATERAL", "LAT": "LATERAL", "LATERAL": "LATERAL"}
SEX = {"m": "M", "male": "M", "f": "F", "female": "F", "": "", "u": "", "unknown": "", "o": "", "other": ""}
MAX_AGE = 120
VIEW_BLANK = "view blank"
VIEW_UNKNOWN = "view not PA, AP, LATERAL or LL"
IMPOSSIBLE_AGE = f"impossible age (outside 0-{MAX_AGE}; set to NaN)"


def is_collection(dataset: str) -> bool:
    """Whether ``dataset`` names a collection (``hf/<name>``), valid or not."""
    return str(dataset).startswith(PREFIX)


def collection_name(dataset: str) -> str:
    """``hf/<name>`` -> ``<name>``.

    Raises:
        DataError: the name is not one folder name.
    """
    name = str(dataset)[len(PREFIX):]
    if not NAME.fullmatch(name):
        raise DataError(f"dataset {dataset!r}: a collection is named hf/<folder> with a folder name of letters, "
                        "digits, '.', '_' and '-'")
    return name


def _where(data: DataFile, row: int, column: str) -> str:
    return f"{data.path}: row {row}: {column}"


def _first_bad(part: pd.DataFrame, mask: np.ndarray, column: str, message: str) -> DataError:
    """The error for the first row of ``part`` where ``mask`` holds (its file, its row, the column)."""
    i = int(np.flatnonzero(mask)[0])
    data, row = part["_file"].iloc[i], int(part["_row"].iloc[i])
    value = part[column].iloc[i] if column in part else None
    return DataError(f"{_where(data, row, column)}: " + message.replace("{value}", repr(value)))


def _ids(part: pd.DataFrame, column: str | None, default: pd.Series, what: str) -> pd.Series:
    """An id column as stripped strings; a blank one is an error naming its row."""
    if column is None:
        return default
    values = part[column]
    text = values.map(lambda v: "" if value_key(v) is None else str(value_key(v)))
    if (text == "").any():
        raise _first_bad(part, (text == "").to_numpy(), column, f"blank {what} (every row needs one)")
    return text


def _labels(part: pd.DataFrame, cmap: ColumnMap, label_names: tuple[str, ...]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    if cmap.label_list is not None:
        return _listed_labels(part, cmap, label_names)
    convention = ", ".join(f"{k!r}->{v:g}" for k, v in cmap.label_values.items())
    for name, column in cmap.labels.items():
        keys = [value_key(v) for v in part[column].tolist()]  # a list: pandas would turn None into NaN
        known = np.array([k in cmap.label_values for k in keys], dtype=bool)
        if not known.all():
            raise _first_bad(part, ~known, column, f"label {name!r}: value {{value}} is not in label_values "
                             f"({convention}) of {cmap.path}")
        out[name] = np.array([cmap.label_values[k] for k in keys], dtype=float)
    return out


def _listed_labels(part: pd.DataFrame, cmap: ColumnMap, label_names: tuple[str, ...]) -> dict[str, np.ndarray]:
    spec = cmap.label_list
    assert spec is not None
    index = {n: j for j, n in enumerate(label_names)}
    matrix = np.zeros((len(part), len(label_names)))
    per_file: dict[Path, tuple[str, ...]] = {}  # each file's ClassLabel names, looked up once
    for i, (cell, data) in enumerate(zip(part[spec.column], part["_file"])):
        if data.path not in per_file:
            per_file[data.path] = spec.names or class_names(data, spec.column)
        names = per_file[data.path]
        if cell is None or (isinstance(cell, float) and math.isnan(cell)):
            items: list[Any] = []
        elif isinstance(cell, str):
            items = [s.strip() for s in cell.split(spec.separator) if s.strip()]
        elif hasattr(cell, "__len__"):
            items = list(cell)
        else:
            items = [cell]
        for item in items:
            key = value_key(item)
            if isinstance(key, int) and not isinstance(item, str) and 0 <= key < len(names):
                key = names[key]  # a ClassLabel index
            if key not in index:
                row = int(part["_row"].iloc[i])
                raise DataError(f"{_where(data, row, spec.column)}: label {item!r} is not one of the "
                                f"collection's labels {list(label_names)} (label_list of {cmap.path})")
            matrix[i, index[key]] = 1.0
    return {n: matrix[:, j] for n, j in index.items()}


def _label_names(cmap: ColumnMap, files: list[DataFile]) -> tuple[str, ...]:
    if cmap.label_list is None:
        return tuple(cmap.labels)
    if cmap.label_list.names:
        return cmap.label_list.names
    names = next((class_names(f, cmap.label_list.column) for f in files if class_names(f, cmap.label_list.column)),
                 ())
    if not names:
        raise DataError(f"{cmap.path}: label_list.names: the column {cmap.label_list.column!r} carries no ClassLabel "
                        "names in the collection's features; list the label names here")
    return names


def _splits(part: pd.DataFrame, cmap: ColumnMap) -> pd.Series:
    mapping = {**SPLIT_VALUES, **{k.lower(): v for k, v in cmap.split_values.items()}, "": ""}
    if cmap.split is not None:
        raw = part[cmap.split].map(lambda v: "" if value_key(v) is None else str(value_key(v)).lower())
        column = cmap.split
    else:
        raw, column = part["_layout_split"].str.lower(), "split"
    known = raw.isin(list(mapping)).to_numpy()
    if not known.all():
        i = int(np.flatnonzero(~known)[0])
        word = raw.iloc[i]
        if cmap.split is None:
            raise DataError(f"{part['_file'].iloc[i].path}: split {word!r} (from the layout) is not train, validation "
                            f"or test; map it in split_values of {cmap.path}")
        raise _first_bad(part, ~known, column, "value {value} is not a split (train, validation, test); map it in "
                         f"split_values of {cmap.path}")
    return raw.map(mapping)


def _views(part: pd.DataFrame, cmap: ColumnMap) -> pd.Series:
    if cmap.view is None:
        return pd.Series([""] * len(part), index=part.index, dtype=object)
    mapped = part[cmap.view].map(lambda v: "" if value_key(v) is None else str(value_key(v)))
    mapped = mapped.map(lambda v: cmap.view_values.get(v, v)).str.upper()
    return mapped.map(lambda v: VIEW_ALIASES.get(v, v))


def _sex(part: pd.DataFrame, cmap: ColumnMap) -> pd.Series:
    if cmap.sex is None:
        return pd.Series([""] * len(part), index=part.index, dtype=object)
    text = part[cmap.sex].map(lambda v: "" if value_key(v) is None else str(value_key(v)).lower())
    bad = ~text.isin(list(SEX)).to_numpy()
    if bad.any():
        raise _first_bad(part, bad, cmap.sex, "value {value} is not a sex (M, F, male, female or blank)")
    return text.map(SEX)


def _age(part: pd.DataFrame, cmap: ColumnMap, skipped: dict[str, int]) -> np.ndarray:
    if cmap.age is None:
        return np.full(len(part), np.nan)
    values = pd.to_numeric(part[cmap.age].map(value_key), errors="coerce").to_numpy(dtype=float)
    given = part[cmap.age].map(lambda v: value_key(v) not in (None, "")).to_numpy(dtype=bool)
    if (np.isnan(values) & given).any():
        raise _first_bad(part, np.isnan(values) & given, cmap.age, "value {value} is not a number of years")
    impossible = (values < 0) | (values > MAX_AGE)
    count(skipped, IMPOSSIBLE_AGE, int(impossible.sum()))
    return np.where(impossible, np.nan, values)


def _split_files(frame: pd.DataFrame, files: list[DataFile], cmap: ColumnMap, folder: Path,
                 layout: str) -> dict[str, str]:
    """Split -> what assigns it (split-leak messages name it): the split column, or the layout's folder / file."""
    used = sorted(set(frame["split"]) - {""})
    if cmap.split is not None:
        return {s: f"{folder} (column {cmap.split!r})" for s in used}
    mapping = {**SPLIT_VALUES, **{k.lower(): v for k, v in cmap.split_values.items()}}
    out: dict[str, str] = {}
    for f in files:
        split = mapping.get(f.split.lower(), "")
        if split in used:
            out.setdefault(split, str(f.path.parent if layout == "save_to_disk" else f.path))
    return out


def _read_part(data: DataFile, cmap: ColumnMap, folder: Path, check_files: bool) -> pd.DataFrame:
    """One data file's rows: the map's columns (no image bytes), its row positions and image paths."""
    check_columns(data, cmap)
    columns = [c for c in cmap.columns() if c != cmap.image]
    table = read_columns(data, columns)
    part = table.to_pandas(types_mapper=None) if columns else pd.DataFrame(index=range(table.num_rows))
    part = part.astype(object).where(part.notna(), None) if len(part.columns) else part
    paths, reasons = image_paths(data, cmap.image, table.num_rows, folder, str(cmap.path), check_files)
    part["_file"] = [data] * len(part)
    part["_row"] = np.arange(len(part))
    part["_layout_split"] = data.split
    part["_path"] = paths
    part["_reason"] = reasons
    return part


def load_collection(root: Path, dataset: str, *, data_source: DataSource = "real",
                    check_files: bool = True) -> Records:
    """Read ``<root>/hf/<name>`` into Records (see the module docstring for every choice).

    Args:
        root: the data root.
        dataset: ``hf/<name>``.
        data_source: ``real`` or ``synthetic`` (the root's marker decides; see ``harness.data.roots``).
        check_files: check that path-valued images exist (missing ones are skipped, counted).

    Raises:
        DataError: one line naming the file, row and column of the first problem.
    """
    root = Path(root).expanduser().resolve()
    folder = root / SOURCE / collection_name(dataset)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such collection folder (expected <data root>/hf/<name>/ with "
                        "harness_columns.yaml and the data)")
    found = find_column_map(folder)
    if found is None:
        raise DataError(f"{folder}: no harness_columns.yaml: write the column map (image, patient_id, labels, ...; "
                        "see docs/datasets.md) next to the data")
    cmap = read_column_map(found)
    files, layout = find_data_files(folder)
    label_names = _label_names(cmap, files)
    skipped: dict[str, int] = {}
    warnings: dict[str, int] = {}
    part = pd.concat([_read_part(f, cmap, folder, check_files) for f in files], ignore_index=True)
    if part.empty:
        raise DataError(f"{folder}: the collection has no rows")
    default_ids = pd.Series([f"{f.name}#{r}" for f, r in zip(part["_file"], part["_row"])], index=part.index)
    image_id = _ids(part, cmap.image_id, default_ids, "image id")
    duplicated = image_id.duplicated(keep=False).to_numpy()
    if duplicated.any():
        raise _first_bad(part, duplicated & image_id.duplicated().to_numpy(), cmap.image_id or "image_id",
                         f"image id {{value}} appears in {int(duplicated.sum())} rows (ids must be unique)")
    frame = pd.DataFrame({
        "dataset": dataset, "image_id": image_id, "patient_id": _ids(part, cmap.patient_id, image_id, "patient id"),
        "study_id": _ids(part, cmap.study_id, image_id, "study id"), "view": _views(part, cmap),
        "split": _splits(part, cmap), "path": part["_path"], "institution": cmap.institution or dataset,
        **{s: (part[cmap.report[s]].map(lambda v: "" if v is None else str(v).strip()) if s in cmap.report else "")
           for s in ("indication", "findings", "impression")},
        "age": _age(part, cmap, skipped), "sex": _sex(part, cmap),
        **_labels(part, cmap, label_names),
    })
    for reason in (NO_IMAGE, FILE_MISSING):
        count(skipped, reason, int((part["_reason"] == reason).sum()))
    keep = (part["_reason"] == "").to_numpy()
    if not keep.any():
        raise DataError(f"{folder}: none of the collection's {len(part)} rows has an image "
                        f"({', '.join(f'{k}: {v}' for k, v in skipped.items())})")
    frame = frame[keep][[*BASE_COLUMNS, *label_names]].reset_index(drop=True)
    count(warnings, VIEW_BLANK, int((frame["view"] == "").sum()) if cmap.view is not None else 0)
    count(warnings, VIEW_UNKNOWN, int((~frame["view"].isin([*KNOWN_VIEWS, ""])).sum()))
    count(warnings, CONTRADICTORY, int(contradictory(frame, label_names).sum()))
    split_files = _split_files(frame, files, cmap, folder, layout)
    notes = [f"layout {layout}: {len(files)} data file(s); column map {cmap.path.name}"]
    if cmap.view is None:
        notes.append("no view column: every view unknown (a task with views selects nothing)")
    records = Records(dataset, frame, label_names, root, data_source, skipped=skipped, warnings=warnings,
                      extras={"notes": notes, "column_map": str(cmap.path), "layout": layout},
                      split_files=split_files,
                      unknown_views=tuple(sorted(set(frame["view"]) - {*KNOWN_VIEWS, ""})))
    records.validate()
    note_split_leaks(records)
    return records


class CollectionAdapter:
    """The adapter of one collection ``hf/<name>`` (``harness.catalog.DATASETS`` builds it on demand).

    ``label_names``, ``views`` and ``splits`` are None: they are the collection's own, read from its
    column map at load time, so task validation (which reads no data) does not check them.
    """

    label_names = None
    views = None
    splits = None
    needs_data_root = True

    def __init__(self, dataset: str) -> None:
        collection_name(dataset)
        self.name = dataset

    def load(self, root: Path, *, data_source: DataSource = "real", check_files: bool = True) -> Records:
        return load_collection(root, self.name, data_source=data_source, check_files=check_files)

    def check(self, root: Path) -> CheckReport:
        """Load the collection and summarise it (aggregate counts only)."""
        root = Path(root).expanduser().resolve()
        folder = root / SOURCE / collection_name(self.name)
        if not folder.is_dir():
            rep = CheckReport.from_load(self.name, root, False, None)
            rep.notes.append(f"expected {folder}/ with harness_columns.yaml and the data")
            return rep
        try:
            loaded: Records | DataError = self.load(root)
        except DataError as exc:
            loaded = exc
        return CheckReport.from_load(self.name, root, True, loaded)


def adapter(dataset: str) -> CollectionAdapter:
    """The adapter of ``hf/<name>``.

    Raises:
        DataError: the name is not ``hf/`` and one folder name.
    """
    return CollectionAdapter(dataset)
