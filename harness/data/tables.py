"""Reading the datasets' CSV tables with typed columns and ``file:row: field:`` errors.

The fast path is one ``pandas.read_csv`` with ``usecols`` and numeric dtypes (a
377k-row MIMIC metadata table loads in about a second). Only when that fails, or
a value is outside its allowed set, do we look for the first offending row, so
the error names it: ``mimic-cxr-2.0.0-chexpert.csv.gz:7: Edema: value '2.0' is not
one of 1.0, 0.0, -1.0 or blank``.

Row numbers are 1-based file line numbers: the header is line 1, so the first
data row is line 2 (tables with embedded newlines or blank lines would shift
them; none of the datasets' tables have either).

A damaged copy is one ``DataError`` naming the file, never a traceback and never a
silently shorter table: a truncated or corrupt gzip (also when the header survives
the cut and the error comes from the middle of the file: ``EOFError``,
``zlib.error``, ``gzip.BadGzipFile``) and a plain CSV that ends in the middle of a
row (``ensure_complete``; a cut exactly at a line end cannot be told from a shorter
file).

Column kinds:

=========  =============================================================
``int``    integer, no blanks (identifiers)
``float``  number or blank (NaN)
``label``  ``1.0`` / ``0.0`` / ``-1.0`` or blank (NaN); ``1``/``0``/``-1`` accepted
``str``    text; blank -> NaN (callers decide what NaN means)
``key``    text identifier, no blanks (``dicom_id``)
``date``   ``YYYYMMDD`` integer-like date (MIMIC-CXR ``StudyDate``), no blanks
``time``   ``YYYY-MM-DD HH:MM:SS`` timestamp or blank (MIMIC-IV)
=========  =============================================================
"""

from __future__ import annotations

import csv
import gzip
import io
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from harness.data.schema import DataError

LABEL_VALUES = (1.0, 0.0, -1.0)
_READ_DTYPES = {"int": "int64", "float": "float64", "label": "float64",
                "str": "str", "key": "str", "date": "str", "time": "str"}
# What Python's gzip/zlib raise for a cut or damaged .gz, wherever in the file the damage is.
GZIP_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile)


def gzip_error(path: Path, err: BaseException) -> DataError:
    """The one-line DataError for a truncated or corrupt gzip (or a cut plain file: ``EOFError``)."""
    what = "truncated or corrupt gzip file" if str(path).endswith(".gz") else "truncated file"
    return DataError(f"{path}: {what} ({type(err).__name__}: {err}); copy or download it again")


def ensure_complete(path: Path, n_fields: int) -> None:
    """Refuse a plain CSV whose last row is cut short (the file ends in the middle of a row).

    A complete table ends with a newline, so a file that does not is parsed again with the
    ``csv`` module (only then: the check costs nothing for a complete file) and its last record
    must have all ``n_fields`` fields; a cut inside a quoted field is a ``csv.Error``.
    Gzip files are not looked at: their cut is a decompression error (``GZIP_ERRORS``).

    Raises:
        DataError: naming the file and the line of the cut row.
    """
    path = Path(path)
    if str(path).endswith(".gz"):
        return
    with open(path, "rb") as f:
        f.seek(0, io.SEEK_END)
        if f.tell() == 0:
            return
        f.seek(-1, io.SEEK_END)
        if f.read(1) in (b"\n", b"\r"):
            return
    last, line = None, 0
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f)
            for row in reader:
                last, line = row, reader.line_num
    except csv.Error as err:
        raise DataError(f"{path}: the file ends inside a quoted field ({err}): truncated copy?") from err
    except UnicodeDecodeError as err:
        raise utf8_error(path) from err
    if last is not None and line > 1 and len(last) < n_fields:
        raise DataError(f"{path}:{line}: row: {len(last)} fields, expected {n_fields}: the file ends in the "
                        "middle of a row (truncated copy?)")


def utf8_error(path: Path) -> DataError:
    """A DataError naming the first line of ``path`` (gzip or plain) that is not valid UTF-8.

    The datasets' tables are ASCII/UTF-8; anything else is a corrupt copy, never decoded with
    replacement characters (which would silently change ids or labels).
    """
    try:
        data = gzip.decompress(Path(path).read_bytes()) if str(path).endswith(".gz") else Path(path).read_bytes()
    except GZIP_ERRORS as err:
        return gzip_error(path, err)
    except OSError as err:
        return DataError(f"{path}: cannot read: {err}")
    for number, line in enumerate(data.split(b"\n"), start=1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as err:
            return DataError(f"{path}:{number}: encoding: byte {err.start} of the line is not valid UTF-8 "
                             f"({err.reason}); the file is probably corrupt")
    return DataError(f"{path}: encoding: not valid UTF-8")


def header(path: Path) -> list[str]:
    """The column names of a CSV (gzip or plain), without reading its rows."""
    try:
        return list(pd.read_csv(path, nrows=0).columns)
    except UnicodeDecodeError as err:
        raise utf8_error(path) from err
    except GZIP_ERRORS as err:
        raise gzip_error(path, err) from err
    except (OSError, pd.errors.ParserError) as err:
        raise DataError(f"{path}: cannot read the header: {err}") from err
    except pd.errors.EmptyDataError as err:
        raise DataError(f"{path}: empty file") from err


def read_table(path: Path, columns: dict[str, str], *, optional: tuple[str, ...] = ()) -> pd.DataFrame:
    """Read ``columns`` (name -> kind, see the module docstring) of a CSV.

    Args:
        path: the CSV (``.csv`` or ``.csv.gz``).
        columns: the columns to read and their kinds; other columns are not parsed.
        optional: names in ``columns`` that may be absent from the header (they come back all-NaN).

    Raises:
        DataError: missing column, unparsable value or disallowed value, naming file, row and column;
            a truncated or corrupt file, naming the file.
    """
    names = header(path)
    ensure_complete(path, len(names))
    missing = [c for c in columns if c not in names and c not in optional]
    if missing:
        raise DataError(f"{path}:1: header: missing column(s) {missing}")
    present = {c: k for c, k in columns.items() if c in names}
    dtypes = {c: _READ_DTYPES[k] for c, k in present.items()}
    try:
        frame = pd.read_csv(path, usecols=list(present), dtype=dtypes)
    except GZIP_ERRORS as err:  # header read fine, the cut or damage is further in (zlib.error is no OSError)
        raise gzip_error(path, err) from err
    except pd.errors.ParserError as err:  # ragged row: pandas' message names the line
        raise DataError(f"{path}: malformed CSV: {err}") from err
    except UnicodeDecodeError as err:  # a ValueError too: catch it first (the raw re-read would fail alike)
        raise utf8_error(path) from err
    except (ValueError, TypeError, OverflowError):
        frame = None  # some value did not parse: find which, below
    if frame is None:
        try:
            raw = pd.read_csv(path, usecols=list(present), dtype=str, keep_default_na=False, na_values=[""])
        except GZIP_ERRORS as err:
            raise gzip_error(path, err) from err
        _raise_first_bad(path, raw, present)
        raise DataError(f"{path}: could not be parsed with the expected column types {present}")
    for col, kind in present.items():
        frame[col] = _convert(path, frame[col], col, kind)
    for col in columns:
        if col not in frame.columns:
            frame[col] = np.nan
    return frame[list(columns)]


def _raise_first_bad(path: Path, raw: pd.DataFrame, kinds: dict[str, str]) -> None:
    for col, kind in kinds.items():
        if kind in ("int", "float", "label"):
            values = raw[col]
            numbers = pd.to_numeric(values, errors="coerce")
            bad = numbers.isna() & values.notna()
            if kind == "int":
                bad |= values.isna() | (numbers.notna() & (numbers != np.floor(numbers)))
            if bad.any():
                _raise_at(path, raw.index[bad.to_numpy()][0], col, values, "is not a number" if kind != "int"
                          else "is not an integer identifier")


def _raise_at(path: Path, index: int, col: str, values: pd.Series, what: str) -> None:
    value = values.loc[index]
    shown = "blank" if pd.isna(value) else f"value {str(value)[:40]!r}"
    raise DataError(f"{path}:{int(index) + 2}: {col}: {shown} {what}")


def _convert(path: Path, values: pd.Series, col: str, kind: str) -> pd.Series:
    if kind == "label":
        arr = values.to_numpy(dtype=np.float64)
        bad = ~np.isnan(arr) & ~np.isin(arr, LABEL_VALUES)
        if bad.any():
            _raise_at(path, values.index[bad][0], col, values, "is not one of 1.0, 0.0, -1.0 or blank")
        return values.astype(np.float64)
    if kind == "key":
        bad = values.isna()
        if bad.any():
            _raise_at(path, values.index[bad.to_numpy()][0], col, values, "where an identifier is required")
        return values
    if kind == "date":
        parsed = pd.to_datetime(values, format="%Y%m%d", errors="coerce")
        bad = parsed.isna()
        if bad.any():
            _raise_at(path, values.index[bad.to_numpy()][0], col, values, "is not a YYYYMMDD date")
        return parsed
    if kind == "time":
        parsed = pd.to_datetime(values, format="%Y-%m-%d %H:%M:%S", errors="coerce")
        bad = parsed.isna() & values.notna()
        if bad.any():
            _raise_at(path, values.index[bad.to_numpy()][0], col, values, "is not a YYYY-MM-DD HH:MM:SS time")
        return parsed
    return values
