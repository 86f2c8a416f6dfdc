"""``BackboneEncoder``: any ``Backbone`` as a harness image + region encoder.

Implements ``harness.encoders.ImageEncoder`` and ``RegionEncoder`` (and, being an
``nn.Module``, the ``trainable`` capability), so ``random``, ``imagenet``, ``moco``
and ``msn`` share one encoder and later methods can reuse it::

    encoder = BackboneEncoder(build_backbone("resnet18"), card)
    encoder.encode_image(x)           # (B, D)
    encoder.encode_image_regions(x)   # (B, h*w, D), h, w = encoder.region_grid

Inputs are what ``harness.encoders.preprocess.to_model_input(images, card.preprocess)``
returns: ``(B, card.preprocess.channels, S, S)`` with ``S = image_size``.
"""

from __future__ import annotations

import torch
from torch import nn

from baselines.common.backbones import Backbone
from harness.encoders import IMAGENET_MEAN, IMAGENET_STD, MethodCard, Preprocess

# ImageNet statistics collapsed to one grey channel (mean of the RGB values), for 1-channel stems.
GREY_IMAGENET_MEAN, GREY_IMAGENET_STD = (0.449,), (0.226,)


def imagenet_preprocess(image_size: int, channels: int = 3) -> Preprocess:
    """ImageNet normalisation for ``channels`` 3 (grey repeated) or 1 (grey stem)."""
    if channels == 3:
        return Preprocess(image_size=image_size, channels=3, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    return Preprocess(image_size=image_size, channels=1, mean=GREY_IMAGENET_MEAN, std=GREY_IMAGENET_STD)


class BackboneEncoder(nn.Module):
    """Global and region features of a backbone, with the card that says how to feed it."""

    def __init__(self, backbone: Backbone, card: MethodCard) -> None:
        super().__init__()
        if card.preprocess.channels != backbone.in_chans:
            raise ValueError(f"{card.name}: card preprocess has {card.preprocess.channels} channels but "
                             f"backbone {backbone.name} takes {backbone.in_chans}")
        self.backbone, self.card = backbone, card
        self.num_features: int = backbone.num_features
        self.region_grid: tuple[int, int] = backbone.grid(card.preprocess.image_size)

    def _check(self, images: torch.Tensor) -> None:
        size, chans = self.card.preprocess.image_size, self.card.preprocess.channels
        if images.ndim != 4 or images.shape[1] != chans:
            raise ValueError(f"{self.card.name}: expected (B, {chans}, {size}, {size}) images, got "
                             f"{tuple(images.shape)}")

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C, S, S) -> (B, num_features)``."""
        self._check(images)
        return self.backbone(images)

    def encode_image_regions(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C, S, S) -> (B, h*w, num_features)`` over ``region_grid`` (row-major)."""
        self._check(images)
        regions = self.backbone.regions(images)  # (B, R, D)
        h, w = self.region_grid
        if regions.shape[1] != h * w:
            raise ValueError(f"{self.card.name}: {regions.shape[1]} regions for a {h}x{w} grid; images must be "
                             f"{self.card.preprocess.image_size} px")
        return regions

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.encode_image(images)
