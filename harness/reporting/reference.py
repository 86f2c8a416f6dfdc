"""The project's own regression reference: a fixed small suite on the synthetic world, and its tolerances.

Regenerate it on purpose (after a change that is MEANT to move numbers) with either of::

    python -m harness regress --regenerate-reference
    python -m harness.reporting.reference --write

which runs the suite below (one thread, as the test does) and writes

- ``leaderboards/reference/records/``: the suite's result records (the ordinary record store);
- ``leaderboards/reference/reference.yaml``: ``data_source: synthetic``, the ``suite`` that was
  run, what was skipped and why, and one ``absolute`` entry per (method, task, fraction) in
  the ``published.yaml`` format: the mean over seeds of the main metric, the measured
  seed-to-seed standard deviation ``seed_std`` and the ``tolerance`` derived from it.

Tolerance = max(2 x seed_std x sqrt(2 / n_seeds), 0.002): two standard deviations of the
difference between two n-seed means when only the seeds' noise differs, with a floor for
settings where the seeds agree exactly (a linear probe on all labels is deterministic).
``tests/test_reference_regression.py`` reruns the suite and ``regress``es against the file,
so a change that moves a mean by more than that fails CI until the reference is regenerated.

The suite: every built-in method that imports, smoke profile, seeds 0-2, label fraction 0.5
(so that the seeds differ), on ``mock`` and on ``mimic-cls`` over a small synthetic world
(``write_world(scale=0.2, seed=0, sources=("mimic",), calibration="spec")``, real MIMIC-CXR layout). A method
that cannot run a task (``msn-ehr`` needs EHR tables, ``region-word`` report text, neither
of which ``mock`` has) is listed under ``skipped`` with the reason.
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from harness.storage import REPOSITORY

ROOT = REPOSITORY / "leaderboards" / "reference"
REFERENCE = ROOT / "reference.yaml"
RECORDS = ROOT / "records"
TASKS = ("mock", "mimic-cls")
FRACTION, SEEDS, PROFILE = 0.5, (0, 1, 2), "smoke"
# calibration pinned (the default is spec whatever is installed): the suite never depends on a default
WORLD = {"scale": 0.2, "seed": 0, "sources": ("mimic",), "calibration": "spec"}
TOLERANCE_FLOOR = 0.002


def write_suite_world(path: Path) -> Path:
    from harness.synth import write_world

    write_world(path, scale=WORLD["scale"], seed=WORLD["seed"], sources=WORLD["sources"],
                calibration=WORLD["calibration"], progress=False)
    return path


def suite_world() -> Path:
    """The suite's world, written once into the harness cache (``$HARNESS_CACHE/reference-world``)."""
    from harness.storage import cache_root, file_lock

    path = cache_root() / "reference-world" / f"s{WORLD['seed']}-x{WORLD['scale']:g}-{WORLD['calibration']}"
    with file_lock(path.with_suffix(".lock")):
        if not (path / "HARNESS_SYNTHETIC.json").is_file():
            tmp = path.with_name(path.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            write_suite_world(tmp)
            tmp.rename(path)
    return path


def available_methods() -> list[str]:
    """Built-in methods whose code imports here (a method that has not landed yet is left out)."""
    from harness.catalog import METHODS
    from harness.dispatch.runner import load_method

    names = []
    for name in METHODS.names():
        try:
            load_method(name)
        except (ImportError, AttributeError):
            continue
        names.append(name)
    return names


def run_suite(results_dir: Path, world: Path, suite: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run every (method, task) of ``suite`` for its seeds; returns the pairs that could not run.

    ``suite`` items: ``{"method", "task", "fraction", "seeds"}``. A pair whose first seed
    raises an expected refusal (missing data modality or capability) is skipped, with why.
    """
    from harness.data.schema import DataError
    from harness.dispatch.runner import RunError, RunRequest, execute

    skipped = []
    for item in suite:
        for seed in item["seeds"]:
            req = RunRequest(method=item["method"], task=item["task"], fraction=item["fraction"], seed=seed,
                             profile=PROFILE, data_root=str(world), results_dir=str(results_dir), progress=False)
            try:
                execute(req)
            except (DataError, RunError) as exc:
                skipped.append({"method": item["method"], "task": item["task"], "reason": str(exc).splitlines()[0]})
                break
    return skipped


def tolerance(values: list[float]) -> float:
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return max(2 * std * math.sqrt(2 / len(values)), TOLERANCE_FLOOR)


def reference_entries(results_dir: Path, suite: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One absolute entry per suite item that produced records (mean, seed std, tolerance)."""
    from harness.results import load_records

    records, problems = load_records(results_dir)
    if problems:
        raise RuntimeError(f"reference suite: unreadable records: {problems[:3]}")
    entries = []
    for item in suite:
        recs = [r for r in records if r["method"] == item["method"] and r["task"] == item["task"]
                and math.isclose(r["fraction"], item["fraction"])]
        if not recs:
            continue
        main = recs[0]["main_metric"]
        values = [r["metrics"][main] for r in sorted(recs, key=lambda r: r["seed"])]
        entries.append({
            "paper": "harness reference suite", "id": "reference", "where": "leaderboards/reference/records",
            "method": item["method"], "versus": None, "dataset": recs[0]["dataset"], "task": item["task"],
            "protocol": recs[0]["protocol"], "fraction": item["fraction"], "metric": main,
            "value": round(float(np.mean(values)), 6), "unit": "fraction", "kind": "absolute",
            "evidence": "REFERENCE", "verified": True, "tolerance": round(tolerance(values), 6),
            "profile": PROFILE, "seed_std": round(float(np.std(values, ddof=1)), 6), "n_seeds": len(values),
        })
    return entries


def default_suite() -> list[dict[str, Any]]:
    return [{"method": m, "task": t, "fraction": FRACTION, "seeds": list(SEEDS)}
            for t in TASKS for m in available_methods()]


def load_suite(path: Path = REFERENCE) -> list[dict[str, Any]]:
    """The suite recorded in the reference file: exactly what the reference was made from."""
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    done = {(e["method"], e["task"]) for e in raw["entries"]}
    return [s for s in raw["suite"] if (s["method"], s["task"]) in done]


def regenerate(root: Path = ROOT) -> Path:
    """Rerun the suite from scratch and rewrite the reference records and file. Returns the file."""
    import torch

    torch.set_num_threads(1)  # the test runs single-threaded; float sums depend on the thread count
    suite = default_suite()
    with tempfile.TemporaryDirectory(prefix="harness-reference-") as tmp:
        world = write_suite_world(Path(tmp) / "world")
        results = Path(tmp) / "records"
        skipped = run_suite(results, world, suite)
        entries = reference_entries(results, suite)
        records = root / "records"
        if records.exists():
            shutil.rmtree(records)
        shutil.copytree(results, records)
    header = ("# Generated by `python -m harness regress --regenerate-reference` (harness/reporting/reference.py);\n"
              "# regenerate on purpose when a change is meant to move numbers. Synthetic data only: never compare\n"
              "# with papers.\n"
              "# tolerance = max(2 x seed_std x sqrt(2 / n_seeds), 0.002)\n")
    body = {"data_source": "synthetic", "world": {**WORLD, "sources": list(WORLD["sources"])},
            "suite": suite, "skipped": skipped, "entries": entries}
    path = root / "reference.yaml"
    path.write_text(header + yaml.safe_dump(body, sort_keys=False), encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="rerun the suite and overwrite the reference")
    args = parser.parse_args(argv)
    if not args.write:
        parser.print_help()
        return 2
    path = regenerate()
    print(f"wrote {path} and {RECORDS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
