"""Measuring: best-of wall times, alternating pairs, peak resident memory, the machine.

Each timed pair takes the best of ``repeats`` alternating runs (the least disturbed by other
processes), so both sides of a ratio see the same background load.
"""

from __future__ import annotations

import contextlib
import gc
import os
import platform
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def best_of(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """The smallest wall time of ``repeats`` calls (the least disturbed run), and the last result."""
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def alternating_best(first: Callable[[], Any], second: Callable[[], Any], rounds: int,
                     second_repeats: int = 1) -> tuple[float, float]:
    """Best wall time of each of two callables, run in alternation so both see the same background load."""
    t_first = t_second = float("inf")
    for _ in range(rounds):
        t_first = min(t_first, best_of(first, 1)[0])
        t_second = min(t_second, best_of(second, second_repeats)[0])
    return t_first, t_second


def _status_kb(field_name: str) -> int | None:
    """A ``kB`` field of /proc/self/status, or None where the file or the field is missing."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{field_name}:\s+(\d+) kB", text, re.M)
    return int(match.group(1)) if match else None


@contextlib.contextmanager
def peak_rss() -> Iterator[dict[str, float]]:
    """Peak resident memory of this process during the block (MB), by resetting Linux's VmHWM.

    ``box["peak_mb"]`` is the whole process (interpreter, torch, data); ``box["added_mb"]``
    the part above the resident size when the block started. Garbage is collected before
    the start is read: otherwise a cyclic-GC pass that happens to run inside the block frees
    earlier garbage there, lowers the resident size under the start value and hides the
    block's own allocation (``added_mb`` 0 for a 64 MB array behind 200 MB of freed cycles).
    Without a resettable VmHWM (not Linux, /proc/self/clear_refs not writable or ignored, or a
    status file without VmRSS / VmHWM, as some sandboxes give) both are NaN, never a
    plausible-looking 0.
    """
    box = {"peak_mb": float("nan"), "added_mb": float("nan")}
    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        before, reset = _status_kb("VmRSS"), _status_kb("VmHWM")
    except OSError:
        before = reset = None
    if before is None or reset is None or reset > before + 8 * 1024:
        before = None  # no reset happened (a write that was accepted and ignored): the mark is the lifetime's
    try:
        yield box
    finally:
        if before is not None and (peak := _status_kb("VmHWM")) is not None:
            box.update(peak_mb=peak / 1024, added_mb=max(0, peak - before) / 1024)


def machine() -> dict[str, Any]:
    """CPU model, cores (all and usable), torch threads and version, Python, load average: the report's header."""
    import torch

    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")),
               platform.processor() or "unknown")
    return {"cpu": cpu, "cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version(),
            "load": os.getloadavg()}
