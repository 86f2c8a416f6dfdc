"""MoCo pretraining on a task's training images: builds the model and hands it to the shared Trainer.

The entry point of ``MoCoMethod.train`` (``BaselineMethod.pretrain`` calls it); resumable (a
checkpoint in ``workdir`` is picked up) and DDP-ready (launch the runner under ``torchrun`` or
a multi-task submitit job). The loss is InfoNCE on the logits ``model.MoCo`` returns (``moco_step``).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from baselines.common import distributed
from baselines.common.backbones import Backbone, build_backbone
from baselines.common.config import to_dict
from baselines.common.data import AugmentConfig, ViewBatches
from baselines.common.encoder import imagenet_preprocess
from baselines.common.method import data_meta
from baselines.common.optim import weight_decay_groups
from baselines.common.sampling import StepSampler
from baselines.common.seeding import seed_all
from baselines.common.train import StepContext, TrainConfig, Trainer, step_decay
from baselines.moco.config import MoCoConfig
from baselines.moco.model import MoCo
from harness.encoders import PretrainRequest


def base_encoder(cfg: MoCoConfig) -> Backbone:
    """The backbone MoCo starts from: ImageNet weights (MoCo-CXR ``--from-imagenet``) or random."""
    if cfg.init == "imagenet":
        from baselines.imagenet.weights import imagenet_backbone

        return imagenet_backbone(cfg.backbone, image_size=cfg.image_size, weights=cfg.weights)
    return build_backbone(cfg.backbone, in_chans=3, image_size=cfg.image_size)


def queue_size(cfg: MoCoConfig, num_images: int, global_batch: int) -> int:
    """``cfg.K`` rounded down to a multiple of the global batch, and at most a quarter of the dataset.

    A queue that holds a large part of the dataset holds older keys of the very image
    being queried as negatives: the loss then rewards features that drift over time,
    and on the synthetic world (K capped at the dataset size) the loss sat at log(K+1)
    with top-1 at chance for the whole run. MoCo-CXR's 24,576 keys are ~11 % of
    CheXpert. The value used is recorded in the checkpoint meta.
    """
    cap = max(global_batch, (min(cfg.K, num_images // 4) // global_batch) * global_batch)
    return cap


def pretrain(request: PretrainRequest, cfg: MoCoConfig, card: dict) -> Path:
    """Train MoCo on ``request.data.images`` into ``request.workdir``; return the final checkpoint."""
    info = distributed.info()
    images = request.data.images
    global_batch = cfg.batch_size  # MoCo's --batch-size is the total over all processes
    rank_batch = cfg.rank_batch(info.world_size, "moco")
    steps = cfg.total_steps(len(images))
    K = queue_size(cfg, len(images), global_batch)
    steps_per_epoch = len(images) / global_batch

    seed_all(request.seed)  # the initialisation (random init, MLP heads, queue) is a function of the seed
    model = MoCo(lambda: base_encoder(cfg), dim=cfg.dim, K=K, m=cfg.m, T=cfg.T, mlp=cfg.mlp,
                 shuffle_bn_splits=cfg.shuffle_bn_splits, freeze_bn_stats=cfg.bn_stats == "frozen")
    optimizer = build_optimizer(model, cfg)
    scheduler = step_decay(optimizer, tuple(round(e * steps_per_epoch) for e in cfg.lr_decay_epochs))

    sampler = StepSampler(len(images), rank_batch, seed=request.seed, rank=info.rank, world_size=info.world_size)
    view = AugmentConfig(scale=cfg.scale, rotation=cfg.rotation, hflip=cfg.hflip, brightness=cfg.brightness,
                         contrast=cfg.contrast)
    batches = ViewBatches(images, sampler, (view, view), imagenet_preprocess(cfg.image_size, 3),
                          device=request.device)

    meta = {"method": "moco", "config": to_dict(cfg), "queue_size_used": K, "card": card,
            "data": data_meta(request.data, num_images=len(images))}
    trainer = Trainer(model, optimizer, TrainConfig.for_method(cfg, request, steps), request.workdir,
                      scheduler=scheduler, meta=meta)
    return trainer.fit(moco_step, batches, sampler=sampler)


def build_optimizer(model: MoCo, cfg: MoCoConfig) -> torch.optim.Adam:
    """Adam over the query encoder, weight decay on every parameter (MoCo-CXR ``main_moco.py --optimizer adam``).

    Args:
        model: the MoCo model (the key encoder, never trained by gradient, is left out).
        cfg: lr and weight decay.

    Returns:
        The optimiser.
    """
    groups = weight_decay_groups(model.named_parameters(), cfg.weight_decay, "all")
    return torch.optim.Adam(groups, lr=cfg.lr)


def moco_step(model: torch.nn.Module, batch: dict, ctx: StepContext) -> tuple[torch.Tensor, dict]:
    """The Trainer step: InfoNCE (cross-entropy with the positive key in column 0) and the contrast top-1.

    Args:
        model: the MoCo model (DDP-wrapped under torchrun).
        batch: ``{"views": [query images, key images]}``, ``(B, C, S, S)`` each.
        ctx: the step's context (unused: the shuffle is drawn from the global RNG, as in MoCo).

    Returns:
        The loss and ``{"top1": contrast accuracy}``.
    """
    im_q, im_k = batch["views"]  # two augmented views of the same images, (B, C, S, S) each
    logits, labels = model(im_q, im_k)  # (B, 1 + K), (B,)
    loss = F.cross_entropy(logits, labels)  # InfoNCE
    top1 = (logits.argmax(dim=1) == labels).float().mean()
    return loss, {"top1": top1.detach()}
