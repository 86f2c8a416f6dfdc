"""The column map of a Hugging Face-format collection: which column is the image, the patient, each label.

A collection folder (``<data root>/hf/<name>/``, ``harness.data.hf_datasets``) holds one file
``harness_columns.yaml`` (or ``harness_columns.json``) next to its data; it is read strictly:
unknown or repeated keys, a missing required key and a value of the wrong type are a one-line
``DataError`` naming the file and the key. Every key::

    image: image                 # required: an HF Image column ({bytes, path}), raw bytes, or a file path
    patient_id: patient          # required: splits and bootstrap resampling go by patient
    image_id: dicom_id           # default: the data file and the row (``train/data-00000-of-00001.arrow#12``)
    study_id: study              # default: the image id (every image its own study)
    view: ViewPosition           # default: no view column (every view unknown, "")
    view_values: {postero-anterior: PA}   # file value -> harness view; values not listed are kept as they are
    split: split                 # default: the layout's own split (DatasetDict folders, train-*.parquet, ...)
    split_values: {holdout: test}         # added to the defaults: train, validation/valid/val/dev -> val, test
    sex: sex                     # M / F (male / female / m / f read too); default none
    age: age                     # years; default none
    report: {indication: indication, findings: findings, impression: impression}   # any of the three
    institution: my-hospital     # a fixed site name (default: hf/<name>)
    labels: {Atelectasis: atelectasis, Edema: edema}   # label -> column; a list when the columns are the names
    label_values: {positive: [1], negative: [0], uncertain: [-1], blank: [null]}   # the default convention
    label_list: {column: labels, names: [...], separator: "|"}   # instead of labels: the positives, listed

``labels`` maps label names to columns whose values follow ``label_values`` (any value not
listed there is an error naming file, row and column); ``label_list`` names one column holding
the positive labels of each row: a list of names or of ``ClassLabel`` indices (their names come
from ``names`` or from the collection's own features), a single index, or a string split on
``separator``; a label not listed is 0. A collection without either has no labels (retrieval,
regeneration).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.data.schema import DataError

COLUMN_FILES = ("harness_columns.yaml", "harness_columns.yml", "harness_columns.json")
SPLIT_VALUES = {"train": "train", "training": "train", "validation": "val", "valid": "val", "val": "val",
                "dev": "val", "test": "test", "testing": "test"}
DEFAULT_LABEL_VALUES = {"positive": [1], "negative": [0], "uncertain": [-1], "blank": [None]}
LABEL_CODES = {"positive": 1.0, "negative": 0.0, "uncertain": -1.0, "blank": math.nan}
REPORT_SECTIONS = ("indication", "findings", "impression")
_COLUMN_KEYS = ("image", "patient_id", "image_id", "study_id", "view", "split", "sex", "age")
_KEYS = (*_COLUMN_KEYS, "view_values", "split_values", "report", "institution", "labels", "label_values",
         "label_list")
_REQUIRED = ("image", "patient_id")


def value_key(value: Any) -> Any:
    """The key a file value is looked up by: numbers by value (``1`` = ``1.0`` = ``True``), text stripped,
    null and NaN as ``None``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bool):
        return int(value)
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalars
        return value_key(value.item())
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        return value.strip()
    return value


@dataclass(frozen=True)
class LabelList:
    """``label_list``: one column listing each row's positive labels."""

    column: str
    names: tuple[str, ...] = ()  # empty: the collection's ClassLabel names
    separator: str = "|"


@dataclass(frozen=True)
class ColumnMap:
    """A collection's column map (see the module docstring); ``path`` is the file it was read from."""

    path: Path
    image: str
    patient_id: str
    image_id: str | None = None
    study_id: str | None = None
    view: str | None = None
    split: str | None = None
    sex: str | None = None
    age: str | None = None
    view_values: dict[str, str] = field(default_factory=dict)
    split_values: dict[str, str] = field(default_factory=dict)
    report: dict[str, str] = field(default_factory=dict)
    institution: str | None = None
    labels: dict[str, str] = field(default_factory=dict)  # label name -> column, in label order
    label_values: dict[Any, float] = field(default_factory=dict)  # value_key(file value) -> 1 / 0 / -1 / NaN
    label_list: LabelList | None = None

    def columns(self) -> list[str]:
        """Every data column the map names (the image column first)."""
        named = [getattr(self, k) for k in _COLUMN_KEYS] + list(self.report.values()) + list(self.labels.values())
        if self.label_list is not None:
            named.append(self.label_list.column)
        return list(dict.fromkeys(c for c in named if c))

    def key_of(self, column: str) -> str:
        """The map key that names ``column`` (for messages)."""
        for key in _COLUMN_KEYS:
            if getattr(self, key) == column:
                return key
        for section, col in self.report.items():
            if col == column:
                return f"report.{section}"
        for label, col in self.labels.items():
            if col == column:
                return f"labels.{label}"
        return "label_list.column"


def find_column_map(folder: Path) -> Path | None:
    """The column map file of a collection folder, or None."""
    return next((folder / name for name in COLUMN_FILES if (folder / name).is_file()), None)


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte offset {exc.start}); save the column map as UTF-8") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read the column map: {exc.strerror or exc}") from None


def _parse(path: Path) -> Any:
    from harness.tasks.loading import _repeated_key, _yaml_problem  # the task files' strict YAML rules

    text = _text(path)
    if path.suffix == ".json":
        try:
            return json.loads(text)
        except ValueError as exc:
            raise DataError(f"{path}: not valid JSON: {exc}") from None
    try:
        raw = yaml.safe_load(text)
        repeated = _repeated_key(text)
    except yaml.YAMLError as exc:
        raise DataError(f"{path}: {_yaml_problem(exc)}") from None
    if repeated:
        raise DataError(f"{path}: {repeated}")
    return raw


def _name(raw: dict[str, Any], key: str, path: Path) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{path}: {key}: expected a column name, got {value!r}")
    return value


def _str_map(raw: dict[str, Any], key: str, path: Path, allowed: tuple[str, ...] | None = None) -> dict[str, str]:
    value = raw.get(key) or {}
    if not isinstance(value, dict):
        raise DataError(f"{path}: {key}: expected a mapping, got {type(value).__name__}")
    out: dict[str, str] = {}
    for k, v in value.items():
        if not isinstance(v, str) or (allowed is not None and v not in allowed):
            what = f"one of {list(allowed)}" if allowed is not None else "a string"
            raise DataError(f"{path}: {key}.{k}: expected {what}, got {v!r}")
        out[str(k).strip()] = v
    return out


def _labels(raw: dict[str, Any], path: Path) -> dict[str, str]:
    value = raw.get("labels")
    if value is None:
        return {}
    if isinstance(value, list):
        value = {v: v for v in value}
    if not isinstance(value, dict) or not value:
        raise DataError(f"{path}: labels: expected a mapping of label -> column or a list of columns, got {value!r}")
    for name, column in value.items():
        if not isinstance(name, str) or not isinstance(column, str) or not column.strip():
            raise DataError(f"{path}: labels.{name}: expected a column name, got {column!r}")
    if len(set(value.values())) < len(value):
        raise DataError(f"{path}: labels: one column is named for two labels")
    return dict(value)


def _label_values(raw: dict[str, Any], path: Path) -> dict[Any, float]:
    given = raw.get("label_values")
    if given is None:
        given = DEFAULT_LABEL_VALUES
    if not isinstance(given, dict):
        raise DataError(f"{path}: label_values: expected a mapping of positive/negative/uncertain/blank to values")
    unknown = sorted(set(given) - set(LABEL_CODES))
    if unknown:
        from harness.registry import did_you_mean

        raise DataError(f"{path}: label_values: unknown key(s) {unknown}{did_you_mean(str(unknown[0]), LABEL_CODES)}"
                        f"; keys: {list(LABEL_CODES)}")
    out: dict[Any, float] = {}
    for kind, values in given.items():
        for value in values if isinstance(values, list) else [values]:
            key, code = value_key(value), LABEL_CODES[kind]
            if key in out and repr(out[key]) != repr(code):  # repr: NaN equals NaN
                raise DataError(f"{path}: label_values.{kind}: {value!r} is listed for two meanings")
            out[key] = code
    return out


def _label_list(raw: dict[str, Any], path: Path) -> LabelList | None:
    value = raw.get("label_list")
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("column"), str):
        raise DataError(f"{path}: label_list: expected a mapping with 'column' (and optional 'names', 'separator')")
    unknown = sorted(set(value) - {"column", "names", "separator"})
    if unknown:
        raise DataError(f"{path}: label_list: unknown key(s) {unknown}; keys: column, names, separator")
    names = value.get("names") or []
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names) or len(set(names)) < len(names):
        raise DataError(f"{path}: label_list.names: expected a list of distinct label names, got {names!r}")
    separator = value.get("separator", "|")
    if not isinstance(separator, str) or not separator:
        raise DataError(f"{path}: label_list.separator: expected a non-empty string, got {separator!r}")
    return LabelList(value["column"], tuple(names), separator)


def read_column_map(path: Path) -> ColumnMap:
    """Read and check one column map file (see the module docstring).

    Args:
        path: ``harness_columns.yaml`` (or ``.yml`` / ``.json``).

    Returns:
        The map; label order is the file's.

    Raises:
        DataError: ``"<file>: <key>: <what>"`` for the first problem.
    """
    from harness.registry import did_you_mean

    raw = _parse(path)
    if not isinstance(raw, dict):
        raise DataError(f"{path}: expected a mapping of keys ({', '.join(_REQUIRED)}, ...), got "
                        f"{'an empty file' if raw is None else type(raw).__name__}")
    unknown = sorted(str(k) for k in set(raw) - set(_KEYS))
    if unknown:
        raise DataError(f"{path}: unknown key(s) {unknown}{did_you_mean(unknown[0], _KEYS)}; keys: {list(_KEYS)}")
    for key in _REQUIRED:
        if raw.get(key) is None:
            raise DataError(f"{path}: missing required key {key!r} (the {key.replace('_', ' ')} column)")
    if raw.get("labels") is not None and raw.get("label_list") is not None:
        raise DataError(f"{path}: labels, label_list: give one of them (label columns, or one column listing them)")
    institution = raw.get("institution")
    if institution is not None and not isinstance(institution, str):
        raise DataError(f"{path}: institution: expected a string, got {institution!r}")
    report = _str_map(raw, "report", path)
    bad = sorted(set(report) - set(REPORT_SECTIONS))
    if bad:
        raise DataError(f"{path}: report: unknown section(s) {bad}; sections: {list(REPORT_SECTIONS)}")
    split_values = _str_map(raw, "split_values", path, allowed=("train", "val", "test", ""))
    columns = {key: _name(raw, key, path) for key in _COLUMN_KEYS}
    return ColumnMap(path=path, **columns, view_values=_str_map(raw, "view_values", path),  # type: ignore[arg-type]
                     split_values=split_values, report=report, institution=institution, labels=_labels(raw, path),
                     label_values=_label_values(raw, path), label_list=_label_list(raw, path))
