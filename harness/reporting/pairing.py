"""Paired differences between leaderboard rows, from the predictions every run keeps.

Two rows of one table are runs on the same data and test split, so their test units (images,
queries, cases) are the same: a PAIRED bootstrap draws the same patients for both and recomputes
both rows' main metric on every resample (``harness.metrics.bootstrap.paired_draws``), which
removes the test-set noise both rows share. Per seed both rows have, the difference on the full
test set and on ``RESAMPLES`` patient resamples (resample seed ``SEED``, so every row sees the
same draws); over several seeds the per-resample differences are averaged
(``paired_from_draws``): the interval of the seed-averaged difference, from test-set resampling.

The inputs come from each record's predictions file (``harness.metrics.paired``). A row without
them (a record from before they were kept, a file that is gone), seeds the two rows do not
share, test units that differ, or too few patients give no difference, and ``Pairing.compare``
says which, in a few words the table shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.metrics.bootstrap import (
    PairedComparison,
    bootstrap_values,
    paired_from_draws,
    too_few_patients,
    value_or_nan,
)
from harness.metrics.paired import metric_inputs, same_units
from harness.results import load_predictions

RESAMPLES = 1000
SEED = 0


@dataclass
class RunDraws:
    """One run's main metric on the full test set and on every patient resample."""

    estimate: float
    draws: np.ndarray  # (RESAMPLES,)
    units: dict[str, np.ndarray]  # groups / strata / targets: what must match for two runs to pair


class Pairing:
    """The paired comparisons of one table's rows (one data, one label fraction).

    Args:
        results_dir: where the records (and their predictions files) are; None: no predictions.
        metric: the main metric.
        rows: row name -> its records (one per seed).
    """

    def __init__(self, results_dir: str | Path | None, metric: str, rows: dict[str, list[dict[str, Any]]]) -> None:
        self.metric = metric
        self.runs: dict[str, dict[int, RunDraws | str]] = {
            name: {int(r["seed"]): self._draws(results_dir, r) for r in recs} for name, recs in rows.items()}

    def _draws(self, results_dir: str | Path | None, rec: dict[str, Any]) -> RunDraws | str:
        predictions = load_predictions(results_dir, rec) if results_dir is not None else None
        if predictions is None:
            return "no predictions (older record)" if not rec.get("predictions_file") else "predictions file missing"
        try:
            fn, arrays = metric_inputs(predictions, self.metric)
        except LookupError:
            return "no per-unit values"
        groups = predictions["groups"]
        if too_few_patients(groups):
            return "too few patients"
        estimate = value_or_nan(fn, *arrays)
        draws = bootstrap_values(fn, *arrays, groups=groups, n=RESAMPLES, seed=SEED)
        units = {k: predictions[k] for k in ("groups", "strata", "targets") if k in predictions}
        return RunDraws(estimate, draws, units)

    def compare(self, a: str, b: str) -> PairedComparison | str:
        """``a - b`` over the seeds both rows have, or why there is none (a few words).

        Args:
            a: a row name; b: the row it is compared with.
        """
        runs_a, runs_b = self.runs.get(a, {}), self.runs.get(b, {})
        for name, runs in ((a, runs_a), (b, runs_b)):
            usable = [r for r in runs.values() if isinstance(r, RunDraws)]
            if not usable:
                why = next((r for r in runs.values() if isinstance(r, str)), "no runs")
                return f"{why}" if name == a else f"{b}: {why}"
        shared = sorted(s for s in set(runs_a) & set(runs_b)
                        if isinstance(runs_a[s], RunDraws) and isinstance(runs_b[s], RunDraws))
        if not shared:
            return f"no seed in common with {b}"
        pairs = [(runs_a[s], runs_b[s]) for s in shared]
        if not all(same_units(x.units, y.units) for x, y in pairs):  # type: ignore[union-attr]
            return f"other test units than {b}"
        deltas = [x.estimate - y.estimate for x, y in pairs]  # type: ignore[union-attr]
        draws = [x.draws - y.draws for x, y in pairs]  # type: ignore[union-attr]
        result = paired_from_draws(deltas, draws)
        return result if not result.reason else "undefined on every resample"

    def seeds(self, a: str, b: str) -> int:
        """How many seeds ``compare(a, b)`` averages over."""
        runs_a, runs_b = self.runs.get(a, {}), self.runs.get(b, {})
        return sum(1 for s in set(runs_a) & set(runs_b)
                   if isinstance(runs_a[s], RunDraws) and isinstance(runs_b[s], RunDraws))
