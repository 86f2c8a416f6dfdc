"""The image column of a Hugging Face-format collection as files the image store reads.

The image store (``harness.data.images``) decodes files by path. An image column holds either
paths (a string column, or an HF ``Image`` struct whose ``bytes`` are null: relative paths are
taken from the collection folder, then from the data file's folder) or the encoded bytes
themselves (a binary column, or an HF ``Image`` struct with ``bytes``). Bytes are written once
per data file into ``$HARNESS_CACHE/hf-images/<key>/`` (key: the data file's path, size and
mtime and the column), one file per row named by its position with the extension its content
says (``.png``, ``.jpg``, else ``.img``; the decoder reads the content, never the name), and an
``index.json`` naming each row's file; later loads read only that index, not the bytes again.

The folder is built in a temporary folder and renamed into place under a lock, so a killed
build leaves nothing that a later load would trust, and concurrent runs extract it once; an
index that does not match its data file (a damaged cache) is rebuilt, with a warning. Like every
harness cache it is local derived data (pixels indexed by row): keep it with the data.

A row without an image (null, empty bytes and no path) and a path that is not there are not
images: ``image_paths`` returns None for them, with the reason the adapter counts.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from harness.data.hf_files import DataFile, iter_column, pyarrow
from harness.data.schema import DataError
from harness.storage import atomic_write, cache_root, file_lock

log = logging.getLogger(__name__)

INDEX_VERSION = 1
NO_IMAGE = "no image in the row (null or empty bytes, no path)"
FILE_MISSING = "image file missing"


def _extension(head: bytes) -> str:
    if head.startswith(b"\x89PNG"):
        return ".png"
    if head.startswith(b"\xff\xd8"):
        return ".jpg"
    return ".img"  # whatever it is, the decoder tries it (and the cohort counts it if it cannot)


def _kind(data: DataFile, column: str, arrow_type: Any, where: str) -> str:
    """``struct`` (HF Image), ``bytes`` or ``path``; a one-line DataError for any other column type."""
    pa = pyarrow()
    if pa.types.is_struct(arrow_type) and {"bytes", "path"} <= {arrow_type.field(i).name
                                                                for i in range(arrow_type.num_fields)}:
        return "struct"
    if pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type):
        return "bytes"
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "path"
    raise DataError(f"{where}: image: column {column!r} of {data.path} is {arrow_type}, not an image: expected "
                    "an HF Image column ({bytes, path}), encoded image bytes or a file path")


def _cells(data: DataFile, column: str, kind: str) -> Any:
    """(bytes or None, path or None) per row, batch by batch."""
    for chunk in iter_column(data, column):
        if kind == "struct":
            raw, paths = chunk.field("bytes").to_pylist(), chunk.field("path").to_pylist()
        elif kind == "bytes":
            raw, paths = chunk.to_pylist(), [None] * len(chunk)
        else:
            raw, paths = [None] * len(chunk), chunk.to_pylist()
        yield from zip(raw, paths)


def _cache_key(data: DataFile, column: str) -> str:
    import hashlib

    stat = data.path.stat()
    blob = f"v{INDEX_VERSION}|{data.path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{column}"
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _read_index(folder: Path, n_rows: int) -> list[str | None] | None:
    try:
        index = json.loads((folder / "index.json").read_text(encoding="utf-8"))
        names = index["names"]
        if index.get("version") == INDEX_VERSION and len(names) == n_rows:
            return names
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def _extract(data: DataFile, column: str, kind: str, folder: Path, n_rows: int) -> list[str | None]:
    """Write the bytes of every row into ``folder`` (atomically: a temporary folder, renamed); the index."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        names: list[str | None] = []
        for row, (raw, path) in enumerate(_cells(data, column, kind)):
            if raw:
                name = f"{row:07d}{_extension(raw[:8])}"
                (tmp / name).write_bytes(raw)
                names.append(name)
            else:
                names.append(None if not path else "path:" + str(path))
        if len(names) != n_rows:
            raise DataError(f"{data.path}: column {column!r} has {len(names)} rows, the file {n_rows}")
        atomic_write(tmp / "index.json", json.dumps({"version": INDEX_VERSION, "names": names}).encode())
        if folder.exists():  # a damaged earlier build (its index did not match)
            shutil.rmtree(folder)
        os.rename(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return names


def _cached_names(data: DataFile, column: str, kind: str, n_rows: int) -> list[str | None]:
    """The per-row file names of the data file's extracted images (``path:...`` where a row has a path only)."""
    base = cache_root() / "hf-images"
    folder = base / _cache_key(data, column)
    names = _read_index(folder, n_rows)
    if names is not None:
        return [n if n is None or n.startswith("path:") else str(folder / n) for n in names]
    base.mkdir(parents=True, exist_ok=True)
    with file_lock(base / f".{folder.name}.lock"):
        names = _read_index(folder, n_rows)  # another process may have built it while we waited
        if names is None:
            if folder.exists():
                log.warning("hf-images cache %s does not match %s: rebuilding it", folder, data.path)
            names = _extract(data, column, kind, folder, n_rows)
    return [n if n is None or n.startswith("path:") else str(folder / n) for n in names]


def _resolve(path: str, collection: Path, data: DataFile, check_files: bool) -> str | None:
    candidate = Path(path).expanduser()
    if candidate.is_absolute():
        return str(candidate) if not check_files or candidate.is_file() else None
    for base in (collection, data.path.parent):
        if (base / candidate).is_file():
            return str((base / candidate).resolve())
    return None if check_files else str(collection / candidate)


def image_paths(data: DataFile, column: str, n_rows: int, collection: Path, where: str,
                check_files: bool = True) -> tuple[list[str | None], list[str]]:
    """A file path per row of ``data`` (None where the row has no image) and, per None, why.

    Args:
        data: the data file.
        column: its image column (``image`` of the column map).
        n_rows: the file's row count.
        collection: the collection folder (relative paths start there).
        where: the column map file (messages name it).
        check_files: check that path-valued images exist (a missing one is None, ``FILE_MISSING``).

    Returns:
        ``(paths, reasons)``: ``reasons[i]`` is ``""`` where ``paths[i]`` is a file, else ``NO_IMAGE`` or
        ``FILE_MISSING``.

    Raises:
        DataError: the column is not an image column, or the file is damaged.
    """
    from harness.data.hf_files import schema

    kind = _kind(data, column, schema(data).field(column).type, where)
    if kind == "path":
        cells: list[str | None] = [None if not p else "path:" + str(p) for _, p in _cells(data, column, kind)]
    else:
        cells = _cached_names(data, column, kind, n_rows)
    paths: list[str | None] = []
    reasons: list[str] = []
    for cell in cells:
        if cell is None:
            paths.append(None)
            reasons.append(NO_IMAGE)
        elif cell.startswith("path:"):
            found = _resolve(cell[5:], collection, data, check_files)
            paths.append(found)
            reasons.append("" if found else FILE_MISSING)
        else:
            paths.append(cell)
            reasons.append("")
    return paths, reasons
