"""P4: ``mimic-cxr`` records of a MIMIC-sized layout (CSVs only), timed and measured in a child process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from harness.bench.fixtures import write_mimic_tables
from harness.bench.profiles import TARGETS, BenchProfile
from harness.bench.report import Figure
from harness.storage import REPOSITORY

# VmHWM, not ru_maxrss: Linux carries ru_maxrss across execve, so a child would report this (torch-sized)
# parent's high-water mark; VmHWM belongs to the child's own address space.
_CHILD = """
import json, re, sys, time
t0 = time.perf_counter()
from harness.data.mimic_cxr import ADAPTER
t1 = time.perf_counter()
records = ADAPTER.load(sys.argv[1], check_files=False, data_source="synthetic")
t2 = time.perf_counter()
frame = records.frame
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "rows": len(frame),
                  "studies": int(frame["study_id"].nunique()), "patients": int(frame["patient_id"].nunique()),
                  "skipped": records.skipped,
                  "peak_kb": int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1))}))
"""


def bench_records(profile: BenchProfile, work: Path) -> tuple[Figure, str]:
    """P4: ``mimic-cxr`` records of a MIMIC-sized layout, timed and measured in a child process."""
    root = work / "p4-mimic"
    counts = write_mimic_tables(root, scale=profile.p4_scale)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPOSITORY),
                                                         os.environ.get("PYTHONPATH", "")])}
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", _CHILD, str(root)], capture_output=True, text=True, env=env,
                         check=False)
    wall = time.perf_counter() - t
    if out.returncode != 0:
        raise RuntimeError(f"P4 child failed: {out.stderr[-2000:]}")
    child = json.loads(out.stdout.strip().splitlines()[-1])
    peak_gb = child["peak_kb"] / 1024**2
    holds = child["load_s"] <= TARGETS["P4_s"] and peak_gb <= TARGETS["P4_gb"]
    fig = Figure("P4", "MIMIC-sized records (load, peak RSS)", f"{child['load_s']:.1f} s, {peak_gb:.2f} GB", None,
                 f"<= {TARGETS['P4_s']:g} s, <= {TARGETS['P4_gb']:g} GB", holds)
    scale_note = "" if profile.p4_scale == 1 else f" (quick: {profile.p4_scale:g} of MIMIC's size)"
    text = (f"Layout{scale_note}: {counts['images']:,} images, {counts['studies']:,} studies, "
            f"{counts['patients']:,} patients in `mimic-cxr-2.0.0-{{metadata,split,chexpert}}.csv.gz` (written by the "
            f"bench, vectorised); no JPGs, NO reports (absent: every image is counted as `report missing`), no "
            f"MIMIC-IV. `MimicCxrAdapter.load(check_files=False)` in a fresh interpreter: {child['load_s']:.2f} s "
            f"(+ {child['import_s']:.2f} s importing pandas and the harness; child wall {wall:.1f} s), peak RSS "
            f"{peak_gb:.2f} GB (VmHWM, interpreter included); {child['rows']:,} rows, {child['studies']:,} "
            f"studies, skipped {child['skipped']}.")
    return fig, text
