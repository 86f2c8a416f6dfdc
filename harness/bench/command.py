"""``python -m harness bench``: its options, and the run that measures every figure and writes the report."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.bench.extraction import bench_extraction
from harness.bench.image_cache import bench_images
from harness.bench.measure import machine
from harness.bench.probe import bench_probe
from harness.bench.profiles import PROFILES, BenchProfile
from harness.bench.records import bench_records
from harness.bench.report import Figure, Report, render
from harness.bench.scaling import bench_scaling
from harness.bench.suite import bench_suite

STEPS: dict[str, Callable[[BenchProfile, Path], tuple[Figure, str]]] = {
    "P1": bench_extraction, "P2": bench_probe, "P3": bench_images, "P4": bench_records, "P5": bench_suite,
    "scaling": bench_scaling,
}


def run_bench(quick: bool = False, out: str | Path | None = None, threads: int = 1,
              only: tuple[str, ...] | None = None, changes: dict[str, Any] | None = None) -> str:
    """Run the bench and return (and write to ``out``) its markdown report.

    Args:
        quick: tiny sizes (tests); the report says so.
        out: markdown file to write.
        threads: ``torch.set_num_threads`` for every figure (both sides of each ratio).
        only: a subset of ``STEPS`` keys (default all).
        changes: ``BenchProfile`` fields to replace, e.g. ``{"p5_methods": ("random",)}``.
    """
    import dataclasses

    import torch

    torch.set_num_threads(threads)
    profile = dataclasses.replace(PROFILES["quick" if quick else "full"], **(changes or {}))
    report = Report(profile)
    info = machine()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="harness-bench-") as tmp:
        for key, step in STEPS.items():
            if only and key not in only:
                continue
            print(f"bench: {key} ...", file=sys.stderr, flush=True)
            work = Path(tmp) / key
            work.mkdir()
            figure, text = step(profile, work)
            report.add(figure, text)
    text = render(report, info, os.getloadavg(), time.perf_counter() - t0)
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n")
    return text


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    """The ``harness bench`` options (``--quick``, ``--out``, ``--threads``, ``--only``, ``--suite-*``)."""
    p.add_argument("--quick", action="store_true", help="tiny sizes, about a minute (what the tests run)")
    p.add_argument("--out", default=None, help="also write the markdown report here (e.g. docs/bench-report.md)")
    p.add_argument("--threads", type=int, default=1, help="torch threads for every figure (default 1)")
    p.add_argument("--only", nargs="+", choices=list(STEPS), default=None, help="run only these figures")
    p.add_argument("--suite-methods", nargs="+", default=None,
                   help="P5: these methods only (default: every method that loads; the report says which)")
    p.add_argument("--suite-tasks", nargs="+", default=None, help="P5: these tasks only (default: every task)")


def cmd_bench(args: argparse.Namespace) -> int:
    """``harness bench``: run it, print the report (and write it to ``--out``); 0.

    Args:
        args: parsed with ``add_bench_arguments``.

    Returns:
        0: benchmarks are measurements, nothing here fails on a speed.
    """
    changes = {k: tuple(v) for k, v in (("p5_methods", args.suite_methods), ("p5_tasks", args.suite_tasks)) if v}
    print(run_bench(quick=args.quick, out=args.out, threads=args.threads,
                    only=tuple(args.only) if args.only else None, changes=changes))
    return 0
