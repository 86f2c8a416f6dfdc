"""What one leaderboard cell states: the mean of a metric over a row's runs and its 95 % interval.

The interval is over seeds when the seeds vary (a Student-t interval of the mean, ``n`` seeds
stated), else the run's own patient-level bootstrap CI (the record's ``ci``; of the lowest seed
when several identical runs repeat it): three identical runs are one measurement, and their
spread of 0 is no interval. A value that is NaN in the record is not measurable (``n/m``); a
cell whose runs are all NaN is ``n/m``. The label-efficiency pictures draw the same intervals
(``harness.reporting.pictures``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Cell:
    """A row's metric: its mean over the measurable runs and the 95 % interval, with where it comes from."""

    mean: float  # NaN: no run measured it
    lo: float | None
    hi: float | None
    kind: str  # "t" (over seeds), "bootstrap" (the run's CI), "none" (no interval), "n/m" (not measurable)
    runs: int  # the row's runs in this cell
    measurable: int  # those with a value

    @property
    def interval(self) -> tuple[float, float]:
        """``(lo, hi)``, or ``(mean, mean)`` when there is no interval."""
        return (self.lo, self.hi) if self.lo is not None and self.hi is not None else (self.mean, self.mean)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def cell_of(values: list[float], cis: list[Any]) -> Cell:
    """The cell of one metric of one row (see the module docstring).

    Args:
        values: the metric per run, ordered by seed (NaN: not measurable in that run).
        cis: per run, the record's ``[lo, hi]`` for the metric, or None.

    Returns:
        The mean over the measurable runs and its interval.
    """
    runs = [(float(v), ci) for v, ci in zip(values, cis, strict=True) if _finite(v)]
    if not runs:
        return Cell(float("nan"), None, None, "n/m", len(values), 0)
    arr = np.array([v for v, _ in runs])
    mean = float(arr.mean())
    if len(arr) >= 2 and np.ptp(arr) > 0:
        half = float(stats.t.ppf(0.975, len(arr) - 1) * arr.std(ddof=1) / math.sqrt(len(arr)))
        return Cell(mean, mean - half, mean + half, "t", len(values), len(arr))
    for _, ci in runs:  # identical runs (or one): the run's bootstrap CI, the lowest seed's
        if isinstance(ci, list | tuple) and len(ci) == 2 and all(_finite(x) for x in ci):
            return Cell(mean, float(ci[0]), float(ci[1]), "bootstrap", len(values), len(arr))
    return Cell(mean, None, None, "none", len(values), len(arr))


def format_cell(cell: Cell) -> str:
    """``0.7200 [0.7050, 0.7350] (t, 3 seeds)``, ``... (bootstrap)``, ``0.7200 (no CI)`` or ``n/m``."""
    if cell.kind == "n/m":
        return "n/m"
    same = f", {cell.measurable} identical runs" if cell.measurable > 1 else ""
    if cell.kind == "t":
        text = f"{cell.mean:.4f} [{cell.lo:.4f}, {cell.hi:.4f}] (t, {cell.measurable} seeds)"
    elif cell.kind == "bootstrap":
        text = f"{cell.mean:.4f} [{cell.lo:.4f}, {cell.hi:.4f}] (bootstrap{same})"
    else:
        text = f"{cell.mean:.4f} (no CI{same})"
    if cell.measurable < cell.runs:
        text += f"; n/m in {cell.runs - cell.measurable} of {cell.runs} runs"
    return text
