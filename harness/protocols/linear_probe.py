"""Linear probe: multi-label logistic regression on frozen, cached image features.

The standard linear evaluation of self-supervised representations (MoCo,
MSN+EHR "linear evaluation", GLoRIA's frozen-CNN probe), done as ONE convex
problem instead of a training loop so that the number depends only on the
features, the labels and the regularisation strength:

1. features of train / val / test from ``harness.features.split_features``
   (cached per weights and rows; reused across fractions, seeds and grids);
2. the training rows of the run's label fraction (``cohort.label_fraction``, applied by the
   runner: nested by patient, seeded);
3. features standardised with the (fraction-restricted) training mean / std;
4. for every L2 strength in ``l2_grid`` (strongest first, warm-started): the
   logistic regression of all labels at once, full-batch L-BFGS on
   ``mean over labels of masked BCE + l2/2 * ||W||^2`` (NaN targets -- the
   label policy's "ignore" -- are masked out per label);
5. the strength with the best validation AUROC-macro wins (ties: the stronger);
6. only then are test features scored and the task's metrics computed, with a
   patient-level bootstrap CI on the main metric.

``fit_probe`` receives training and validation arrays only: test labels cannot
influence any choice. After the probe the encoder's weights are checked to be
bit-identical (MoCo's ``sanity_check``; ``harness.protocols.base.evaluate`` does it for every protocol).

``l2`` relates to scikit-learn's per-label ``C`` by ``C = 1 / (L * l2 * n_train)``
with ``L`` labels (its loss is summed over images, ours averaged over images and labels).

Arguments: ``ARGS`` below (names, types, defaults and ranges, checked by
``harness.protocols.args`` when the task loads and again when the probe runs):
``l2_grid`` (the L2 strengths tried on validation), ``max_iter`` (L-BFGS
iterations per strength), ``batch_size`` (feature extraction) and ``bootstrap``
(patient resamples for the CI of the main metric; 0: no CI).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from harness import metrics
from harness.features import split_features
from harness.protocols.args import Arg, ProtocolArgs
from harness.protocols.base import EvalContext, ProtocolResult
from harness.protocols.errors import ProtocolError

# what score_classification computes; shared by the fine-tune and multimodal declarations
CLASSIFICATION_METRICS = (*metrics.SCORE_METRICS, *metrics.THRESHOLD_METRICS)

ARGS = ProtocolArgs(
    "linear-probe",
    {
        "l2_grid": Arg(float, [1.0, 1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6], "L2 strengths tried on validation",
                       many=True, ge=0),
        # L-BFGS converges in well under 200 steps on standardised features
        "max_iter": Arg(int, 200, "L-BFGS iterations per strength", ge=1),
        "batch_size": Arg(int, 64, "feature-extraction batch size", ge=1),
        "bootstrap": Arg(int, 1000, "patient resamples for the CI (0: no CI)", ge=0),  # MSN+EHR's 1,000
    },
    metrics=lambda args: CLASSIFICATION_METRICS, needs_labels=True)


@dataclass(frozen=True)
class ProbeConfig:
    l2_grid: tuple[float, ...] = tuple(ARGS.default("l2_grid"))
    max_iter: int = ARGS.default("max_iter")
    batch_size: int = ARGS.default("batch_size")
    bootstrap: int = ARGS.default("bootstrap")

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> ProbeConfig:
        """The probe's configuration from protocol arguments, checked against ``ARGS``.

        Raises:
            ProtocolError: an argument ``ARGS`` does not accept.
        """
        resolved = ARGS.resolve_or_raise(args)
        return cls(**{**resolved, "l2_grid": tuple(resolved["l2_grid"])})


@dataclass
class LinearProbe:
    """A fitted probe: standardisation plus one logistic unit per label."""

    mean: np.ndarray  # (D,)
    std: np.ndarray  # (D,)
    weight: np.ndarray  # (D, L)
    bias: np.ndarray  # (L,)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """``(N, D)`` features -> ``(N, L)`` probabilities."""
        z = ((np.asarray(x, dtype=np.float64) - self.mean) / self.std) @ self.weight + self.bias
        return 1.0 / (1.0 + np.exp(-z))


@dataclass
class ProbeFit:
    probe: LinearProbe
    l2: float
    val_scores: np.ndarray  # (N_val, L) probabilities of the chosen probe
    val_auroc: dict[float, float] = field(default_factory=dict)  # l2 -> validation AUROC-macro


def masked_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over labels of each label's mean BCE over its non-NaN targets."""
    valid = ~torch.isnan(targets)
    per = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.nan_to_num(targets),
                                                               reduction="none") * valid
    counts = valid.sum(0)
    has = counts > 0
    return (per.sum(0)[has] / counts[has]).mean()


def fit_logistic(x: torch.Tensor, y: torch.Tensor, l2: float, max_iter: int,
                 init: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """All labels' logistic regressions as one full-batch L-BFGS problem: ``(D, L)`` weights, ``(L,)`` bias.

    The objective is ``masked_bce(x @ w + b, y) + l2/2 * ||w||^2``; its gradient is written out
    (``x^T (sigmoid(z) - y) / count`` per label, NaN targets weighted 0) instead of taken by
    autograd, because at probe sizes the autograd graph, not the arithmetic, was most of each
    of the hundreds of L-BFGS evaluations. The logits are formed label-major, ``(L, N) = w^T x^T``:
    with few labels, MKL's ``(N, D) @ (D, L)`` with a narrow ``L`` took 2-5x longer than the same
    product transposed (measured on the bench's AMD EPYC, 1 thread). Same function, same gradient
    (to float rounding).
    """
    d, n_labels = x.shape[1], y.shape[1]
    w = init[0].clone() if init else torch.zeros(d, n_labels, device=x.device)
    b = init[1].clone() if init else torch.zeros(n_labels, device=x.device)
    valid = ~torch.isnan(y.T)  # (L, N), like everything per (label, image) below
    target = torch.nan_to_num(y.T).contiguous()
    counts = valid.sum(1).to(x.dtype)
    has = counts > 0
    # masked_bce's weight of each (label, image) term: 1 / (its label's count * labels with any target)
    weight = valid * torch.where(has, 1.0 / (counts.clamp(min=1) * has.sum().clamp(min=1)), 0.0)[:, None]
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-7, tolerance_change=1e-10)

    def closure() -> torch.Tensor:
        with torch.no_grad():
            z = torch.addmm(b[:, None], w.T, x.T)  # (L, N) logits
            per = torch.nn.functional.binary_cross_entropy_with_logits(z, target, reduction="none")
            loss = (per * weight).sum() + 0.5 * l2 * (w * w).sum()
            dz = (torch.sigmoid(z) - target) * weight
            w.grad = ((dz @ x).T + l2 * w).contiguous()  # x^T dz^T + l2 w, laid out like w
            b.grad = dz.sum(1)
        return loss

    opt.step(closure)
    return w, b


def fit_probe(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
              config: ProbeConfig, device: str = "cpu") -> ProbeFit:
    """Fit on train, choose ``l2`` on val. Sees no test data by construction."""
    mean = x_train.mean(0, dtype=np.float64)
    std = x_train.std(0, dtype=np.float64)
    std = np.where(std > 1e-8, std, 1.0)  # constant features stay at zero instead of dividing by zero

    def standardised(a: np.ndarray) -> torch.Tensor:  # on the device, float32: no float64 copy of N x D
        t = torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32, device=device)
        return (t - torch.as_tensor(mean, dtype=torch.float32, device=device)) / torch.as_tensor(
            std, dtype=torch.float32, device=device)

    xt, xv = standardised(x_train), standardised(x_val)
    yt = torch.as_tensor(y_train, dtype=torch.float32, device=device)
    best: tuple[float, float, tuple[torch.Tensor, torch.Tensor]] | None = None
    val_auroc: dict[float, float] = {}
    init = None
    for l2 in sorted(config.l2_grid, reverse=True):  # strongest first: each warm-starts the next
        init = fit_logistic(xt, yt, l2, config.max_iter, init)
        with torch.no_grad():
            score = metrics.auroc_macro(y_val, torch.sigmoid(xv @ init[0] + init[1]).double().cpu().numpy())
        val_auroc[l2] = score
        if not np.isnan(score) and (best is None or score > best[1]):
            best = (l2, score, init)
    if best is None:
        raise ProtocolError("linear-probe: no label has both classes in the validation split; "
                            "cannot choose the regularisation")
    l2, _, (w, b) = best
    probe = LinearProbe(mean, std, w.double().cpu().numpy(), b.double().cpu().numpy())
    return ProbeFit(probe, l2, probe.predict(x_val), val_auroc)


def frozen_features(ctx: EvalContext, batch_size: int) -> dict[str, np.ndarray]:
    """Cached global float32 features of the train / val / test splits."""
    return {name: split_features(ctx, name, batch_size=batch_size) for name in ("train", "val", "test")}


def report(ctx: EvalContext, y_val: np.ndarray, s_val: np.ndarray, s_test: np.ndarray,
           n_boot: int) -> metrics.ClassificationScores:
    """The task's metrics on test (F1 thresholds from val), CI on the main metric, label names in details.

    What cannot be measured is said in ``details["not_measurable"]``: labels without both classes
    in the test split (no AUROC; the macro averages leave them out), a metric with no such label
    at all (NaN, rendered "n/m") and a CI over too few patients.
    """
    test = ctx.data.test
    # the kept anonymous patient index (classification_predictions): the CI is reproducible from the kept arrays
    scores = metrics.score_classification(
        ctx.task.metrics, (y_val, s_val), (test.targets, s_test), metrics.patient_index(test.frame["patient_id"]),
        ci_metrics=(ctx.task.main_metric,) if n_boot > 0 else (), n_boot=n_boot, seed=ctx.seed)
    names = ctx.data.label_names
    d = scores.details
    d["auroc_per_label"] = dict(zip(names, d["auroc_per_label"], strict=True))
    d["f1_thresholds"] = dict(zip(names, d["f1_thresholds"], strict=True))
    d["skipped_labels"] = [names[j] for j in d["skipped_labels"]]
    d["f1_skipped_labels"] = [names[j] for j in d["f1_skipped_labels"]]
    d["validation"] = (f"the whole validation split ({len(ctx.data.val)} images) at every label fraction: it chooses "
                       "the protocol's hyperparameters and the F1 thresholds")
    not_measurable: dict[str, Any] = {}
    if d["skipped_labels"]:
        positives = np.nansum(test.targets, axis=0)
        not_measurable["labels"] = {names[j]: "no positive in test" if positives[j] == 0 else "no negative in test"
                                    for j in range(len(names)) if names[j] in d["skipped_labels"]}
        kept = len(names) - len(d["skipped_labels"])
        not_measurable["note"] = f"auroc_macro and auprc_macro average the other {kept} of {len(names)} labels"
    for m, value in scores.metrics.items():
        if np.isnan(value):
            what = "a positive" if m == "f1_macro" else "both classes"
            not_measurable[m] = f"not measurable: no label has {what} in the test split ({len(test)} images)"
    if d["bootstrap"].get("not_measurable"):
        not_measurable["ci"] = d["bootstrap"]["not_measurable"]
    if not_measurable:
        d["not_measurable"] = not_measurable
    return scores


def classification_predictions(ctx: EvalContext, s_test: np.ndarray, scores: metrics.ClassificationScores
                               ) -> dict[str, np.ndarray]:
    """The arrays every classification run keeps (``harness.metrics.paired``): scores, targets, groups, thresholds.

    Scores stay float64, as the metrics saw them: a strongly regularised probe gives a label nearly
    constant scores (a spread of 1e-10), which float32 would turn into ties and so into another AUROC
    than the record's (measured: 0.5050 recomputed against the record's 0.5099).
    """
    test = ctx.data.test
    return {"scores": np.asarray(s_test, dtype=np.float64), "targets": test.targets.astype(np.float32),
            "groups": metrics.patient_index(test.frame["patient_id"].to_numpy()),
            "f1_thresholds": np.array([scores.details["f1_thresholds"][n] for n in ctx.data.label_names],
                                      dtype=np.float64)}


def run(ctx: EvalContext) -> ProtocolResult:
    """Linear probe on frozen features (see the module docstring)."""
    config = ProbeConfig.from_args(ARGS.read(ctx))
    feats = frozen_features(ctx, config.batch_size)
    train, val = ctx.data.train, ctx.data.val  # train: the run's label fraction (cohort.label_fraction)
    fit = fit_probe(feats["train"], train.targets, feats["val"], val.targets, config, ctx.device)
    s_test = fit.probe.predict(feats["test"])  # test targets are first read in report()

    scores = report(ctx, val.targets, fit.val_scores, s_test, config.bootstrap)
    details = {
        "l2": fit.l2, "val_auroc_macro": {str(k): v for k, v in fit.val_auroc.items()},
        "n": {"train": len(train), "train_patients": int(train.frame["patient_id"].nunique()),
              "val": len(val), "test": len(ctx.data.test)},
        "num_features": int(feats["train"].shape[1]),
        **scores.details,
    }
    return ProtocolResult(metrics=scores.metrics, ci=scores.ci, details=details,
                          predictions=classification_predictions(ctx, s_test, scores))
