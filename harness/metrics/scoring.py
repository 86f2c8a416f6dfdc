"""The classification report every classification protocol gives: metrics by name, CIs, per-label detail.

Shared by the linear-probe, fine-tune and multimodal protocols so that every classification
number in the harness is computed the same way.

What is not measurable is said, never filled in: a label without both classes in the test
split has no AUROC (NaN; ``auroc_macro`` / ``auprc_macro`` average the other labels, listed in
``skipped_labels``); F1 macro follows ``F1_RULE``; a CI over fewer than
``bootstrap.MIN_PATIENTS`` patients is left out, with the reason in ``details["bootstrap"]``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.metrics.bootstrap import bootstrap_ci, value_or_nan
from harness.metrics.classification import auroc_macro, auroc_per_label, choose_thresholds, f1_at
from harness.metrics.names import METRICS, SCORE_METRICS, THRESHOLD_METRICS

F1_RULE = ("per-label thresholds maximise F1 of s >= t on the validation split (a label without a validation "
           "positive gets +inf: it predicts negative); f1_macro averages the labels with a test positive, "
           "labels without one are left out (f1_skipped_labels)")


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
    metrics = {m: value_or_nan(fn, y, s) for m, fn in fns.items()}
    ci, ci_skipped, no_ci = {}, {}, {}
    for m in ci_metrics:
        result = bootstrap_ci(fns[m], y, s, groups=groups, n=n_boot, seed=seed)
        ci_skipped[m] = result.n_skipped
        if result.reason:
            no_ci[m] = result.reason
        else:
            ci[m] = (result.lo, result.hi)
    _, skipped = auroc_macro(y, s, return_skipped=True)
    _, f1_skipped = f1_at(y, s, thresholds, return_skipped=True)
    boot: dict[str, Any] = {"n": n_boot, "seed": seed, "unit": "patient", "skipped": ci_skipped}
    if no_ci:
        boot["not_measurable"] = no_ci
    details = {"auroc_per_label": [float(v) for v in auroc_per_label(y, s)], "skipped_labels": skipped,
               "f1_thresholds": [float(t) for t in thresholds], "f1_skipped_labels": f1_skipped,
               "f1_rule": F1_RULE, "bootstrap": boot}
    return ClassificationScores(metrics, ci, details)
