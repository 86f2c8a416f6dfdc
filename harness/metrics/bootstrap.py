"""Patient-level bootstrap: percentile CIs of any metric, and paired differences of two methods.

Bootstraps resample PATIENTS (``groups``) with replacement: images of one patient are
correlated, so resampling images would give too-narrow CIs. A metric that carries a
``weighted_bootstrap`` attribute (the AUROCs, ``harness.metrics.classification``; the
per-unit means, ``harness.metrics.paired``) is evaluated for every resample at once; any other
``f(*arrays) -> float`` is evaluated on each materialised resample. Resamples where the
metric is undefined (NaN or ``ValueError``) are skipped and counted.

Fewer than ``MIN_PATIENTS`` patients give no interval: G patients have only C(2G-1, G) distinct
resamples (35 for 4 patients, 126 for 5), and the 2.5 % and 97.5 % percentiles of fewer than 40
distinct values are not an interval but the extremes. Such a CI is NaN with a ``reason`` (the
protocols report it as not measurable), never a number. Five patients is the floor, not a
recommendation: with 10 patients a nominal 95 % percentile interval covers about 90 %.

The paired comparison of two methods draws the same patients for both and recomputes both
metrics on each resample (``paired_bootstrap``; ``paired_draws`` for any row-aligned inputs);
several runs of the same pair (seeds) are combined by averaging their per-resample differences
(``paired_from_draws``): the interval of the seed-averaged difference, from test-set resampling.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

MIN_PATIENTS = 5  # fewer patients than this: no interval (see the module docstring)


@dataclass(frozen=True)
class BootstrapCI:
    """A percentile bootstrap interval. Unpacks as ``lo, hi``."""

    estimate: float  # the metric on the full data
    lo: float
    hi: float
    n_resamples: int  # resamples with a defined metric (used for the interval)
    n_skipped: int  # resamples where the metric was undefined (NaN or ValueError)
    reason: str = ""  # why there is no interval (lo, hi NaN): too few patients, no defined resample

    def __iter__(self) -> Iterator[float]:
        return iter((self.lo, self.hi))


@dataclass(frozen=True)
class PairedComparison:
    """``metric(a) - metric(b)`` with a bootstrap CI and p-value. Unpacks as ``delta, lo, hi, p``."""

    delta: float
    lo: float
    hi: float
    p_value: float  # two-sided: 2 * min(P(delta* <= 0), P(delta* >= 0)), capped at 1
    n_resamples: int
    n_skipped: int
    reason: str = ""  # why there is no interval (lo, hi NaN)

    def excludes_zero(self) -> bool:
        """Whether the interval lies wholly above or below 0 (False when there is none)."""
        return bool(self.lo > 0 or self.hi < 0)

    def __iter__(self) -> Iterator[float]:
        return iter((self.delta, self.lo, self.hi, self.p_value))


def n_patients(groups: np.ndarray) -> int:
    """The number of distinct patients in ``groups``."""
    return int(len(np.unique(np.asarray(groups).astype(str))))


def too_few_patients(groups: np.ndarray) -> str:
    """Why ``groups`` is too small for a bootstrap interval (``MIN_PATIENTS``), or ''."""
    count = n_patients(groups)
    return (f"not measurable: {count} patient(s), a bootstrap interval needs at least {MIN_PATIENTS}"
            if count < MIN_PATIENTS else "")


def _group_draws(groups: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Patient codes per row, and ``n`` resamples of patients with replacement (``(n, G)`` codes)."""
    _, codes = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    n_groups = int(codes.max()) + 1
    draws = np.random.default_rng(seed).integers(0, n_groups, size=(n, n_groups))
    return codes, draws


def _rows_of_draws(codes: np.ndarray, draws: np.ndarray) -> Iterator[np.ndarray]:
    """Row indices of every drawn patient (with multiplicity), one array per resample."""
    order = np.argsort(codes, kind="stable")  # rows grouped by patient
    counts = np.bincount(codes)
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    for draw in draws:
        lengths = counts[draw]
        offsets = np.repeat(starts[draw] - np.r_[0, np.cumsum(lengths)[:-1]], lengths)
        yield order[np.arange(lengths.sum()) + offsets]


def value_or_nan(metric_fn: Callable[..., float], *arrays: np.ndarray) -> float:
    """``metric_fn(*arrays)`` as a float, NaN where it is undefined (a ``ValueError``); warnings silenced.

    Args:
        metric_fn: ``f(*arrays) -> float``.
        arrays: its arguments.

    Returns:
        The value, or NaN: the bootstraps and ``score_classification`` count such values, never crash on them.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = metric_fn(*arrays)
    except ValueError:
        return float("nan")
    return float(value)


def _percentiles(values: np.ndarray, alpha: float) -> tuple[float, float]:
    if len(values) == 0:
        return float("nan"), float("nan")
    lo, hi = np.percentile(values, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)


_FAST_CHUNK_ELEMENTS = 4_000_000  # resamples x rows x labels per weighted-AUROC chunk (~32 MB per array)


def bootstrap_values(metric_fn: Callable[..., float], *arrays: np.ndarray, groups: np.ndarray, n: int = 1000,
                     seed: int = 0) -> np.ndarray:
    """``(n,)`` metric values on patient resamples (NaN where undefined), the same draws for a seed.

    Metrics that carry a ``weighted_bootstrap`` attribute (the AUROCs) are
    evaluated for all resamples at once from per-row multiplicities, which is
    exactly equivalent and much faster than materialising each resample.
    """
    arrays = tuple(np.asarray(a) for a in arrays)
    if any(len(a) != len(groups) for a in arrays):
        raise ValueError("every array needs one row per entry of groups")
    codes, draws = _group_draws(groups, n, seed)
    fast = getattr(metric_fn, "weighted_bootstrap", None)
    if fast is not None:
        counts = np.stack([np.bincount(d, minlength=codes.max() + 1) for d in draws])  # (n, G)
        step = max(1, _FAST_CHUNK_ELEMENTS // max(1, arrays[0].size))  # bounded memory on big test sets
        return np.concatenate([fast(counts[i:i + step][:, codes], *arrays) for i in range(0, n, step)])
    return np.array([value_or_nan(metric_fn, *(a[rows] for a in arrays)) for rows in _rows_of_draws(codes, draws)])


def bootstrap_ci(metric_fn: Callable[..., float], *arrays: np.ndarray, groups: np.ndarray, n: int = 1000,
                 seed: int = 0, alpha: float = 0.05) -> BootstrapCI:
    """95 % (``1 - alpha``) percentile CI of ``metric_fn(*arrays)`` resampling PATIENTS.

    Args:
        metric_fn: ``f(*arrays) -> float``; NaN or ``ValueError`` means undefined.
        arrays: row-aligned arrays (e.g. ``y``, ``s``).
        groups: ``(N,)`` patient id per row; whole patients are drawn with replacement.
        n: number of resamples. seed: fixes the draws (same seed, same interval).

    Resamples where the metric is undefined (e.g. a resample without positives)
    are skipped and counted in ``n_skipped``. Fewer than ``MIN_PATIENTS`` patients, or no
    resample with a defined metric, give ``lo = hi = NaN`` and a ``reason``.
    """
    estimate = value_or_nan(metric_fn, *arrays)
    small = too_few_patients(groups)
    if small:
        return BootstrapCI(estimate, float("nan"), float("nan"), 0, n, small)
    values = bootstrap_values(metric_fn, *arrays, groups=np.asarray(groups), n=n, seed=seed)
    ok = values[~np.isnan(values)]
    lo, hi = _percentiles(ok, alpha)
    reason = "" if len(ok) else "not measurable: the metric is undefined on every resample"
    return BootstrapCI(estimate, lo, hi, int(len(ok)), int(n - len(ok)), reason)


def paired_draws(metric_fn: Callable[..., float], a: tuple[np.ndarray, ...], b: tuple[np.ndarray, ...],
                 groups: np.ndarray, n: int = 1000, seed: int = 0) -> tuple[float, np.ndarray]:
    """``metric_fn(*a) - metric_fn(*b)`` and its ``(n,)`` values on the same patient resamples.

    Args:
        metric_fn: ``f(*arrays) -> float``.
        a: method A's row-aligned arrays (e.g. ``(y, s_a)``); ``b``: method B's, the same rows.
        groups: ``(N,)`` patient per row, the same for both.
        n: resamples. seed: fixes the draws (the same seed draws the same patients for any metric).

    Returns:
        The difference on the full data, and per resample (NaN where either metric is undefined).
    """
    groups = np.asarray(groups)
    delta = value_or_nan(metric_fn, *a) - value_or_nan(metric_fn, *b)
    return delta, (bootstrap_values(metric_fn, *a, groups=groups, n=n, seed=seed)
                   - bootstrap_values(metric_fn, *b, groups=groups, n=n, seed=seed))


def paired_from_draws(deltas: list[float], draws: list[np.ndarray], alpha: float = 0.05) -> PairedComparison:
    """The paired comparison of one or more runs (seeds) of the same two methods.

    Args:
        deltas: per run, the difference on the full test set.
        draws: per run, the ``(n,)`` differences on patient resamples (``paired_draws``), every run
            with the same resample seed.
        alpha: ``1 - alpha`` is the coverage.

    Returns:
        The mean difference over runs, the percentile interval of the run-averaged per-resample
        differences, and a two-sided bootstrap p-value; NaN with a ``reason`` when no resample is defined.
    """
    if not deltas:
        raise ValueError("paired_from_draws needs at least one run")
    mean = np.mean(np.stack([np.asarray(d, dtype=np.float64) for d in draws]), axis=0)
    d = mean[~np.isnan(mean)]
    lo, hi = _percentiles(d, alpha)
    p = min(1.0, 2 * min(np.mean(d <= 0), np.mean(d >= 0))) if len(d) else float("nan")
    reason = "" if len(d) else "not measurable: the difference is undefined on every resample"
    return PairedComparison(float(np.mean(deltas)), lo, hi, float(p), int(len(d)), int(len(mean) - len(d)), reason)


def paired_bootstrap(metric_fn: Callable[..., float], y: np.ndarray, s_a: np.ndarray, s_b: np.ndarray,
                     groups: np.ndarray, n: int = 1000, seed: int = 0, alpha: float = 0.05) -> PairedComparison:
    """Compare methods A and B on the same test set with the same patient resamples.

    Returns ``delta = metric(y, s_a) - metric(y, s_b)``, its percentile CI and a
    two-sided bootstrap p-value for "no difference" (NaN with a ``reason`` for fewer than
    ``MIN_PATIENTS`` patients).
    """
    small = too_few_patients(groups)
    if small:
        delta = value_or_nan(metric_fn, y, s_a) - value_or_nan(metric_fn, y, s_b)
        return PairedComparison(float(delta), float("nan"), float("nan"), float("nan"), 0, n, small)
    delta, draws = paired_draws(metric_fn, (y, s_a), (y, s_b), groups, n=n, seed=seed)
    return paired_from_draws([delta], [draws], alpha)
