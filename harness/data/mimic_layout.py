"""Where the parts of one MIMIC installation are under a data root (``find_layout``).

The JPG root is the data root itself if it holds the metadata table, else
``<root>/mimic-cxr-jpg``, else the highest-numbered version folder below it that holds
one (``<root>/mimic-cxr-jpg/2.1.0/``); every table may be ``.csv.gz`` or an uncompressed
``.csv`` (``table_file``). Report folders are searched in this order for
``pNN/pSUBJECT/sSTUDY.txt``: ``files/`` and ``mimic-cxr-reports/files/`` of
``<root>/mimic-cxr[/<version>]``, the same of ``<root>/mimic-cxr-reports[/<version>]``, and
finally the JPG tree's own ``files/`` (reports unzipped next to the study folders); an
explicit ``reports_root`` replaces the search. MIMIC-IV is looked for under
``<root>/mimiciv`` or an explicit ``ehr_root`` (``harness.data.ehr.find_mimiciv``).

Reading the tables found here into records is ``harness.data.mimic_cxr``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from harness.data.ehr import MimicIvTables, find_mimiciv
from harness.data.schema import DataError

METADATA = "mimic-cxr-2.0.0-metadata"


def table_file(folder: Path, stem: str) -> Path | None:
    """``folder/<stem>.csv.gz``, else ``folder/<stem>.csv``, else None."""
    for suffix in (".csv.gz", ".csv"):
        if (folder / f"{stem}{suffix}").is_file():
            return folder / f"{stem}{suffix}"
    return None


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", name))


def _versioned(folder: Path, holds: Callable[[Path], bool]) -> Path | None:
    """``folder`` if ``holds(folder)``, else its highest-version subfolder that holds it."""
    if holds(folder):
        return folder
    if not folder.is_dir():
        return None
    subs = sorted((d for d in folder.iterdir() if d.is_dir() and _version_key(d.name)),
                  key=lambda d: _version_key(d.name), reverse=True)
    return next((d for d in subs if holds(d)), None)


def _has_metadata(folder: Path) -> bool:
    return table_file(folder, METADATA) is not None


def _report_trees(folder: Path) -> tuple[Path, Path]:
    """A MIMIC-CXR folder's report trees: its ``files/`` or the unzipped ``mimic-cxr-reports/files/``."""
    return folder / "files", folder / "mimic-cxr-reports" / "files"


@dataclass(frozen=True)
class MimicLayout:
    """Where the parts of one MIMIC installation are under a data root."""

    jpg_root: Path                    # holds the metadata CSVs and files/
    report_dirs: tuple[Path, ...]     # existing ``files`` folders to look for sSTUDY.txt in, in order
    ehr: MimicIvTables | None         # None: no MIMIC-IV found


def find_layout(root: Path, reports_root: Path | None = None,
                ehr_root: Path | None = None) -> MimicLayout | None:
    """Locate the MIMIC parts under ``root``; None when there is no metadata CSV at all.

    Raises:
        DataError: an explicitly given ``reports_root`` / ``ehr_root`` that holds nothing usable.
    """
    root = Path(root).resolve()
    jpg_root = root if _has_metadata(root) else _versioned(root / "mimic-cxr-jpg", _has_metadata)
    if jpg_root is None:
        return None
    if reports_root is not None:
        reports_root = Path(reports_root).resolve()
        if not reports_root.is_dir():
            raise DataError(f"{reports_root}: reports_root is not a folder")
        files = reports_root / "files"
        report_dirs: list[Path] = [files if files.is_dir() else reports_root]
    else:
        report_dirs = []
        for base in (root / "mimic-cxr", root / "mimic-cxr-reports"):
            found = _versioned(base, lambda d: any(t.is_dir() for t in _report_trees(d)))
            if found is not None:
                report_dirs += [t for t in _report_trees(found) if t.is_dir()]
        if (jpg_root / "files").is_dir():
            report_dirs.append(jpg_root / "files")  # reports unzipped next to the study folders
    ehr = None
    if ehr_root is not None:
        ehr = find_mimiciv(Path(ehr_root))
        if ehr is None:
            raise DataError(f"{ehr_root}: ehr_root holds no MIMIC-IV patients/admissions tables")
    elif (root / "mimiciv").is_dir():
        ehr = find_mimiciv(root / "mimiciv")
    return MimicLayout(jpg_root, tuple(dict.fromkeys(report_dirs)), ehr)


def copies_in_other_versions(paths: pd.Series, jpg_root: Path) -> int:
    """Images whose JPG also exists in another version folder of the installation (2.0.0 next to 2.1.0).

    The layout fixes each path from the ids, so another version folder is the only other place
    the same file can be; only those folders are looked in (nothing is walked).

    Args:
        paths: the images' JPG paths, under ``jpg_root / "files"``.
        jpg_root: the chosen JPG root (``MimicLayout.jpg_root``).

    Returns:
        How many of them also exist in another version folder.
    """
    base = jpg_root.parent if _version_key(jpg_root.name) else jpg_root
    others = [d / "files" for d in sorted(base.iterdir()) if d.is_dir() and d != jpg_root
              and _version_key(d.name) and (d / "files").is_dir()] if base.is_dir() else []
    if not others:
        return 0
    mine = str(jpg_root / "files")
    relative = [p[len(mine):].lstrip("/") for p in paths]
    return sum(any(os.path.isfile(o / r) for o in others) for r in relative)
