"""What every run keeps so that its main metric can be recomputed on patient resamples.

The leaderboard compares two rows by a PAIRED bootstrap over the same test patients: draw the
patients with replacement, recompute both rows' main metric on that same resample
(``harness.metrics.bootstrap.paired_draws``). That needs, from every run, what the metric is made
of per test *unit* (a test image, a retrieval query, a grounding case, a regenerated image) and
which patient each unit belongs to. Every protocol puts these arrays in its
``ProtocolResult.predictions`` and the runner always writes them next to the record
(``kept``); ``--save-predictions`` adds the rest (embeddings, example images). Arrays only:

- ``groups``: ``(U,)`` int64, an anonymous patient index per unit (``patient_index``: 0, 1, 2, ...
  in order of first appearance): which units share a patient, never who the patient is.
- classification: ``scores`` and ``targets`` ``(N, L)`` (units = test images); the metric is
  recomputed by name (``harness.metrics.METRICS``: the AUROCs, AUPRC; ``f1_macro`` with the
  validation-chosen ``f1_thresholds`` ``(L,)``).
- every other protocol: ``values__<metric>`` ``(U,)`` float64, each unit's share of the metric (a
  query's recall averaged over the K, a case's pointing hit, an image's PSNR gain; NaN: the unit
  does not count for it), and ``strata`` ``(U,)`` int64: the metric is ``stratified_mean``, the
  mean over strata of the within-stratum mean (retrieval's two directions, R-1k's blocks; a
  single stratum elsewhere). A metric that is not such a mean (a median rank) keeps no values.

``metric_inputs`` turns a predictions file back into ``(metric function, arrays)``, and
``same_units`` says whether two runs' predictions are on the same test units (only those pair).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

VALUES_PREFIX = "values__"
KEPT = ("groups", "strata", "scores", "targets", "f1_thresholds")  # and every values__<metric>


def patient_index(patients: Any) -> np.ndarray:
    """``(U,)`` int64: 0 for the first unit's patient, 1 for the next new patient, ... (never an id).

    Args:
        patients: ``(U,)`` patient identifiers in unit order.

    Returns:
        The anonymous index: units share a value exactly when they share a patient.
    """
    ids = np.asarray(patients).astype(str)
    if ids.size == 0:
        return np.zeros(0, dtype=np.int64)
    _, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[inverse.reshape(-1)]


def stratified_mean(values: np.ndarray, strata: np.ndarray) -> float:
    """The mean over strata of each stratum's mean of the non-NaN ``values`` (NaN if a stratum has none).

    Args:
        values: ``(U,)`` per-unit values; NaN units are left out.
        strata: ``(U,)`` int stratum of each unit.

    Returns:
        ``mean_s mean_{u in s} values[u]``; the ``weighted_bootstrap`` attribute gives it for many
        patient resamples at once.
    """
    return float(_weighted_stratified_mean(np.ones((1, len(values))), values, strata)[0])


def _weighted_stratified_mean(weights: np.ndarray, values: np.ndarray, strata: np.ndarray) -> np.ndarray:
    """``(R,)`` ``stratified_mean`` with units weighted by their multiplicity ``weights`` ``(R, U)``."""
    values = np.asarray(values, dtype=np.float64)
    strata = np.asarray(strata)
    if values.shape != strata.shape or values.ndim != 1:
        raise ValueError(f"values {values.shape} and strata {strata.shape} must be the same (U,) shape")
    counted = ~np.isnan(values)
    labels = np.unique(strata)
    if len(labels) == 0:
        return np.full(len(weights), np.nan)
    means = np.empty((len(weights), len(labels)))
    for i, label in enumerate(labels):
        cols = np.flatnonzero((strata == label) & counted)
        w = weights[:, cols]
        total = w.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            means[:, i] = np.where(total > 0, (w @ values[cols]) / np.where(total > 0, total, 1), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return means.mean(axis=1)  # a stratum without a counted unit: the resample is undefined (NaN)


stratified_mean.weighted_bootstrap = _weighted_stratified_mean  # type: ignore[attr-defined]


def unit_predictions(patients: Any, values: Mapping[str, np.ndarray], strata: np.ndarray | None = None
                     ) -> dict[str, np.ndarray]:
    """The kept arrays of a per-unit protocol: ``groups``, ``strata`` and ``values__<metric>``.

    Args:
        patients: ``(U,)`` patient identifier per unit (only its anonymous index is kept).
        values: metric name -> ``(U,)`` per-unit values (see the module docstring).
        strata: ``(U,)`` int stratum per unit; None: one stratum.

    Returns:
        The arrays, ready for ``ProtocolResult.predictions``.
    """
    groups = patient_index(patients)
    out = {"groups": groups, "strata": (np.zeros(len(groups), dtype=np.int64) if strata is None
                                        else np.asarray(strata, dtype=np.int64))}
    for name, v in values.items():
        v = np.asarray(v, dtype=np.float64)
        if v.shape != groups.shape:
            raise ValueError(f"values of {name}: {v.shape}, expected one per unit {groups.shape}")
        out[VALUES_PREFIX + name] = v
    return out


def kept(predictions: Mapping[str, np.ndarray], everything: bool) -> dict[str, np.ndarray]:
    """What the runner writes next to the record: the paired-bootstrap arrays, or everything.

    Args:
        predictions: a ``ProtocolResult.predictions``.
        everything: ``--save-predictions``: keep embeddings and example images too.
    """
    return {k: v for k, v in predictions.items() if everything or k in KEPT or k.startswith(VALUES_PREFIX)}


def metric_inputs(predictions: Mapping[str, np.ndarray], metric: str
                  ) -> tuple[Callable[..., float], tuple[np.ndarray, ...]]:
    """The function and row-aligned arrays that recompute ``metric`` from a run's kept predictions.

    Args:
        predictions: the arrays of a predictions file.
        metric: a metric name (the record's main metric).

    Returns:
        ``(fn, arrays)``: ``fn(*arrays)`` is the metric; the arrays are aligned with ``predictions["groups"]``.

    Raises:
        LookupError: the predictions cannot give the metric (the message says what is missing).
    """
    from harness.metrics.classification import f1_at
    from harness.metrics.names import METRICS, SCORE_METRICS

    if "groups" not in predictions:
        raise LookupError("its predictions have no patient groups (a record from before they were kept)")
    key = VALUES_PREFIX + metric
    if key in predictions:
        strata = predictions.get("strata")
        return stratified_mean, (predictions[key], strata if strata is not None
                                 else np.zeros(len(predictions[key]), dtype=np.int64))
    if "scores" in predictions and "targets" in predictions:
        if metric in SCORE_METRICS:
            return METRICS[metric], (predictions["targets"], predictions["scores"])
        if metric == "f1_macro" and "f1_thresholds" in predictions:
            return functools.partial(f1_at, thresholds=predictions["f1_thresholds"]), (predictions["targets"],
                                                                                       predictions["scores"])
    raise LookupError(f"its predictions hold no per-unit values of {metric}")


def same_units(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> bool:
    """Whether two runs' kept predictions are on the same test units (same patients, strata, targets)."""
    for key in ("groups", "strata", "targets"):
        x, y = a.get(key), b.get(key)
        if (x is None) != (y is None):
            return False
        if x is not None and (x.shape != y.shape or not np.array_equal(x, y, equal_nan=x.dtype.kind == "f")):
            return False
    return True
