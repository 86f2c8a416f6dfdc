"""Supervised pretraining on a task's training labels, with the checkpoint chosen on held-out TRAINING patients.

The entry point of ``SupervisedMethod.train``. Steps:

1. ``inner_split``: ``val_fraction`` of the training split's patients (ordered by a sha256 hash of the
   seed and the patient id, so the choice is stable and patient-disjoint) are held out of the gradient steps;
2. the shared ``Trainer`` runs BCE (``model.masked_bce``) on one mildly augmented view of the other rows;
3. every ``eval_every`` steps (and at the last) the held-out BCE is measured without augmentation; the
   weights with the lowest so far are written to ``best.pt`` (atomically, with the step and the loss),
   which is what the method returns and ``load`` reads. A resumed run reads the best loss back from it.

``meta["data"]`` records aggregate counts only: images and patients fitted and held out, the task whose
labels were learnt, never a patient id. Nothing outside ``request.data`` (the task's training split)
is read: the task's validation and test patients are never seen.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from baselines.common import distributed
from baselines.common.backbones import Backbone, build_backbone
from baselines.common.config import to_dict
from baselines.common.data import AugmentConfig, ViewBatches
from baselines.common.encoder import imagenet_preprocess
from baselines.common.method import data_meta
from baselines.common.optim import weight_decay_groups
from baselines.common.sampling import StepSampler
from baselines.common.seeding import seed_all
from baselines.common.train import WEIGHTS_FORMAT, StepContext, TrainConfig, Trainer, atomic_save, load_checkpoint
from baselines.supervised.config import SupervisedConfig
from baselines.supervised.model import SupervisedClassifier, masked_bce
from harness.data.schema import DataError
from harness.encoders import PretrainRequest
from harness.encoders.preprocess import to_model_input

BEST = "best.pt"
SELECTION_LOG = "selection.jsonl"  # one line per held-out measurement: step, loss, best so far


def inner_split(patient_ids: pd.Series, val_fraction: float, seed: int) -> np.ndarray:
    """True for the rows of the held-out patients: about ``val_fraction`` of them, by a hash of the id.

    At least one patient is held out and at least one is fitted.

    Raises:
        DataError: fewer than two training patients (nothing to hold out).
    """
    ids = patient_ids.astype(str)
    uniq = sorted(set(ids))
    if len(uniq) < 2:
        raise DataError(f"supervised: the training split has {len(uniq)} patient(s); holding some out to choose "
                        "the checkpoint needs at least 2")
    u = {p: int.from_bytes(hashlib.sha256(f"supervised-inner-{seed}:{p}".encode()).digest()[:8], "big") / 2**64
         for p in uniq}
    n_out = min(len(uniq) - 1, max(1, round(val_fraction * len(uniq))))
    held_out = set(sorted(uniq, key=u.__getitem__)[:n_out])
    return ids.isin(held_out).to_numpy()


def base_backbone(cfg: SupervisedConfig) -> Backbone:
    """The backbone the classifier starts from: ImageNet weights or the seeded default initialisation."""
    if cfg.init == "imagenet":
        from baselines.imagenet.weights import imagenet_backbone

        return imagenet_backbone(cfg.backbone, image_size=cfg.image_size, weights=cfg.weights)
    return build_backbone(cfg.backbone, in_chans=3, image_size=cfg.image_size)


class HeldOutSelection:
    """The ``Trainer``'s ``after_step``: held-out BCE every ``eval_every`` steps; the best weights to ``best.pt``."""

    def __init__(self, images: Any, targets: np.ndarray, cfg: SupervisedConfig, workdir: Path, steps: int,
                 meta: dict[str, Any], device: str) -> None:
        self.images, self.targets, self.cfg, self.workdir = images, targets, cfg, Path(workdir)
        self.steps, self.meta, self.device = steps, meta, torch.device(device)
        self.preprocess = imagenet_preprocess(cfg.image_size, 3)
        self.best = float("inf")
        if (self.workdir / BEST).is_file():  # a resumed run keeps the best loss it had found
            self.best = float(load_checkpoint(self.workdir / BEST)["meta"]["selection"]["held_out_loss"])

    @torch.no_grad()
    def loss(self, model: SupervisedClassifier) -> float:
        """Mean BCE over the held-out rows' known labels, unaugmented (fed as the card says), in eval mode."""
        was_training = model.training
        model.eval()
        total, known = 0.0, 0
        for start in range(0, len(self.targets), 64):
            rows = np.arange(start, min(start + 64, len(self.targets)))
            x = to_model_input(np.asarray(self.images[rows]), self.preprocess, self.device)  # (B, C, S, S)
            y = torch.from_numpy(self.targets[rows]).to(self.device)
            n = int((~torch.isnan(y)).sum())
            total += float(masked_bce(model(x), y)) * n
            known += n
        model.train(was_training)
        return total / max(known, 1)

    def __call__(self, model: SupervisedClassifier, ctx: StepContext) -> None:
        step = ctx.step + 1  # the step just taken
        if step % self.cfg.eval_every and step != self.steps:
            return
        loss = self.loss(model)  # the same on every rank: the weights are
        main = distributed.info().is_main
        if loss < self.best:
            self.best = loss
            meta = {**self.meta, "selection": {"step": step, "held_out_loss": loss}}
            if main:
                atomic_save({"format": WEIGHTS_FORMAT, "step": step, "model": model.state_dict(), "meta": meta},
                            self.workdir / BEST)
        if main:
            with open(self.workdir / SELECTION_LOG, "a") as f:
                f.write(json.dumps({"step": step, "held_out_loss": loss, "best": self.best}) + "\n")


def pretrain(request: PretrainRequest, cfg: SupervisedConfig, card: dict) -> Path:
    """Train the classifier on ``request.data``'s labels into ``request.workdir``; return ``best.pt``.

    Raises:
        DataError: the request carries no labels (``TrainingData.labels`` is None), or too few patients.
    """
    data, info = request.data, distributed.info()
    labels = getattr(data, "labels", None)
    if labels is None:
        raise DataError("supervised: learns from the task's training labels, and none were offered (a task "
                        "without labels, or pretraining data that is not the task's training split)")
    held_out = inner_split(data.frame["patient_id"], cfg.val_fraction, request.seed)
    fit_rows, out_rows = np.flatnonzero(~held_out), np.flatnonzero(held_out)
    fit_images, out_images = data.images.subset(fit_rows), data.images.subset(out_rows)
    fit_targets, out_targets = labels.targets[fit_rows], labels.targets[out_rows]
    steps = cfg.total_steps(len(fit_rows))

    seed_all(request.seed)  # the initialisation (random backbone, head) is a function of the seed
    model = SupervisedClassifier(base_backbone(cfg), len(labels.names))
    optimizer = torch.optim.Adam(weight_decay_groups(model.named_parameters(), cfg.weight_decay, "all"), lr=cfg.lr)
    sampler = StepSampler(len(fit_rows), cfg.rank_batch(info.world_size, "supervised"), seed=request.seed,
                          rank=info.rank, world_size=info.world_size)
    view = AugmentConfig(scale=cfg.scale, rotation=cfg.rotation, hflip=cfg.hflip, brightness=cfg.brightness,
                         contrast=cfg.contrast)
    views = ViewBatches(fit_images, sampler, (view,), imagenet_preprocess(cfg.image_size, 3), device=request.device)

    def batches(ctx: StepContext) -> dict[str, Any]:
        batch = views(ctx)  # {"views": [x], "indices": rows of fit_images}
        batch["targets"] = torch.from_numpy(fit_targets[batch["indices"].numpy()])  # (B, L)
        return batch

    patients = data.frame["patient_id"].astype(str)
    meta = {"method": "supervised", "config": to_dict(cfg), "card": card,
            "labels": {"task": labels.task, "task_version": labels.task_version, "names": list(labels.names),
                       "fingerprint": labels.fingerprint},
            "data": data_meta(data, fitted_images=len(fit_rows), fitted_patients=int(patients[~held_out].nunique()),
                              held_out_images=len(out_rows), held_out_patients=int(patients[held_out].nunique()))}
    trainer = Trainer(model, optimizer, TrainConfig.for_method(cfg, request, steps), request.workdir, meta=meta)
    selection = HeldOutSelection(out_images, out_targets, cfg, request.workdir, steps, meta, request.device)
    trainer.fit(supervised_step, batches, sampler=sampler, after_step=selection)
    distributed.barrier()  # rank 0 has written best.pt
    if not (request.workdir / BEST).is_file():
        raise RuntimeError(f"supervised: {request.workdir / BEST} was not written (no held-out measurement ran)")
    return request.workdir / BEST


def supervised_step(model: torch.nn.Module, batch: dict, ctx: StepContext) -> torch.Tensor:
    """The Trainer step: masked BCE of the logits of one augmented view."""
    (images,) = batch["views"]  # (B, C, S, S)
    return masked_bce(model(images), batch["targets"])  # logits (B, L) against targets (B, L)
