"""Metrics: pure functions on numpy arrays, plus patient-level bootstrap CIs.

Every function here takes arrays and returns numbers; none of them knows about
tasks, encoders or files. Each one is checked against its reference
implementation in ``tests/test_metrics.py`` (scikit-learn for the
classification metrics, scikit-image for PSNR / SSIM).

Conventions
-----------
- Classification: ``y`` is ``(N, L)`` float targets (1 / 0, **NaN = ignored for
  that label**, as ``harness.cohort.apply_label_policy`` produces), ``s`` is
  ``(N, L)`` scores (any monotone score: logits or probabilities). 1-D inputs are
  one label.
- A per-label metric is NaN where the label lacks one of the two classes after
  masking; the macro averages skip such labels (``auroc_macro(...,
  return_skipped=True)`` says which).
- Retrieval: ``ranks`` are 1-based ranks of the matching item per query
  (``ranks_from_similarity``); ``relevance`` is a ``(Q, N)`` bool matrix of
  relevance in ranked order (``relevance_in_rank_order``).
- Images: ``psnr`` / ``ssim`` of 2-D grey images (a leading batch axis gives
  one value per image).
- Bootstraps resample PATIENTS (``groups``) with replacement: images of one
  patient are correlated, so resampling images would give too-narrow CIs.

Example::

    auc = auroc_macro(y_test, s_test)
    ci = bootstrap_ci(auroc_macro, y_test, s_test, groups=patient_ids, n=1000, seed=0)
    lo, hi = ci                                   # also ci.estimate, ci.n_skipped
    delta, lo, hi, p = paired_bootstrap(auroc_macro, y_test, s_a, s_b, patient_ids, n=1000, seed=0)
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.stats import rankdata

# --------------------------------------------------------------------------- classification


def _as_2d(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=np.float64)
    s = np.asarray(s, dtype=np.float64)
    if y.ndim == 1:
        y, s = y[:, None], s.reshape(-1, 1)
    if y.shape != s.shape or y.ndim != 2:
        raise ValueError(f"targets {y.shape} and scores {s.shape} must be the same (N, L) shape")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or inf")
    bad = ~np.isnan(y) & (y != 0) & (y != 1)
    if bad.any():
        raise ValueError(f"targets must be 1, 0 or NaN; found {y[bad][0]!r}")
    return y, s


def _auroc_1d(y: np.ndarray, s: np.ndarray) -> float:
    """Mann-Whitney U / (n_pos * n_neg) with tied scores averaged (= sklearn roc_auc_score)."""
    pos = y == 1
    n_pos = int(pos.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)  # ties get their average rank: a tie counts one half
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auroc_per_label(y: np.ndarray, s: np.ndarray) -> np.ndarray:
    """``(L,)`` ROC AUC per label; NaN targets are ignored, NaN where a label has one class."""
    y, s = _as_2d(y, s)
    out = np.empty(y.shape[1])
    for j in range(y.shape[1]):
        keep = ~np.isnan(y[:, j])
        out[j] = _auroc_1d(y[keep, j], s[keep, j])
    return out


def _macro(per_label: np.ndarray, return_skipped: bool) -> Any:
    skipped = [int(j) for j in np.flatnonzero(np.isnan(per_label))]
    value = float(np.mean(per_label[~np.isnan(per_label)])) if len(skipped) < len(per_label) else float("nan")
    return (value, skipped) if return_skipped else value


def auroc_macro(y: np.ndarray, s: np.ndarray, return_skipped: bool = False) -> Any:
    """Mean per-label ROC AUC over labels with both classes present (NaN if none).

    With ``return_skipped=True`` returns ``(value, skipped_label_indices)``.
    """
    return _macro(auroc_per_label(y, s), return_skipped)


def auroc_micro(y: np.ndarray, s: np.ndarray) -> float:
    """ROC AUC of the flattened ``(N * L)`` predictions (NaN targets dropped)."""
    y, s = _as_2d(y, s)
    keep = ~np.isnan(y)
    return _auroc_1d(y[keep], s[keep])


def _average_precision_1d(y: np.ndarray, s: np.ndarray) -> float:
    """sum_n (R_n - R_{n-1}) P_n over distinct thresholds (= sklearn average_precision_score)."""
    n_pos = int((y == 1).sum())
    if n_pos == 0 or n_pos == len(y):
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s_sorted)), len(s_sorted) - 1]  # one threshold per distinct score
    tps = np.cumsum(y_sorted)[last_of_tie]
    precision = tps / (last_of_tie + 1)
    recall = tps / n_pos
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def auprc_per_label(y: np.ndarray, s: np.ndarray) -> np.ndarray:
    """``(L,)`` average precision per label; NaN where a label has one class."""
    y, s = _as_2d(y, s)
    out = np.empty(y.shape[1])
    for j in range(y.shape[1]):
        keep = ~np.isnan(y[:, j])
        out[j] = _average_precision_1d(y[keep, j], s[keep, j])
    return out


def auprc_macro(y: np.ndarray, s: np.ndarray, return_skipped: bool = False) -> Any:
    """Mean average precision over labels with both classes present (sklearn's AP per label)."""
    return _macro(auprc_per_label(y, s), return_skipped)


def _f1_curve(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Candidate thresholds (distinct scores, descending) and F1 of ``s >= t`` at each."""
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s_sorted)), len(s_sorted) - 1]
    tp = np.cumsum(y_sorted)[last_of_tie]
    predicted = last_of_tie + 1
    f1 = 2 * tp / (predicted + y.sum())  # 2TP / (2TP + FP + FN)
    return s_sorted[last_of_tie], f1


def choose_thresholds(y_val: np.ndarray, s_val: np.ndarray) -> np.ndarray:
    """``(L,)`` thresholds maximising F1 of ``s >= t`` per label on VALIDATION data.

    The candidates are the distinct validation scores; on ties of F1 the highest
    threshold wins. A label without a validation positive gets ``+inf`` (predict
    negative: no threshold can be justified).
    """
    y, s = _as_2d(y_val, s_val)
    out = np.full(y.shape[1], np.inf)
    for j in range(y.shape[1]):
        keep = ~np.isnan(y[:, j])
        if (y[keep, j] == 1).any():
            thresholds, f1 = _f1_curve(y[keep, j], s[keep, j])
            out[j] = thresholds[int(np.argmax(f1))]
    return out


def f1_per_label(y: np.ndarray, s: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """``(L,)`` F1 of ``s >= thresholds``; NaN where a label has no positive target."""
    y, s = _as_2d(y, s)
    thresholds = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (y.shape[1],))
    valid = ~np.isnan(y)
    pred = (s >= thresholds) & valid
    pos = (y == 1) & valid
    tp = (pred & pos).sum(0)
    denom = pred.sum(0) + pos.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pos.sum(0) > 0, 2 * tp / denom, np.nan)


def f1_at(y_test: np.ndarray, s_test: np.ndarray, thresholds: np.ndarray, return_skipped: bool = False) -> Any:
    """Macro F1 at fixed (validation-chosen) thresholds over labels with a positive target.

    Equals ``sklearn.metrics.f1_score(y, s >= t, average="macro")`` on those labels.
    """
    return _macro(f1_per_label(y_test, s_test, thresholds), return_skipped)


# --------------------------------------------------------------------------- retrieval


def ranks_from_similarity(similarity: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """1-based rank of each query's matching item; ties count against the query.

    ``similarity`` is ``(Q, N)``, ``targets`` ``(Q,)`` the index of each query's
    match. Rank = number of items scoring >= the match (pessimistic), so a
    constant encoder ranks every match last instead of first.
    """
    similarity = np.asarray(similarity)
    targets = np.asarray(targets, dtype=np.int64)
    true = similarity[np.arange(len(targets)), targets][:, None]
    return (similarity >= true).sum(1).astype(np.int64)


def relevance_in_rank_order(similarity: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """``(Q, N)`` bool: ``relevant`` reordered by descending similarity per query (stable)."""
    order = np.argsort(-np.asarray(similarity), axis=1, kind="stable")
    return np.take_along_axis(np.asarray(relevant, dtype=bool), order, axis=1)


def recall_at_k(ranks: np.ndarray, k: int) -> float:
    """Fraction of queries whose match is in the top ``k`` (image-text retrieval R@K)."""
    return float(np.mean(np.asarray(ranks) <= k))


def median_rank(ranks: np.ndarray) -> float:
    """Median 1-based rank of the match (lower is better)."""
    return float(np.median(np.asarray(ranks)))


def hit_at_k(relevance: np.ndarray, k: int) -> float:
    """Fraction of queries with at least one relevant item in the top ``k``."""
    return float(np.mean(np.asarray(relevance, dtype=bool)[:, :k].any(1)))


def precision_at_k(relevance: np.ndarray, k: int) -> float:
    """Mean over queries of the fraction of the top ``k`` that is relevant."""
    return float(np.mean(np.asarray(relevance, dtype=bool)[:, :k].mean(1)))


# --------------------------------------------------------------------------- images


def _image_pair(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim not in (2, 3):
        raise ValueError(f"images must share an (H, W) or (B, H, W) shape, got {x.shape} and {y.shape}")
    return x, y


def psnr(image_true: np.ndarray, image_test: np.ndarray, data_range: float) -> Any:
    """Peak signal-to-noise ratio in dB: ``10 log10(data_range^2 / MSE)``.

    ``(H, W)`` -> float (= ``skimage.metrics.peak_signal_noise_ratio``);
    ``(B, H, W)`` -> ``(B,)`` one value per image. Identical images give ``inf``.
    """
    x, y = _image_pair(image_true, image_test)
    mse = ((x - y) ** 2).mean(axis=(-2, -1))
    with np.errstate(divide="ignore"):
        out = 10 * np.log10(data_range**2 / mse)
    return float(out) if x.ndim == 2 else out


def ssim_map(image_true: np.ndarray, image_test: np.ndarray, data_range: float, *, win_size: int | None = 7,
             gaussian_weights: bool = False, sigma: float = 1.5, use_sample_covariance: bool = True,
             k1: float = 0.01, k2: float = 0.03) -> np.ndarray:
    """The local SSIM map, same shape as the input (= ``structural_similarity(..., full=True)[1]``).

    Windows at the border see reflect-padded pixels, as in scikit-image; ``ssim``
    crops that border before averaging. Arguments as in ``ssim``.
    """
    x, y = _image_pair(image_true, image_test)
    if win_size is None:
        win_size = 2 * int(3.5 * sigma + 0.5) + 1 if gaussian_weights else 7
    if win_size % 2 == 0 or win_size > min(x.shape[-2:]):
        raise ValueError(f"win_size must be odd and <= the image side, got {win_size}")
    if gaussian_weights:
        sig = (sigma, sigma) if x.ndim == 2 else (0.0, sigma, sigma)
        filt = functools.partial(ndimage.gaussian_filter, sigma=sig, truncate=3.5)
    else:
        filt = functools.partial(ndimage.uniform_filter,
                                 size=(win_size, win_size) if x.ndim == 2 else (1, win_size, win_size))
    n_points = win_size**2
    cov_norm = n_points / (n_points - 1) if use_sample_covariance else 1.0
    ux, uy = filt(x), filt(y)
    vx = cov_norm * (filt(x * x) - ux * ux)
    vy = cov_norm * (filt(y * y) - uy * uy)
    vxy = cov_norm * (filt(x * y) - ux * uy)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    return ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))


def _resolved_win(win_size: int | None, gaussian_weights: bool, sigma: float) -> int:
    return win_size if win_size is not None else (2 * int(3.5 * sigma + 0.5) + 1 if gaussian_weights else 7)


def ssim(image_true: np.ndarray, image_test: np.ndarray, data_range: float, *, win_size: int | None = 7,
         gaussian_weights: bool = False, sigma: float = 1.5, use_sample_covariance: bool = True,
         k1: float = 0.01, k2: float = 0.03) -> Any:
    """Mean structural similarity (Wang et al. 2004), as ``skimage.metrics.structural_similarity``.

    Same defaults as scikit-image (7x7 uniform window, sample covariance,
    reflect padding, border of ``(win_size - 1) // 2`` cropped before the mean).
    With ``gaussian_weights=True`` pass ``win_size=None`` to get scikit-image's
    11x11 window for ``sigma = 1.5``, and usually ``use_sample_covariance=False``
    (the paper's setting). ``(B, H, W)`` -> ``(B,)``.
    """
    s = ssim_map(image_true, image_test, data_range, win_size=win_size, gaussian_weights=gaussian_weights,
                 sigma=sigma, use_sample_covariance=use_sample_covariance, k1=k1, k2=k2)
    pad = (_resolved_win(win_size, gaussian_weights, sigma) - 1) // 2
    s = s[..., pad:s.shape[-2] - pad, pad:s.shape[-1] - pad]
    out = s.mean(axis=(-2, -1), dtype=np.float64)
    return float(out) if s.ndim == 2 else out


def pointing_game(heatmaps: np.ndarray, masks: np.ndarray) -> float:
    """Fraction of images whose heatmap maximum falls inside the ground-truth mask.

    ``heatmaps`` ``(B, H, W)`` float, ``masks`` ``(B, H, W)`` bool at the same
    resolution (first maximum on ties). Empty masks are an error: the hit is undefined.
    """
    heatmaps, masks = np.asarray(heatmaps), np.asarray(masks, dtype=bool)
    if heatmaps.shape != masks.shape or heatmaps.ndim != 3:
        raise ValueError(f"heatmaps {heatmaps.shape} and masks {masks.shape} must share a (B, H, W) shape")
    empty = ~masks.reshape(len(masks), -1).any(1)
    if empty.any():
        raise ValueError(f"{int(empty.sum())} empty ground-truth mask(s), first at index {int(np.argmax(empty))}")
    flat = heatmaps.reshape(len(heatmaps), -1).argmax(1)
    return float(masks.reshape(len(masks), -1)[np.arange(len(masks)), flat].mean())


# --------------------------------------------------------------------------- bootstrap


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


def _safe(metric_fn: Callable[..., float], *arrays: np.ndarray) -> float:
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
    return np.array([_safe(metric_fn, *(a[rows] for a in arrays)) for rows in _rows_of_draws(codes, draws)])


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
    estimate = _safe(metric_fn, *arrays)
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
    delta = _safe(metric_fn, y, s_a) - _safe(metric_fn, y, s_b)
    a = bootstrap_values(metric_fn, y, s_a, groups=groups, n=n, seed=seed)
    b = bootstrap_values(metric_fn, y, s_b, groups=groups, n=n, seed=seed)
    d = (a - b)[~np.isnan(a - b)]
    lo, hi = _percentiles(d, alpha)
    p = min(1.0, 2 * min(np.mean(d <= 0), np.mean(d >= 0))) if len(d) else float("nan")
    return PairedComparison(float(delta), lo, hi, float(p), int(len(d)), int(n - len(d)))


def _weighted_auroc(weights: np.ndarray, y: np.ndarray, s: np.ndarray) -> np.ndarray:
    """``(R, L)`` AUROC per resample and label, rows weighted by multiplicity ``weights`` ``(R, N)``.

    Weighted Mann-Whitney: each positive earns the weight of the negatives
    scored below it, plus half of those tied with it.
    """
    y, s = _as_2d(y, s)
    out = np.empty((len(weights), y.shape[1]))
    for j in range(y.shape[1]):
        keep = np.flatnonzero(~np.isnan(y[:, j]))
        order = keep[np.argsort(s[keep, j], kind="mergesort")]
        _, tie, tie_counts = np.unique(s[order, j], return_inverse=True, return_counts=True)
        starts = np.r_[0, np.cumsum(tie_counts)[:-1]]
        w = weights[:, order]  # (R, n) in ascending score order
        is_pos = y[order, j] == 1
        w_neg = np.where(is_pos, 0, w)
        neg_per_tie = np.add.reduceat(w_neg, starts, axis=1) if len(order) else w_neg  # (R, T)
        neg_below = np.cumsum(neg_per_tie, axis=1) - neg_per_tie
        credit = (neg_below + 0.5 * neg_per_tie)[:, tie]  # (R, n)
        w_pos = np.where(is_pos, w, 0)
        n_pos, n_neg = w_pos.sum(1), w_neg.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            auc = (w_pos * credit).sum(1) / (n_pos * n_neg)
        out[:, j] = np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)
    return out


def _weighted_auroc_macro(weights: np.ndarray, y: np.ndarray, s: np.ndarray) -> np.ndarray:
    per = _weighted_auroc(weights, y, s)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: undefined resample
        return np.nanmean(per, axis=1)


def _weighted_auroc_micro(weights: np.ndarray, y: np.ndarray, s: np.ndarray) -> np.ndarray:
    y, s = _as_2d(y, s)
    n_labels = y.shape[1]
    flat_w = np.repeat(weights, n_labels, axis=1)  # rows flattened label-fastest, like y.ravel()
    return _weighted_auroc(flat_w, y.reshape(-1), s.reshape(-1))[:, 0]


auroc_macro.weighted_bootstrap = _weighted_auroc_macro  # type: ignore[attr-defined]
auroc_micro.weighted_bootstrap = _weighted_auroc_micro  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- a classification report


@dataclass
class ClassificationScores:
    """What a classification protocol reports: metrics, their CIs, and per-label detail."""

    metrics: dict[str, float]
    ci: dict[str, tuple[float, float]]
    details: dict[str, Any]


def score_classification(names: tuple[str, ...], val: tuple[np.ndarray, np.ndarray],
                         test: tuple[np.ndarray, np.ndarray], groups: np.ndarray, *,
                         ci_metrics: tuple[str, ...] = (), n_boot: int = 1000, seed: int = 0) -> ClassificationScores:
    """The classification metrics ``names`` on ``test = (y, s)``; F1 thresholds from ``val = (y, s)``.

    Shared by the linear-probe, fine-tune and multimodal protocols so that every
    classification number in the harness is computed the same way. Metrics in
    ``ci_metrics`` get a patient-level bootstrap CI (``groups`` = test patient ids).
    """
    unknown = [m for m in names if m not in (*SCORE_METRICS, *THRESHOLD_METRICS, "auroc_per_label")]
    if unknown:
        raise ValueError(f"not a classification metric: {unknown}; known: {[*SCORE_METRICS, *THRESHOLD_METRICS]}")
    y, s = test
    thresholds = choose_thresholds(*val)
    fns: dict[str, Callable[..., float]] = {m: METRICS[m] for m in names if m in SCORE_METRICS}
    if "f1_macro" in names:
        fns["f1_macro"] = functools.partial(f1_at, thresholds=thresholds)
    metrics = {m: _safe(fn, y, s) for m, fn in fns.items()}
    ci, ci_skipped = {}, {}
    for m in ci_metrics:
        result = bootstrap_ci(fns[m], y, s, groups=groups, n=n_boot, seed=seed)
        ci[m], ci_skipped[m] = (result.lo, result.hi), result.n_skipped
    _, skipped = auroc_macro(y, s, return_skipped=True)
    details = {"auroc_per_label": [float(v) for v in auroc_per_label(y, s)], "skipped_labels": skipped,
               "f1_thresholds": [float(t) for t in thresholds], "bootstrap": {"n": n_boot, "seed": seed,
                                                                            "skipped": ci_skipped}}
    return ClassificationScores(metrics, ci, details)


# --------------------------------------------------------------------------- registry of names


def _bind_k(fn: Callable[..., float], k: int) -> Callable[..., float]:
    bound = functools.partial(fn, k=k)
    functools.update_wrapper(bound, fn)
    return bound


# Name (as in task files) -> function. Signatures by family:
#   scores:      f(y, s)                      auroc_*, auprc_macro
#   thresholded: f(y_test, s_test, thresholds) f1_macro (thresholds from choose_thresholds on val)
#   ranks:       f(ranks)                     recall_at_{1,5,10}, median_rank
#   relevance:   f(relevance)                 hit_at_{1,5,10}, precision_at_{1,5,10}
#   images:      f(x, y, data_range)          psnr, ssim;  f(heatmaps, masks) pointing_game
METRICS: dict[str, Callable[..., Any]] = {
    "auroc_macro": auroc_macro,
    "auroc_micro": auroc_micro,
    "auroc_per_label": auroc_per_label,
    "auprc_macro": auprc_macro,
    "f1_macro": f1_at,
    "median_rank": median_rank,
    "psnr": psnr,
    "ssim": ssim,
    "pointing_game": pointing_game,
    **{f"recall_at_{k}": _bind_k(recall_at_k, k) for k in (1, 5, 10)},
    **{f"hit_at_{k}": _bind_k(hit_at_k, k) for k in (1, 5, 10)},
    **{f"precision_at_{k}": _bind_k(precision_at_k, k) for k in (1, 5, 10)},
}
SCORE_METRICS = ("auroc_macro", "auroc_micro", "auprc_macro")  # f(y, s) -> float
THRESHOLD_METRICS = ("f1_macro",)  # need validation-chosen thresholds


# --------------------------------------------------------------------------- masked image metrics
# Addition by the image-text evaluation contributor (regeneration and localization protocols):
# scores restricted to a region of each image. Kept separate from the functions above.


def ssim_masked(image_true: np.ndarray, image_test: np.ndarray, mask: np.ndarray, data_range: float, *,
                win_size: int = 7, k1: float = 0.01, k2: float = 0.03) -> Any:
    """Mean of the SSIM map over the pixels where ``mask`` is True (masked-region regeneration).

    The map is ``ssim``'s (7x7 uniform window, sample covariance, reflect padding), but it is
    averaged over ``mask`` instead of over the border-cropped image, so a mask equal to that
    interior gives exactly ``ssim``. ``(H, W)`` -> float, ``(B, H, W)`` -> ``(B,)``; an empty mask
    is an error.
    """
    x, y = _image_pair(image_true, image_test)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != x.shape:
        raise ValueError(f"mask {mask.shape} must have the images' shape {x.shape}")
    if win_size % 2 == 0 or win_size > min(x.shape[-2:]):
        raise ValueError(f"win_size must be odd and <= the image side, got {win_size}")
    counts = mask.sum(axis=(-2, -1))
    if np.any(counts == 0):
        raise ValueError("an empty mask has no SSIM")
    filt = functools.partial(ndimage.uniform_filter, size=(win_size,) * 2 if x.ndim == 2 else (1, win_size, win_size))
    cov_norm = win_size**2 / (win_size**2 - 1)
    ux, uy = filt(x), filt(y)
    vx, vy = cov_norm * (filt(x * x) - ux * ux), cov_norm * (filt(y * y) - uy * uy)
    vxy = cov_norm * (filt(x * y) - ux * uy)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    out = np.where(mask, s, 0.0).sum(axis=(-2, -1)) / counts
    return float(out) if x.ndim == 2 else out


def mask_iou(predicted: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``(B,)`` intersection over union of boolean ``(B, H, W)`` masks (NaN where both are empty)."""
    predicted, target = np.asarray(predicted, dtype=bool), np.asarray(target, dtype=bool)
    if predicted.shape != target.shape or predicted.ndim != 3:
        raise ValueError(f"masks {predicted.shape} and {target.shape} must share a (B, H, W) shape")
    inter = (predicted & target).sum(axis=(1, 2))
    union = (predicted | target).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.maximum(union, 1), np.nan)
