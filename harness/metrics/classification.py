"""Classification metrics: ROC AUC, average precision, F1 at validation-chosen thresholds.

``y`` is ``(N, L)`` float targets (1 / 0, **NaN = ignored for that label**, as
``harness.cohort.apply_label_policy`` produces), ``s`` is ``(N, L)`` scores (any monotone
score: logits or probabilities); 1-D inputs are one label. A per-label metric is NaN where
the label lacks one of the two classes after masking; the macro averages skip such labels
(``auroc_macro(..., return_skipped=True)`` says which).

The AUROCs also carry a ``weighted_bootstrap`` attribute: the same AUROC for many patient
resamples at once, from per-row multiplicities (``harness.metrics.bootstrap.bootstrap_values``
uses it), so a 1,000-resample CI costs a few AUROCs rather than 1,000.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from scipy.stats import rankdata


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


def _counts_at_thresholds(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct scores (descending) as thresholds, and the true and predicted positives of ``s >= t`` at each."""
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s_sorted)), len(s_sorted) - 1]  # one threshold per distinct score
    return s_sorted[last_of_tie], np.cumsum(y_sorted)[last_of_tie], last_of_tie + 1


def _average_precision_1d(y: np.ndarray, s: np.ndarray) -> float:
    """sum_n (R_n - R_{n-1}) P_n over distinct thresholds (= sklearn average_precision_score)."""
    n_pos = int((y == 1).sum())
    if n_pos == 0 or n_pos == len(y):
        return float("nan")
    _, tps, predicted = _counts_at_thresholds(y, s)
    precision = tps / predicted
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
    thresholds, tp, predicted = _counts_at_thresholds(y, s)
    f1 = 2 * tp / (predicted + y.sum())  # 2TP / (2TP + FP + FN)
    return thresholds, f1


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



# --------------------------------------------------------------------------- the AUROCs of many resamples at once


def _weighted_auroc(weights: np.ndarray, y: np.ndarray, s: np.ndarray) -> np.ndarray:
    """``(R, L)`` AUROC per resample and label, rows weighted by multiplicity ``weights`` ``(R, N)``.

    Weighted Mann-Whitney: each positive earns the weight of the negatives
    scored below it, plus half of those tied with it. In ascending score order,
    with ``C`` the running sum of negative weights, a positive whose tie group spans
    positions ``[a, b]`` earns ``C[a-1] + (C[b] - C[a-1]) / 2 = (C[a-1] + C[b]) / 2``:
    one cumulative sum per label and two gathers at the positives (the leaderboard's
    paired bootstrap runs this for every row and seed).
    """
    y, s = _as_2d(y, s)
    out = np.empty((len(weights), y.shape[1]))
    for j in range(y.shape[1]):
        keep = np.flatnonzero(~np.isnan(y[:, j]))
        order = keep[np.argsort(s[keep, j], kind="mergesort")]
        ranked = s[order, j]
        is_pos = y[order, j] == 1
        pos = np.flatnonzero(is_pos)
        first = np.searchsorted(ranked, ranked[pos], side="left")  # each positive's tie group [first, last]
        last = np.searchsorted(ranked, ranked[pos], side="right") - 1
        w = weights[:, order]  # (R, n) in ascending score order
        cum_neg = np.cumsum(np.where(is_pos, 0, w), axis=1)  # (R, n)
        below = np.where(first > 0, cum_neg[:, np.maximum(first - 1, 0)], 0)
        credit = 0.5 * (below + cum_neg[:, last])  # (R, n_pos)
        w_pos = w[:, pos]
        n_pos = w_pos.sum(1)
        n_neg = cum_neg[:, -1] if len(order) else np.zeros(len(weights))
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
