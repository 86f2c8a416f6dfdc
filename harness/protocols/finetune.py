"""End-to-end fine-tuning: the encoder plus a linear head, trained on the task's labels.

The second standard evaluation next to the linear probe (MoCo-CXR's
"end-to-end fine-tuning", MSN+EHR's ``--freeze 0``): a deep COPY of the encoder
(the caller's weights are never changed, and this is checked) gets a
``Linear(num_features, L)`` head on ``encode_image``; both are trained with
AdamW on the masked multi-label BCE of the linear probe, with a lower learning
rate for the pretrained encoder than for the fresh head. After every epoch the
validation AUROC-macro is measured; training stops when it has not improved
for ``patience`` epochs and the best epoch's weights are restored before the
test set is scored (the same metrics code as the linear probe).

Deterministic on CPU for a seed: head initialisation, dropout and the batch
order draw from a seeded RNG inside ``torch.random.fork_rng`` (the global RNG
state is left as it was). On CUDA, bf16 autocast is used and cuDNN makes the
result non-deterministic at the float-rounding level.

Arguments: ``ARGS`` below (names, types, defaults and ranges, checked by
``harness.protocols.args``), usually profile-specific through the task's
``profile_args``: ``epochs`` (maximum), ``batch_size`` / ``eval_batch_size``,
``encoder_lr`` / ``head_lr`` / ``weight_decay`` (AdamW), ``patience`` (epochs
without a validation improvement before stopping) and ``bootstrap`` (patient
resamples for the CI; 0: no CI).
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from harness import metrics
from harness.cohort import SplitData
from harness.encoders import capabilities
from harness.encoders.preprocess import to_model_input
from harness.protocols.args import Arg, ProtocolArgs
from harness.protocols.base import EvalContext, ProtocolResult
from harness.protocols.errors import ProtocolError
from harness.protocols.linear_probe import CLASSIFICATION_METRICS, classification_predictions, masked_bce, report

ARGS = ProtocolArgs(
    "finetune",
    {
        "epochs": Arg(int, 10, "maximum epochs", ge=1),
        "batch_size": Arg(int, 32, "training batch size (BatchNorm needs two images)", ge=2),
        "eval_batch_size": Arg(int, 64, "validation / test batch size", ge=1),
        # pretrained weights move slowly; the fresh head needs a larger step (0 freezes the encoder)
        "encoder_lr": Arg(float, 1e-5, "AdamW learning rate of the encoder", ge=0),
        "head_lr": Arg(float, 1e-3, "AdamW learning rate of the head", gt=0),
        "weight_decay": Arg(float, 1e-4, "AdamW weight decay", ge=0),
        "patience": Arg(int, 3, "epochs without a validation improvement before stopping", ge=1),
        "bootstrap": Arg(int, 1000, "patient resamples for the CI (0: no CI)", ge=0),
    },
    metrics=lambda args: CLASSIFICATION_METRICS, needs_labels=True, requires=lambda args: ("image", "trainable"))


@dataclass(frozen=True)
class FinetuneConfig:
    epochs: int = ARGS.default("epochs")
    batch_size: int = ARGS.default("batch_size")
    eval_batch_size: int = ARGS.default("eval_batch_size")
    encoder_lr: float = ARGS.default("encoder_lr")
    head_lr: float = ARGS.default("head_lr")
    weight_decay: float = ARGS.default("weight_decay")
    patience: int = ARGS.default("patience")
    bootstrap: int = ARGS.default("bootstrap")

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> FinetuneConfig:
        """The fine-tuning configuration from protocol arguments, checked against ``ARGS``.

        Raises:
            ProtocolError: an argument ``ARGS`` does not accept.
        """
        return cls(**ARGS.resolve_or_raise(args))


class Classifier(nn.Module):
    """``encode_image``, a BatchNorm without affine parameters, a linear head: ``(B, C, S, S) -> (B, L)``.

    The BatchNorm (MAE's and MoCo v3's linear classifier) standardises the features as the linear
    probe does with the training mean and std. Without it a fresh head on features whose spread
    across images is tiny next to their mean (a transformer's final LayerNorm and projection:
    mlm-mvm's spread is about 1 % of the mean) learns the label priors only: mlm-mvm fine-tuned
    scored AUROC 0.416 on the synthetic mimic-cls-finetune (issue 20), its linear probe 0.650.
    """

    def __init__(self, encoder: nn.Module, num_labels: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.norm = nn.BatchNorm1d(int(encoder.num_features), affine=False)
        self.head = nn.Linear(int(encoder.num_features), num_labels)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.encoder.encode_image(images).float()))


def _autocast(device: str) -> contextlib.AbstractContextManager:
    return torch.autocast("cuda", dtype=torch.bfloat16) if torch.device(device).type == "cuda" \
        else contextlib.nullcontext()


def _batches(order: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Consecutive batches; a trailing single image joins the previous batch (BatchNorm needs two)."""
    out = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if len(out) > 1 and len(out[-1]) == 1:
        out[-2:] = [np.concatenate(out[-2:])]
    return out


def predict(model: Classifier, split: SplitData, ctx: EvalContext, batch_size: int) -> np.ndarray:
    """``(N, L)`` probabilities for every image of a split (eval mode, no drop_last)."""
    model.eval()
    out = []
    with torch.inference_mode(), _autocast(ctx.device):
        for rows in _batches(np.arange(len(split)), batch_size):
            x = to_model_input(split.images[rows], ctx.preprocess, ctx.device)
            out.append(torch.sigmoid(model(x).float()).double().cpu().numpy())
    return np.concatenate(out)


def train_epoch(model: Classifier, opt: torch.optim.Optimizer, split: SplitData, rows: np.ndarray,
                ctx: EvalContext, config: FinetuneConfig) -> float:
    """One pass over ``rows`` of the training split in a seeded random order; returns the mean loss."""
    model.train()
    order = rows[torch.randperm(len(rows)).numpy()]  # the forked, seeded global RNG
    losses = []
    for batch in _batches(order, config.batch_size):
        x = to_model_input(split.images[batch], ctx.preprocess, ctx.device)
        y = torch.as_tensor(split.targets[batch], device=ctx.device)
        with _autocast(ctx.device):
            logits = model(x)
        loss = masked_bce(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return float(np.mean(losses))


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def fit(model: Classifier, ctx: EvalContext, rows: np.ndarray, config: FinetuneConfig) -> dict[str, Any]:
    """Train with early stopping on validation AUROC-macro; the best epoch's weights end up in ``model``."""
    opt = torch.optim.AdamW([{"params": model.encoder.parameters(), "lr": config.encoder_lr},
                             {"params": model.head.parameters(), "lr": config.head_lr}],
                            weight_decay=config.weight_decay)
    history: list[dict[str, float]] = []
    best_auc, best_epoch, best_state, stale = -np.inf, -1, _snapshot(model), 0
    for epoch in range(config.epochs):
        loss = train_epoch(model, opt, ctx.data.train, rows, ctx, config)
        auc = metrics.auroc_macro(ctx.data.val.targets, predict(model, ctx.data.val, ctx, config.eval_batch_size))
        if np.isnan(auc):
            raise ProtocolError("finetune: no label has both classes in the validation split")
        history.append({"epoch": epoch, "train_loss": loss, "val_auroc_macro": auc})
        if auc > best_auc:
            best_auc, best_epoch, best_state, stale = auc, epoch, _snapshot(model), 0
        else:
            stale += 1
            if stale >= config.patience:
                break
    model.load_state_dict(best_state)
    return {"best_epoch": best_epoch, "best_val_auroc_macro": best_auc, "epochs_run": len(history),
            "history": history}


def run(ctx: EvalContext) -> ProtocolResult:
    """Fine-tune a copy of the encoder with a linear head (see the module docstring)."""
    config = FinetuneConfig.from_args(ARGS.read(ctx))
    if "trainable" not in capabilities(ctx.encoder):
        raise ProtocolError("finetune: the encoder is not trainable (needs a torch.nn.Module with encode_image)")
    rows = np.arange(len(ctx.data.train))  # the run's label fraction (cohort.label_fraction)
    if len(rows) < 2:
        raise ProtocolError(f"finetune: {len(rows)} training image(s) at fraction {ctx.fraction}")
    cuda = torch.device(ctx.device).type == "cuda"
    with torch.random.fork_rng(devices=[torch.device(ctx.device)] if cuda else []):
        torch.manual_seed(ctx.seed)
        model = Classifier(copy.deepcopy(ctx.encoder), len(ctx.data.label_names)).to(ctx.device)
        training = fit(model, ctx, rows, config)
    s_val = predict(model, ctx.data.val, ctx, config.eval_batch_size)
    s_test = predict(model, ctx.data.test, ctx, config.eval_batch_size)  # test targets first read in report()

    scores = report(ctx, ctx.data.val.targets, s_val, s_test, config.bootstrap)
    details = {**training, "n": {"train": len(rows), "val": len(ctx.data.val), "test": len(ctx.data.test)},
               **scores.details}
    return ProtocolResult(metrics=scores.metrics, ci=scores.ci, details=details,
                          predictions=classification_predictions(ctx, s_test, scores))
