"""The synthetic CXR world: small replicas of MIMIC-CXR(-JPG) + MIMIC-IV, CheXpert, NIH-14 and OpenI.

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
byte-for-byte reproducible for a (seed, scale, calibration) whatever is installed:
per-item numpy generators, no time stamps, gzip mtime 0; the calibration is
``spec`` unless another is asked for (``harness.synth.calibration``). At ``scale=1`` the world has about 1,200 MIMIC
images (700 studies, 300 patients), 900 + 150 CheXpert images, 1,200 NIH
images with ~150 boxes and 400 OpenI reports (~750 images), and is written in
about a minute on one core::

    python -c "from harness.synth import write_world; write_world('/tmp/cxr-world', scale=0.1)"
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from harness.synth import files, quirks, write_chexpert, write_mimic, write_nih14, write_openi
from harness.synth.calibration import calibration_sha256, check_calibration, prevalence_targets
from harness.synth.world import GENERATOR_VERSION, SOURCES, build_source

MARKER = "HARNESS_SYNTHETIC.json"
TRUTH = "_synthetic/ground_truth.csv.gz"
TRUTH_HEADER = "dataset,image,finding,x,y,w,h"
_WRITERS: dict[str, Callable] = {
    "mimic": write_mimic.write, "chexpert": write_chexpert.write, "nih14": write_nih14.write,
    "openi": write_openi.write,
}

# what makes two worlds the same world (the marker's other keys follow from these and the sources)
IDENTITY_KEYS = ("generator", "generator_version", "seed", "scale", "calibration", "calibration_sha256")

__all__ = ["GENERATOR_VERSION", "IDENTITY_KEYS", "MARKER", "SOURCES", "TRUTH", "world_identity", "write_world"]


def _progress_bar(enabled: bool, total: int, desc: str) -> tuple[Callable[[int], None], Callable[[], None]]:
    from harness.progress import progress

    bar = progress(total, desc, unit="img", enabled=enabled, leave=False)
    return bar.update, bar.close


def write_world(out: str | Path, *, sources: Sequence[str] = SOURCES, scale: float = 1.0, seed: int = 0,
                progress: bool = True, calibration: str = "spec") -> dict:
    """Write the synthetic world under ``out`` and return the marker's content.

    Args:
        out: data-root folder (created; existing files of the same names are overwritten).
        sources: any of ``mimic``, ``chexpert``, ``nih14``, ``openi``.
        scale: multiplies patient counts (nasty cases are planted at every scale).
        seed: world seed; the same (seed, scale, calibration) gives the same bytes.
        progress: show the progress per source on stderr (``harness.progress``).
        calibration: ``spec`` (published counts, the default whatever is installed) or
            ``torchxrayvision`` (the metadata bundled with a locally installed torchxrayvision;
            only when asked for: the marker then records it and the files' ``calibration_sha256``).

    Returns:
        The marker's content (see ``world_identity`` for the keys that identify the world).

    Raises:
        ValueError: unknown source, a non-positive scale, or a calibration that cannot be used
            (``harness.synth.calibration.CalibrationError``: unknown, or torchxrayvision missing);
            raised before anything is written.
    """
    unknown = sorted(set(sources) - set(SOURCES))
    if unknown or not sources:
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
            counts[source], rows = _WRITERS[source](world, root, update)
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
