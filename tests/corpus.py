"""Shared helpers of the bad-input corpus (``tests/test_bad_inputs*.py``): copy a dataset out of the
synthetic world, damage one cell, line or file of it, and assert the one-line error that follows.

The world itself is the session fixture ``corpus_world`` (``tests/conftest.py``): written once at
scale 0.05, seed 1, and never modified (every case damages a copy made by ``copy_of``).
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

from harness.catalog import DATASETS
from harness.cli import main
from harness.data.roots import MARKER
from harness.data.schema import DataError

MIMIC_JPG = "mimic-cxr-jpg"
META = "mimic-cxr-2.0.0-metadata.csv.gz"
SPLIT = "mimic-cxr-2.0.0-split.csv.gz"
LABELS = "mimic-cxr-2.0.0-chexpert.csv.gz"
NIH_CSV = "Data_Entry_2017_v2020.csv"
CHEX = "CheXpert-v1.0-small"
FOLDERS = {"mimic-cxr": ("mimic-cxr-jpg", "mimic-cxr", "mimiciv"), "chexpert": ("chexpert",),
           "nih14": ("nih14",), "openi": ("openi",)}


def copy_of(world: Path, tmp: Path, dataset: str) -> Path:
    """A data root holding one dataset's folders of the world (and the synthetic marker)."""
    root = tmp / "root"
    root.mkdir()
    shutil.copy(world / MARKER, root / MARKER)
    for folder in FOLDERS[dataset]:
        shutil.copytree(world / folder, root / folder)
    return root


def lines(path: Path) -> list[str]:
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return data.decode().split("\n")


def write(path: Path, rows: list[str]) -> None:
    data = "\n".join(rows).encode()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def set_cell(path: Path, row: int, column: str, value: str) -> int:
    """Set one cell (``row`` 0-based over data rows) of a simple CSV; returns the file line number."""
    rows = lines(path)
    header = rows[0].split(",")
    cells = rows[row + 1].split(",")
    cells[header.index(column)] = value
    rows[row + 1] = ",".join(cells)
    write(path, rows)
    return row + 2


def drop_column(path: Path, column: str) -> None:
    rows = lines(path)
    j = rows[0].split(",").index(column)
    write(path, [",".join(c for i, c in enumerate(r.split(",")) if i != j) if r else r for r in rows])


def add_column(path: Path, name: str, value: str) -> None:
    rows = lines(path)
    write(path, [f"{r},{name if i == 0 else value}" if r else r for i, r in enumerate(rows)])


def load(dataset: str, root: Path):
    return DATASETS.get(dataset).load(root, data_source="synthetic")


def one_line_error(dataset: str, root: Path) -> str:
    with pytest.raises(DataError) as err:
        load(dataset, root)
    message = str(err.value)
    assert "\n" not in message, message
    return message


def cli_error(argv: list[str], capsys) -> str:
    """Run the CLI; assert exit 2, exactly one error line, no traceback; return that line."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("harness: error:")]
    assert len(errors) == 1, err
    others = [line for line in err.splitlines() if line and not line.startswith(("harness: error:", "WARNING"))]
    assert not others, err  # nothing but warnings besides the one error line
    return errors[0]
