"""Patient-level bootstrap: percentile CIs of any metric, and paired differences of two methods.

Bootstraps resample PATIENTS (``groups``) with replacement: images of one patient are
correlated, so resampling images would give too-narrow CIs. A metric that carries a
``weighted_bootstrap`` attribute (the AUROCs, ``harness.metrics.classification``) is
evaluated for every resample at once; any other ``f(*arrays) -> float`` is evaluated on
each materialised resample. Resamples where the metric is undefined (NaN or
``ValueError``) are skipped and counted.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BootstrapCI:
    """A percentile bootstrap interval. Unpacks as ``lo, hi``."""

    estimate: float  # the metric on the full data
    lo: float
    hi: float
    n_resamples: int  # resamples with a defined metric (used for the interval)
    n_skipped: int  # resamples where the metric was undefined (NaN or ValueError)

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

    def __iter__(self) -> Iterator[float]:
        return iter((self.delta, self.lo, self.hi, self.p_value))


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
    are skipped and counted in ``n_skipped``.
    """
    estimate = value_or_nan(metric_fn, *arrays)
    values = bootstrap_values(metric_fn, *arrays, groups=np.asarray(groups), n=n, seed=seed)
    ok = values[~np.isnan(values)]
    lo, hi = _percentiles(ok, alpha)
    return BootstrapCI(estimate, lo, hi, int(len(ok)), int(n - len(ok)))


def paired_bootstrap(metric_fn: Callable[..., float], y: np.ndarray, s_a: np.ndarray, s_b: np.ndarray,
                     groups: np.ndarray, n: int = 1000, seed: int = 0, alpha: float = 0.05) -> PairedComparison:
    """Compare methods A and B on the same test set with the same patient resamples.

    Returns ``delta = metric(y, s_a) - metric(y, s_b)``, its percentile CI and a
    two-sided bootstrap p-value for "no difference".
    """
    groups = np.asarray(groups)
    delta = value_or_nan(metric_fn, y, s_a) - value_or_nan(metric_fn, y, s_b)
    a = bootstrap_values(metric_fn, y, s_a, groups=groups, n=n, seed=seed)
    b = bootstrap_values(metric_fn, y, s_b, groups=groups, n=n, seed=seed)
    d = (a - b)[~np.isnan(a - b)]
    lo, hi = _percentiles(d, alpha)
    p = min(1.0, 2 * min(np.mean(d <= 0), np.mean(d >= 0))) if len(d) else float("nan")
    return PairedComparison(float(delta), lo, hi, float(p), int(len(d)), int(n - len(d)))
