"""The metrics by the names task files use (``metrics:``, ``main_metric:``), and their families.

A name is what a task file and a result record say (``recall_at_5``); the function is the
one in the family's module, with ``k`` bound where the name carries it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from harness.metrics.classification import auprc_macro, auroc_macro, auroc_micro, auroc_per_label, f1_at
from harness.metrics.images import psnr, ssim
from harness.metrics.localization import pointing_game
from harness.metrics.retrieval import hit_at_k, median_rank, precision_at_k, recall_at_k


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
