"""The data files of a Hugging Face-format collection and their columns, read with pyarrow (no ``datasets``).

Two layouts, both as the ``datasets`` library writes them:

- ``save_to_disk``: a ``Dataset`` folder (``state.json`` naming its ``data-NNNNN-of-NNNNN.arrow``
  files, Arrow IPC streams, and ``dataset_info.json`` with the features), or a ``DatasetDict``
  folder (``dataset_dict.json`` listing its splits, one such folder per split); the split of a
  row is its folder's (``validation`` -> ``val``);
- parquet files anywhere below the folder (``data/train-00000-of-00002.parquet``, what
  ``push_to_hub`` / ``to_parquet`` write; their features in the schema's ``huggingface``
  metadata); the split of a file is the first split word in its path (``train``, ``validation``,
  ``valid``, ``val``, ``dev``, ``test``), the convention the Hub's own loader follows, else none.

A split word the harness does not know (a DatasetDict split ``holdout``) needs ``split_values``
in the column map. A file that is cut or not what its name says, and a column the column map
names but a file lacks, are one ``DataError`` naming the file (and the column map key).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.data.hf_columns import SPLIT_VALUES, ColumnMap
from harness.data.schema import DataError

PYARROW_HINT = "pip install 'pyarrow>=17' (a dependency of the harness; see pyproject.toml)"
_SPLIT_WORD = re.compile(r"[^A-Za-z0-9]+")


def pyarrow() -> Any:
    """The ``pyarrow`` module, or a one-line DataError saying how to install it."""
    try:
        import pyarrow as pa
        import pyarrow.ipc  # noqa: F401 - the submodules are not imported by ``import pyarrow``
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise DataError(f"reading Hugging Face-format collections needs pyarrow, which is not installed: "
                        f"{PYARROW_HINT}") from None
    return pa


@dataclass(frozen=True)
class DataFile:
    """One data file of a collection.

    Attributes:
        path: the ``.arrow`` or ``.parquet`` file.
        kind: ``arrow`` (an IPC stream, as ``save_to_disk`` writes) or ``parquet``.
        split: the layout's split word for its rows (``""`` when the layout names none), not yet mapped.
        name: its path relative to the collection folder (ids and messages).
        features: the ``datasets`` features of its columns (``{}`` when the file carries none).
    """

    path: Path
    kind: str
    split: str
    name: str
    features: dict[str, Any] = field(default_factory=dict, compare=False)


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable JSON file ({exc})") from None


def _dataset_folder(folder: Path, split: str, top: Path) -> list[DataFile]:
    """The arrow files of one ``save_to_disk`` Dataset folder (``state.json``)."""
    state = _json(folder / "state.json")
    entries = state.get("_data_files") if isinstance(state, dict) else None
    if not isinstance(entries, list) or not entries:
        raise DataError(f"{folder / 'state.json'}: _data_files: expected the list of the folder's .arrow files")
    info = folder / "dataset_info.json"
    features = (_json(info).get("features") or {}) if info.is_file() else {}
    files = []
    for entry in entries:
        name = entry.get("filename") if isinstance(entry, dict) else None
        if not isinstance(name, str) or "/" in name or name.startswith("."):
            raise DataError(f"{folder / 'state.json'}: _data_files: {entry!r} is not a file name")
        path = folder / name
        if not path.is_file():
            raise DataError(f"{path}: listed in {folder / 'state.json'} but missing; copy the collection again")
        files.append(DataFile(path, "arrow", split, str(path.relative_to(top)), features))
    return files


def layout_split(relative: Path) -> str:
    """The first split word of a parquet file's relative path (``data/train-00000-of-00001.parquet``)."""
    for part in relative.with_suffix("").parts:
        for word in _SPLIT_WORD.split(part.lower()):
            if word in SPLIT_VALUES:
                return word
    return ""


def _parquet_features(path: Path) -> dict[str, Any]:
    pa = pyarrow()
    try:
        meta = pa.parquet.read_schema(path).metadata or {}
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{path}: not a readable parquet file ({type(exc).__name__}: {exc}); copy it again") from None
    try:
        return (json.loads(meta.get(b"huggingface", b"{}")).get("info") or {}).get("features") or {}
    except ValueError:
        return {}


def find_data_files(folder: Path) -> tuple[list[DataFile], str]:
    """The collection's data files in a stable order, and its layout (``save_to_disk`` or ``parquet``).

    Raises:
        DataError: no data file, or a ``save_to_disk`` folder whose JSON files are damaged.
    """
    if (folder / "dataset_dict.json").is_file():
        splits = _json(folder / "dataset_dict.json").get("splits")
        if not isinstance(splits, list) or not all(isinstance(s, str) for s in splits):
            raise DataError(f"{folder / 'dataset_dict.json'}: splits: expected the list of split names")
        files = [f for s in splits for f in _dataset_folder(folder / s, s, folder)]
        return files, "save_to_disk"
    if (folder / "state.json").is_file():
        state = _json(folder / "state.json")
        split = state.get("_split") if isinstance(state, dict) else None
        return _dataset_folder(folder, split if isinstance(split, str) else "", folder), "save_to_disk"
    parquet = sorted(p for p in folder.rglob("*.parquet") if not any(x.startswith(".") for x in p.parts))
    if not parquet:
        raise DataError(f"{folder}: no data: expected a datasets save_to_disk folder (dataset_dict.json or "
                        "state.json with .arrow files) or .parquet files")
    return [DataFile(p, "parquet", layout_split(p.relative_to(folder)), str(p.relative_to(folder)),
                     _parquet_features(p)) for p in parquet], "parquet"


def _open_stream(path: Path) -> Any:
    pa = pyarrow()
    source = pa.memory_map(str(path))
    try:
        return pa.ipc.open_stream(source)
    except pa.ArrowInvalid:
        return pa.ipc.open_file(source)  # an Arrow IPC file (random access) instead of a stream


def schema(data: DataFile) -> Any:
    """The file's arrow schema.

    Raises:
        DataError: the file is cut, empty or not what its extension says.
    """
    pa = pyarrow()
    try:
        if data.kind == "parquet":
            return pa.parquet.read_schema(data.path)
        return _open_stream(data.path).schema
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{data.path}: not a readable {data.kind} file ({type(exc).__name__}: {exc}); "
                        "truncated or damaged copy?") from None


def check_columns(data: DataFile, cmap: ColumnMap) -> None:
    """Every column the map names is in the file.

    Raises:
        DataError: ``<column map>: <key>: column 'x' is not in <file> (its columns: ...)``.
    """
    have = list(schema(data).names)
    for column in cmap.columns():
        if column not in have:
            from harness.registry import did_you_mean

            raise DataError(f"{cmap.path}: {cmap.key_of(column)}: column {column!r} is not in {data.path} "
                            f"(its columns: {have}){did_you_mean(column, have)}")


def read_columns(data: DataFile, columns: list[str]) -> Any:
    """The named columns of the whole file as one pyarrow Table (memory-mapped where the format allows).

    Raises:
        DataError: the file is cut or damaged (also when the damage is past its schema).
    """
    pa = pyarrow()
    try:
        if data.kind == "parquet":
            return pa.parquet.read_table(data.path, columns=columns)
        return _open_stream(data.path).read_all().select(columns)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{data.path}: cannot read its rows ({type(exc).__name__}: {exc}); truncated or "
                        "damaged copy?") from None


def iter_column(data: DataFile, column: str) -> Iterator[Any]:
    """One column in record batches (bounded memory: image bytes are the bulk of a collection).

    Raises:
        DataError: the file is cut or damaged.
    """
    pa = pyarrow()
    try:
        if data.kind == "parquet":
            for batch in pa.parquet.ParquetFile(data.path).iter_batches(batch_size=256, columns=[column]):
                yield batch.column(0)
            return
        reader = _open_stream(data.path)
        index = reader.schema.get_field_index(column)
        for batch in reader:
            yield batch.column(index)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{data.path}: cannot read column {column!r} ({type(exc).__name__}: {exc}); truncated "
                        "or damaged copy?") from None


def class_names(data: DataFile, column: str) -> tuple[str, ...]:
    """The ``ClassLabel`` names of ``column`` in the file's features (a list of labels too), or ``()``."""
    todo = [data.features.get(column)]
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            if node.get("_type") == "ClassLabel" and isinstance(node.get("names"), list):
                return tuple(str(n) for n in node["names"])
            todo.extend(node.values())
        elif isinstance(node, list):
            todo.extend(node)
    return ()
