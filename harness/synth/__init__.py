"""The synthetic CXR world: replicas of MIMIC-CXR(-JPG) + MIMIC-IV, CheXpert, NIH-14 and OpenI.

``write_world(DIR)`` writes, in each dataset's ORIGINAL layout (``docs/datasets.md``)::

    DIR/HARNESS_SYNTHETIC.json          marker: generator version, seed, scale, calibration, sources, counts
    DIR/mimic-cxr-jpg/                  MIMIC-CXR-JPG 2.1.0 (CSVs gzipped, files/pNN/p<subject>/s<study>/*.jpg)
    DIR/mimic-cxr/                      MIMIC-CXR reports (files/pNN/p<subject>/s<study>.txt) + record lists
    DIR/mimiciv/3.1/hosp/, icu/         patients, admissions, icustays (.csv.gz)
    DIR/chexpert/CheXpert-v1.0-small/   train.csv, valid.csv, train/ and valid/ JPGs
    DIR/nih14/                          Data_Entry_2017_v2020.csv (+ 2017 variant), BBox_List_2017.csv, lists, PNGs
    DIR/openi/                          ecgen-radiology/*.xml, NLMCXR_png/*.png
    DIR/_synthetic/ground_truth.csv.gz  every drawn finding's box: dataset,image,finding,x,y,w,h

The same adapters that read real data read these folders; the marker makes
every result say ``data_source: synthetic``, and ``world_identity`` (generator
version, seed, scale, calibration) goes into every record run on it. Output is
byte-for-byte reproducible for a (seed, scale, calibration) whatever is installed and
whatever the number of worker processes (``harness.synth.pixels``): per-item numpy
generators, no time stamps, gzip mtime 0; the calibration is ``spec`` unless another is
asked for (``harness.synth.calibration``).

Sizes: ``scale`` multiplies each source's patients; scale 1 is the unit world (about 1,200
MIMIC images); the default world is ``DEFAULT_SCALE`` (12): about 14,000 MIMIC images with
2,200 test and 900 validation frontal images, 11,000 + 2,000 CheXpert, 14,000 NIH images
(3,500 on the test list, about 1,300 with boxes) and 4,800 OpenI reports (about 9,000
images); ``docs/datasets.md`` section 6.1 has the measured figures and speed.

Sources are independent (each has its own generators), so a world can grow one source at
a time: ``add_sources(tmp, final)`` moves sources written into ``tmp`` by ``write_world``
into an existing world and rewrites its marker and ground truth, giving the same bytes as
one ``write_world`` call with all of them (the default world is built that way, per task:
``harness.data.roots``)::

    python -c "from harness.synth import write_world; write_world('/tmp/cxr-world', scale=1)"
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from harness.synth import files, quirks, write_chexpert, write_mimic, write_nih14, write_openi
from harness.synth.calibration import calibration_sha256, check_calibration, prevalence_targets
from harness.synth.world import DEFAULT_SCALE, GENERATOR_VERSION, SOURCES, build_source

MARKER = "HARNESS_SYNTHETIC.json"
TRUTH = "_synthetic/ground_truth.csv.gz"
TRUTH_HEADER = "dataset,image,finding,x,y,w,h"
_WRITERS: dict[str, Callable] = {
    "mimic": write_mimic.write, "chexpert": write_chexpert.write, "nih14": write_nih14.write,
    "openi": write_openi.write,
}

# the top-level folders each source writes (what add_sources moves)
FOLDERS = {"mimic": ("mimic-cxr-jpg", "mimic-cxr", "mimiciv"), "chexpert": ("chexpert",), "nih14": ("nih14",),
           "openi": ("openi",)}
# the ground truth's dataset column per source
TRUTH_DATASET = {"mimic": "mimic-cxr", "chexpert": "chexpert", "nih14": "nih14", "openi": "openi"}

# what makes two worlds the same world (the marker's other keys follow from these and the sources)
IDENTITY_KEYS = ("generator", "generator_version", "seed", "scale", "calibration", "calibration_sha256")

__all__ = ["DEFAULT_SCALE", "GENERATOR_VERSION", "IDENTITY_KEYS", "MARKER", "SOURCES", "TRUTH", "add_sources",
           "world_identity", "world_sources", "write_world"]


def _progress_bar(enabled: bool, total: int, desc: str) -> tuple[Callable[[int], None], Callable[[], None]]:
    from harness.progress import progress

    bar = progress(total, desc, unit="img", enabled=enabled, leave=False)
    return bar.update, bar.close


def write_world(out: str | Path, *, sources: Sequence[str] = SOURCES, scale: float = DEFAULT_SCALE, seed: int = 0,
                progress: bool = True, calibration: str = "spec", workers: int | None = None) -> dict:
    """Write the synthetic world under ``out`` and return the marker's content.

    Args:
        out: data-root folder (created; existing files of the same names are overwritten).
        sources: any of ``mimic``, ``chexpert``, ``nih14``, ``openi`` (none: only the marker, which
            ``add_sources`` can then extend).
        scale: multiplies patient counts (nasty cases are planted at every scale).
        seed: world seed; the same (seed, scale, calibration) gives the same bytes.
        progress: show the progress per source on stderr (``harness.progress``).
        calibration: ``spec`` (published counts, the default whatever is installed) or
            ``torchxrayvision`` (the metadata bundled with a locally installed torchxrayvision;
            only when asked for: the marker then records it and the files' ``calibration_sha256``).
        workers: processes that render and encode the images (``harness.synth.pixels``); ``None``:
            ``$HARNESS_SYNTH_WORKERS``, else every CPU this process may use. The bytes do not depend on it.

    Returns:
        The marker's content (see ``world_identity`` for the keys that identify the world).

    Raises:
        ValueError: unknown source, a non-positive scale, or a calibration that cannot be used
            (``harness.synth.calibration.CalibrationError``: unknown, or torchxrayvision missing);
            raised before anything is written.
    """
    unknown = sorted(set(sources) - set(SOURCES))
    if unknown:
        raise ValueError(f"unknown source(s) {unknown}; choose from {SOURCES}")
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    calibration = check_calibration(calibration or "spec")
    digest = calibration_sha256(calibration)
    for source in sources:  # read every calibration file now: a damaged one stops us before anything is written
        prevalence_targets(source, calibration)
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    counts, truth = {}, []
    for source in SOURCES:
        if source not in sources:
            continue
        world = build_source(source, scale=scale, seed=seed, calibration=calibration)
        quirks.plant(world)
        update, close = _progress_bar(progress, sum(len(st.images) for st in world.studies), f"synth {source}")
        try:
            counts[source], rows = _WRITERS[source](world, root, update, workers)
        finally:
            close()
        truth += rows
    files.write_csv_gz(root / TRUTH, TRUTH_HEADER, truth)
    marker = {"generator": "harness.synth", "generator_version": GENERATOR_VERSION, "seed": seed, "scale": scale,
              "calibration": calibration, "sources": [s for s in SOURCES if s in sources], "counts": counts,
              "data_source": "synthetic"}
    if digest is not None:  # absent for spec, so a spec world's marker has the same bytes as it always had
        marker["calibration_sha256"] = digest
    files.write_text(root / MARKER, json.dumps(marker, indent=2, sort_keys=True) + "\n")
    return marker


def world_sources(root: str | Path) -> tuple[str, ...]:
    """The sources the world under ``root`` holds (its marker's ``sources``); () without a readable marker."""
    try:
        marker = json.loads((Path(root) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ()
    found = marker.get("sources") if isinstance(marker, dict) else None
    return tuple(s for s in SOURCES if isinstance(found, list) and s in found)


def _truth_rows(root: Path) -> list[list[str]]:
    path = root / TRUTH
    if not path.is_file():
        return []
    with gzip.open(path, "rt", encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[1:]


def add_sources(new: str | Path, root: str | Path) -> dict:
    """Move the sources of the world ``new`` into the world ``root`` (same identity); return the new marker.

    ``new`` is a ``write_world`` output holding only sources that ``root`` lacks. Each source's
    folders are renamed into ``root`` (a folder there that no marker lists, left by an interrupted
    addition, is replaced), then the ground truth and, last, the marker are replaced atomically, in
    the order of ``SOURCES``: the result has the bytes of one ``write_world`` call with every source.
    The caller holds the world's lock (``harness.data.roots``); ``new`` is removed.

    Raises:
        ValueError: the two worlds differ in identity, or ``new`` holds a source ``root`` has.
    """
    new, root = Path(new), Path(root)
    old_marker = json.loads((root / MARKER).read_text(encoding="utf-8"))
    add_marker = json.loads((new / MARKER).read_text(encoding="utf-8"))
    if world_identity(new) != world_identity(root):
        raise ValueError(f"add_sources: {new} is not the same world as {root} "
                         f"({world_identity(new)} != {world_identity(root)})")
    have, adding = world_sources(root), world_sources(new)
    if set(have) & set(adding):
        raise ValueError(f"add_sources: {root} already holds {sorted(set(have) & set(adding))}")
    for source in adding:
        for folder in FOLDERS[source]:
            if (root / folder).exists():  # not in the marker: an interrupted addition's leftovers
                shutil.rmtree(root / folder)
            os.rename(new / folder, root / folder)
    rows = _truth_rows(root) + _truth_rows(new)
    order = {TRUTH_DATASET[s]: k for k, s in enumerate(SOURCES)}
    rows.sort(key=lambda r: order[r[0]])  # stable: each source's rows keep their order
    tmp = (root / TRUTH).parent / f".tmp-{os.getpid()}" / Path(TRUTH).name  # same name: gzip stores it
    files.write_csv_gz(tmp, TRUTH_HEADER, rows)
    os.replace(tmp, root / TRUTH)
    tmp.parent.rmdir()
    marker = dict(old_marker)
    marker["sources"] = [s for s in SOURCES if s in have or s in adding]
    marker["counts"] = {**old_marker.get("counts", {}), **add_marker.get("counts", {})}
    tmp = root / f"{MARKER}.tmp-{os.getpid()}"
    files.write_text(tmp, json.dumps(marker, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, root / MARKER)
    shutil.rmtree(new, ignore_errors=True)
    return marker


def world_identity(root: str | Path) -> dict[str, Any]:
    """What identifies the synthetic world under ``root``: the ``IDENTITY_KEYS`` of its marker.

    Records store it (``world``), so two records of different worlds never look alike.

    Raises:
        DataError: the marker is missing, unreadable or not a JSON object (the message names it).
    """
    from harness.data.schema import DataError

    path = Path(root) / MARKER
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable synthetic-world marker ({exc})") from None
    if not isinstance(marker, dict):
        raise DataError(f"{path}: synthetic-world marker is not a JSON object")
    return {k: marker[k] for k in IDENTITY_KEYS if k in marker}
