"""How images are prepared for an encoder: ``Preprocess`` (shipped with its weights) and the conversion.

uint8 grey images from the image cache become the float tensors an encoder's card
asks for: resized to ``image_size``, ``channels`` 1 or 3 (the grey channel
repeated), normalised with ``mean`` / ``std``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch stays out of `harness ls`: the conversions import it when called
    import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocess:
    """How images must be prepared for an encoder (shipped with its weights)."""

    image_size: int = 224
    channels: int = 3  # 1 for grey-native models; 3 repeats the grey channel
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError("mean and std need one value per channel")


def to_model_input(images: np.ndarray | torch.Tensor, preprocess: Preprocess, device: str | torch.device = "cpu"
                   ) -> torch.Tensor:
    """``(B, H, W)`` uint8 -> ``(B, C, S, S)`` float, resized, channel-repeated and normalised."""
    import torch
    import torch.nn.functional as F

    x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
    if x.dtype != torch.uint8:
        raise TypeError(f"expected uint8 images, got {x.dtype}")
    x = x.to(device=device, dtype=torch.float32).div_(255.0).unsqueeze(1)
    if x.shape[-1] != preprocess.image_size or x.shape[-2] != preprocess.image_size:
        x = F.interpolate(x, size=(preprocess.image_size,) * 2, mode="bilinear", align_corners=False,
                          antialias=True)
    if preprocess.channels == 3:
        x = x.expand(-1, 3, -1, -1)
    mean = torch.tensor(preprocess.mean, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(preprocess.std, device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std


def from_model_input(x: torch.Tensor, preprocess: Preprocess) -> torch.Tensor:
    """Undo the normalisation: ``(B, C, S, S)`` -> ``(B, 1, S, S)`` in [0, 1] (first channel)."""
    import torch

    mean = torch.tensor(preprocess.mean, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(preprocess.std, device=x.device).view(1, -1, 1, 1)
    return (x * std + mean)[:, :1].clamp(0, 1)
