"""Metrics: pure functions on numpy arrays, plus patient-level bootstrap CIs.

Every function here takes arrays and returns numbers; none of them knows about
tasks, encoders or files. Each one is checked against its reference
implementation in ``tests/test_metrics.py`` (scikit-learn for the
classification metrics, scikit-image for PSNR / SSIM).

==================  ==========================================================================
``classification``  AUROC (per label, macro, micro), AUPRC, F1 at validation-chosen thresholds
``retrieval``       ranks of the match, recall / precision / hits at K, median rank
``images``          PSNR, SSIM (and its map), SSIM over a masked region
``localization``    pointing game, mask IoU
``bootstrap``       patient-level bootstrap CIs and paired differences of two methods
``paired``          what every run keeps so that its main metric can be recomputed on resamples
``names``           ``METRICS``: the names task files use -> functions; the families
``scoring``         ``score_classification``: the report every classification protocol gives
==================  ==========================================================================

This package's face re-exports every public function, so callers write
``from harness import metrics`` and ``metrics.auroc_macro(...)``: a metric is found by the
same name whether a task file, a result record or Python code names it, and the family
modules stay an implementation detail of this package.

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
  patient are correlated, so resampling images would give too-narrow CIs. Fewer
  than ``MIN_PATIENTS`` patients give no interval (NaN and a reason).
- Not measurable is NaN, never a number: an AUROC label without a positive, a
  metric at K over a gallery of K or fewer items (the protocols say why in the
  record's ``details["not_measurable"]``).

Example::

    auc = auroc_macro(y_test, s_test)
    ci = bootstrap_ci(auroc_macro, y_test, s_test, groups=patient_ids, n=1000, seed=0)
    lo, hi = ci                                   # also ci.estimate, ci.n_skipped
    delta, lo, hi, p = paired_bootstrap(auroc_macro, y_test, s_a, s_b, patient_ids, n=1000, seed=0)
    fn, arrays = metric_inputs(np.load("record.predictions.npz"), "auroc_macro")  # a run's kept arrays
"""

from harness.metrics.bootstrap import (
    MIN_PATIENTS,
    BootstrapCI,
    PairedComparison,
    bootstrap_ci,
    bootstrap_values,
    paired_bootstrap,
    paired_draws,
    paired_from_draws,
)
from harness.metrics.classification import (
    auprc_macro,
    auprc_per_label,
    auroc_macro,
    auroc_micro,
    auroc_per_label,
    choose_thresholds,
    f1_at,
    f1_per_label,
)
from harness.metrics.images import psnr, ssim, ssim_map, ssim_masked
from harness.metrics.localization import mask_iou, pointing_game
from harness.metrics.names import METRICS, SCORE_METRICS, THRESHOLD_METRICS
from harness.metrics.paired import metric_inputs, patient_index, stratified_mean, unit_predictions
from harness.metrics.retrieval import (
    hit_at_k,
    median_rank,
    precision_at_k,
    ranks_from_similarity,
    recall_at_k,
    relevance_in_rank_order,
)
from harness.metrics.scoring import ClassificationScores, score_classification

__all__ = ["METRICS", "MIN_PATIENTS", "SCORE_METRICS", "THRESHOLD_METRICS", "BootstrapCI", "ClassificationScores",
           "PairedComparison", "auprc_macro", "auprc_per_label", "auroc_macro", "auroc_micro", "auroc_per_label",
           "bootstrap_ci", "bootstrap_values", "choose_thresholds", "f1_at", "f1_per_label", "hit_at_k", "mask_iou",
           "median_rank", "metric_inputs", "paired_bootstrap", "paired_draws", "paired_from_draws", "patient_index",
           "pointing_game", "precision_at_k", "psnr", "ranks_from_similarity", "recall_at_k",
           "relevance_in_rank_order", "score_classification", "ssim", "ssim_map", "ssim_masked", "stratified_mean",
           "unit_predictions"]
