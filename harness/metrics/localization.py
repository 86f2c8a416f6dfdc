"""Localization metrics: does a heatmap point into the ground-truth region, and how well do masks overlap.

``heatmaps`` / ``masks`` are ``(B, H, W)`` at one resolution; the localization protocol
(``harness.protocols.localization``) brings maps and boxes there first.
"""

from __future__ import annotations

import numpy as np


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



def mask_iou(predicted: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``(B,)`` intersection over union of boolean ``(B, H, W)`` masks (NaN where both are empty)."""
    predicted, target = np.asarray(predicted, dtype=bool), np.asarray(target, dtype=bool)
    if predicted.shape != target.shape or predicted.ndim != 3:
        raise ValueError(f"masks {predicted.shape} and {target.shape} must share a (B, H, W) shape")
    inter = (predicted & target).sum(axis=(1, 2))
    union = (predicted | target).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.maximum(union, 1), np.nan)
