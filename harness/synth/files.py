"""Byte-reproducible file output: gzip with mtime 0, fixed CSV dialect (images: ``pixels``).

Same world -> same bytes: nothing here writes a time stamp, a host name or a
random temporary name into a file.
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Iterable
from pathlib import Path


def csv_text(header: str, rows: Iterable[Iterable[object]]) -> str:
    """A literal header line (kept byte-exact, commas and all) plus csv-quoted rows, ``\\n`` endings."""
    buf = io.StringIO()
    buf.write(header + "\n")
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))


def write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def write_csv(path: Path, header: str, rows: Iterable[Iterable[object]]) -> None:
    write_text(path, csv_text(header, rows))


def write_csv_gz(path: Path, header: str, rows: Iterable[Iterable[object]]) -> None:
    """``name.csv.gz`` holding ``name.csv`` (as gzip -k would), mtime 0."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as raw, gzip.GzipFile(filename=path.name[:-3], mode="wb", fileobj=raw, mtime=0) as gz:
        gz.write(csv_text(header, rows).encode("utf-8"))
