"""uint8 grey images from the cache -> the float tensors an encoder's card asks for."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from harness.methods import Preprocess


def to_model_input(images: np.ndarray | torch.Tensor, preprocess: Preprocess, device: str | torch.device = "cpu"
                   ) -> torch.Tensor:
    """``(B, H, W)`` uint8 -> ``(B, C, S, S)`` float, resized, channel-repeated and normalised."""
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
    mean = torch.tensor(preprocess.mean, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(preprocess.std, device=x.device).view(1, -1, 1, 1)
    return (x * std + mean)[:, :1].clamp(0, 1)
