"""MSN / MSN+EHR pretraining on a task's training images: builds the model and hands it to the shared Trainer.

The entry point of ``MSNMethod.train`` / ``MSNEHRMethod.train`` (``BaselineMethod.pretrain``
calls it): the loop glue between the architecture (``model.MSN``) and the objective
(``losses.MSNLoss``). Train-only by construction: ``TrainingData`` holds the task's
TRAINING split and nothing else (``harness.cohort.training_data``), which fixes the
released code's pretraining on all 376,201 images. Resumable and DDP-ready through
``baselines.common.train``.

EHR (``msn-ehr`` only) comes from the ``ehr_*`` columns the MIMIC-CXR adapter
joins from MIMIC-IV, encoded by ``harness.data.ehr.encode_ehr``. Images without
EHR are imputed or excluded as ``ehr.missing`` says; the counts go to the log,
``run.json`` and the checkpoint meta (``meta["ehr"]``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from baselines.common import distributed
from baselines.common.data import AugmentConfig, ViewBatches
from baselines.common.ema import ema_momentum
from baselines.common.encoder import imagenet_preprocess
from baselines.common.method import data_meta
from baselines.common.optim import weight_decay_groups
from baselines.common.sampling import StepSampler
from baselines.common.seeding import seed_all
from baselines.common.train import StepContext, TrainConfig, Trainer, warmup_cosine
from baselines.msn_ehr.config import EHRConfig, MSNConfig, MSNEHRConfig, config_dict
from baselines.msn_ehr.losses import MSNLoss
from baselines.msn_ehr.model import MSN, build_vit
from harness.data.ehr import GROUPS, VIEWS, ehr_coverage, encode_ehr
from harness.data.images import ImageView
from harness.data.schema import DataError
from harness.encoders import PretrainRequest

log = logging.getLogger(__name__)

_PATIENT_VARIABLES = {"sex", "age", "mortality", "icu"}  # need a MIMIC-IV subject
_SCAN_VARIABLES = {"view", "orientation"}  # from the image metadata


def _variables(groups: tuple[str, ...]) -> set[str]:
    return {v for g in groups for v in GROUPS.get(g, (g,))}


def rows_without_ehr(frame: pd.DataFrame, ehr: EHRConfig) -> np.ndarray:
    """``(N,)`` bool: rows whose EHR vector would be partly filled in rather than observed.

    No MIMIC-IV subject or no sex (when a patient variable is used), or a view outside
    PA / LATERAL / AP / LL (when the scan group is used): the rows the paper's feature
    notebook drops. Missing view / orientation alone is imputed as the paper does and not counted here.
    """
    variables = _variables(ehr.groups)
    missing = np.zeros(len(frame), dtype=bool)
    if variables & _PATIENT_VARIABLES:
        if "ehr_available" not in frame.columns:
            raise DataError(f"msn-ehr: EHR groups {list(ehr.groups)} need MIMIC-IV, but the training "
                            "records have no ehr_* columns (no mimiciv/<version>/hosp tables joined); "
                            "to probe another dataset, pretrain on MIMIC-CXR as the paper does: "
                            "--pretrain-on mimic-cxr")
        missing |= ~frame["ehr_available"].fillna(False).to_numpy(dtype=bool)
        if "sex" in variables:
            missing |= ~frame["ehr_sex"].fillna("").isin(["M", "F"]).to_numpy()
    if variables & _SCAN_VARIABLES:
        for column in ("view", "orientation"):
            if column not in frame.columns:
                raise DataError(f"msn-ehr: the scan-metadata group needs the records column {column!r}")
        view = frame["view"].fillna("").astype(str)
        missing |= ~(view.isin(VIEWS) | (view == "")).to_numpy()
    return missing


def ehr_features(frame: pd.DataFrame, ehr: EHRConfig) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """``(features (M, d) float32, kept rows (M,), info)`` for the training frame.

    ``info`` is aggregate only (counts, feature names): safe for logs and results.
    """
    missing = rows_without_ehr(frame, ehr)
    keep = np.flatnonzero(~missing) if ehr.missing == "exclude" else np.arange(len(frame))
    if len(keep) == 0:
        raise DataError(f"msn-ehr: all {len(frame)} training images lack EHR and ehr.missing=exclude")
    kept = frame.iloc[keep].reset_index(drop=True)
    features, names = encode_ehr(kept, ehr.groups, ehr.age_encoding, impute=ehr.impute)
    info = {"groups": list(ehr.groups), "age_encoding": ehr.age_encoding, "dim": len(names), "features": names,
            "missing_policy": ehr.missing, "images": len(frame), "images_without_ehr": int(missing.sum()),
            "images_excluded": len(frame) - len(keep), "images_used": len(keep),
            "coverage": ehr_coverage(kept) if {"view", "orientation"} <= set(kept.columns) else {}}
    log.info("msn-ehr: EHR %s (%d features, age %s): %d of %d training images without EHR -> %s",
             list(ehr.groups), len(names), ehr.age_encoding, info["images_without_ehr"], len(frame),
             "excluded" if ehr.missing == "exclude" else "imputed (harness.data.ehr rules)")
    return features, keep, info


class MSNBatches:
    """The Trainer batch: ``ViewBatches``' views (target, random anchor, focal anchors) plus each image's EHR."""

    def __init__(self, views: ViewBatches, ehr: torch.Tensor | None) -> None:
        self.views, self.ehr = views, ehr

    def __call__(self, ctx: StepContext) -> dict[str, Any]:
        batch = self.views(ctx)  # {"views": [...], "indices": (B,)}
        if self.ehr is not None:
            batch["ehr"] = self.ehr[batch["indices"]]  # (B, ehr_in)
        return batch


def view_configs(cfg: MSNConfig) -> tuple[AugmentConfig, ...]:
    """Two random views (target, first anchor) then the focal views (lightly ``MSNTransform``)."""
    common = {"rotation": cfg.rotation, "hflip": cfg.hflip, "brightness": cfg.brightness, "contrast": cfg.contrast}
    random_view = AugmentConfig(size=cfg.image_size, scale=cfg.random_scale, **common)
    focal_view = AugmentConfig(size=cfg.focal_size, scale=cfg.focal_scale, **common)
    return (random_view, random_view) + (focal_view,) * cfg.num_focal_views


def build_model(cfg: MSNConfig, ehr_in: int) -> MSN:
    return MSN(lambda: build_vit(cfg.backbone, patch_size=cfg.patch_size, num_heads=cfg.num_heads,
                                 image_size=cfg.image_size),
               num_prototypes=cfg.num_prototypes, mask_ratio=cfg.mask_ratio, momentum=cfg.momentum,
               ehr_in=ehr_in, ehr_embed_dim=cfg.ehr.embed_dim if isinstance(cfg, MSNEHRConfig) else 128,
               train_prototypes=cfg.train_prototypes, masking=cfg.masking)


def build_optimizer(model: MSN, cfg: MSNConfig) -> torch.optim.AdamW:
    """AdamW over the trained parameters, decayed as ``cfg.weight_decay_on`` says.

    Args:
        model: the MSN model (frozen parameters, the target branch and frozen prototypes, are left out).
        cfg: lr, weight decay and its scope (``all``: the released code; ``weights``: MSN's ``init_opt``,
            which never decays the prototypes).

    Returns:
        The optimiser, one parameter group per decay value.
    """
    groups = weight_decay_groups(model.named_parameters(), cfg.weight_decay, cfg.weight_decay_on,
                                 exclude=[model.prototypes])
    return torch.optim.AdamW(groups, lr=cfg.lr)


def target_momentum(cfg: MSNConfig, step: int, total_steps: int) -> float:
    """The EMA momentum of the target update after optimiser step ``step``.

    Args:
        cfg: ``momentum``, ``momentum_schedule`` and ``momentum_final``.
        step: the step just taken (0-based).
        total_steps: the run's length.

    Returns:
        ``m`` for ``MSN.momentum_update_target`` (``baselines.common.ema.ema_momentum``).
    """
    return ema_momentum(step, total_steps, cfg.momentum, cfg.momentum_schedule, cfg.momentum_final)


def pretrain(request: PretrainRequest, cfg: MSNConfig, card: dict[str, Any]) -> Path:
    """Train (MSN or MSN+EHR) on ``request.data`` into ``request.workdir``; return the final checkpoint."""
    info = distributed.info()
    frame, images = request.data.frame, request.data.images
    ehr, ehr_info = None, None
    if isinstance(cfg, MSNEHRConfig):
        features, keep, ehr_info = ehr_features(frame, cfg.ehr)
        ehr = torch.from_numpy(features)  # (M, ehr_in), row-aligned with the kept images
        images = ImageView(images, keep)  # the kept images, row-aligned with the EHR vectors
    rank_batch = cfg.rank_batch(info.world_size, "msn")
    steps = cfg.total_steps(len(images))

    seed_all(request.seed)  # the initialisation (ViT, heads, prototypes, fusion) is a function of the seed
    model = build_model(cfg, ehr.shape[1] if ehr is not None else 0)
    optimizer = build_optimizer(model, cfg)
    scheduler = warmup_cosine(optimizer, steps, cfg.warmup_steps)  # cosine to 0 (the code: per epoch)
    loss_fn = MSNLoss(cfg.temperature, cfg.sharpen_temperature, cfg.sinkhorn_iterations, cfg.me_max_weight)

    sampler = StepSampler(len(images), rank_batch, seed=request.seed, rank=info.rank, world_size=info.world_size)
    views = ViewBatches(images, sampler, view_configs(cfg), imagenet_preprocess(cfg.image_size, 1),
                        device=request.device)
    meta = {"method": card["name"], "config": config_dict(cfg), "card": card, "ehr": ehr_info,
            "data": data_meta(request.data, num_images=len(frame), num_images_used=len(images))}
    trainer = Trainer(model, optimizer, TrainConfig.for_method(cfg, request, steps), request.workdir,
                      scheduler=scheduler, meta=meta)

    def step(model: torch.nn.Module, batch: dict, ctx: StepContext) -> tuple[torch.Tensor, dict]:
        anchors, targets, prototypes = model(batch["views"], batch.get("ehr"), generator=ctx.generator(1))
        return loss_fn(anchors, targets, prototypes)

    return trainer.fit(step, MSNBatches(views, ehr), sampler=sampler,
                       after_step=lambda model, ctx: model.momentum_update_target(
                           target_momentum(cfg, ctx.step, ctx.total_steps)))
