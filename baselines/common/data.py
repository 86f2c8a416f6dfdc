"""Pretraining batches over ``TrainingData.images`` with CXR-safe augmentations.

Why these augmentations. A chest radiograph's meaning depends on anatomy and
on faint grey-level differences, so the views are built from what keeps both
(MoCo-CXR, Sowrirajan et al. 2021): a random resized crop with a *conservative*
area range (most of the thorax stays in view), a small rotation (patients are
not always square to the detector), an optional horizontal flip (recipe
choice: it swaps the heart's side, which MoCo-CXR accepted), and, a harness
addition MoCo-CXR does not make, small brightness/contrast changes (exposure
varies between machines). No colour jitter (the images are grey), no blur, no
solarisation.

How. All geometric changes of one view are one affine map per image applied
with a single ``grid_sample`` on the batch, on whatever device the batch is on;
the random parameters come from a seeded ``torch.Generator`` on the CPU, so a
batch is a pure function of (seed, step, rank) on CPU and on CUDA alike.

Use as a ``Trainer`` batch function::

    sampler = StepSampler(len(data.images), batch_size=32, seed=seed, rank=r, world_size=w)
    batches = ViewBatches(data.images, sampler, (AugmentConfig(),) * 2, card.preprocess, device=device)
    batch = batches(ctx)   # {"views": [x1, x2], "indices": idx}; each (B, C, S, S), normalised
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from harness.encoders import Preprocess


@dataclass(frozen=True)
class AugmentConfig:
    """One view's augmentation. Flip and rotation follow MoCo-CXR's "chexpert" augmentations; the crop's area
    range and the brightness / contrast changes are harness additions (MoCo-CXR: a fixed-size crop, no
    photometric change)."""

    size: int | None = None  # output side in px; None: the encoder's preprocess.image_size
    scale: tuple[float, float] = (0.6, 1.0)  # crop area fraction; conservative so the thorax stays in view
    ratio: tuple[float, float] = (3 / 4, 4 / 3)  # crop aspect range (log-uniform), as RandomResizedCrop
    rotation: float = 10.0  # max degrees either way (MoCo-CXR RandomRotation(10))
    hflip: bool = True  # MoCo-CXR flips; a recipe that cares about laterality sets False
    brightness: float = 0.1  # additive shift of the [0, 1] intensities, uniform in +-brightness
    contrast: float = 0.1  # multiplicative spread about each image's mean, uniform in 1 +- contrast

    def __post_init__(self) -> None:
        if not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise ValueError(f"scale must satisfy 0 < min <= max <= 1, got {self.scale}")
        if not 0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError(f"bad ratio range {self.ratio}")


def _crop_rotate_flip_params(n: int, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """``(n, 2, 3)`` affine maps from output to input coordinates in [-1, 1] (``affine_grid`` convention)."""
    u = torch.rand(n, 6, generator=generator, dtype=torch.float64)
    area = cfg.scale[0] + (cfg.scale[1] - cfg.scale[0]) * u[:, 0]
    log_r = math.log(cfg.ratio[0]) + (math.log(cfg.ratio[1]) - math.log(cfg.ratio[0])) * u[:, 1]
    aspect = torch.exp(log_r)
    w = torch.sqrt(area * aspect).clamp(max=1.0)  # crop half-extent in normalised units (1 = whole image)
    h = torch.sqrt(area / aspect).clamp(max=1.0)
    cx = (1 - w) * (2 * u[:, 2] - 1)  # crop centre, kept inside the image
    cy = (1 - h) * (2 * u[:, 3] - 1)
    angle = math.radians(cfg.rotation) * (2 * u[:, 4] - 1)
    flip = torch.where((u[:, 5] < 0.5) & cfg.hflip, -1.0, 1.0).to(torch.float64)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([
        torch.stack([w * cos * flip, -h * sin, cx], dim=1),
        torch.stack([w * sin * flip, h * cos, cy], dim=1),
    ], dim=1)  # (n, 2, 3)
    return theta.float()


def augment(images: torch.Tensor, cfg: AugmentConfig, size: int, generator: torch.Generator) -> torch.Tensor:
    """``(B, H, W)`` uint8 -> ``(B, 1, size, size)`` float in [0, 1], one random view per image."""
    n = images.shape[0]
    theta = _crop_rotate_flip_params(n, cfg, generator).to(images.device)
    photometric = torch.rand(n, 2, generator=generator)
    x = images.unsqueeze(1).float().div_(255.0)  # (B, 1, H, W)
    grid = F.affine_grid(theta, [n, 1, size, size], align_corners=False)  # (B, size, size, 2)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)  # (B, 1, size, size)
    contrast = (1 + cfg.contrast * (2 * photometric[:, 0] - 1)).to(x.device).view(n, 1, 1, 1)
    brightness = (cfg.brightness * (2 * photometric[:, 1] - 1)).to(x.device).view(n, 1, 1, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * contrast + mean + brightness).clamp_(0.0, 1.0)


def normalize(x: torch.Tensor, preprocess: Preprocess) -> torch.Tensor:
    """``(B, 1, S, S)`` in [0, 1] -> ``(B, C, S, S)`` as ``harness.encoders.preprocess.to_model_input`` would give."""
    if preprocess.channels == 3:
        x = x.expand(-1, 3, -1, -1)
    mean = torch.tensor(preprocess.mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    std = torch.tensor(preprocess.std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - mean) / std


class ViewBatches:
    """A ``Trainer`` batch function: ``len(views)`` augmented views of this step's images.

    Args:
        images: ``(N, S, S)`` uint8, indexable with an index array (``TrainingData.images``).
        sampler: gives this rank's indices per step (``StepSampler``).
        views: one ``AugmentConfig`` per view (MoCo: two identical configs).
        preprocess: the encoder card's preprocessing (channels, mean, std, default size).
        device: where the augmentation runs (the training device).
    """

    def __init__(self, images: Any, sampler: Any, views: tuple[AugmentConfig, ...], preprocess: Preprocess,
                 device: str | torch.device = "cpu") -> None:
        if len(images) == 0:
            raise ValueError("no training images")
        self.images, self.sampler, self.views = images, sampler, tuple(views)
        self.preprocess, self.device = preprocess, torch.device(device)

    def load(self, indices: np.ndarray) -> torch.Tensor:
        """``(B, S, S)`` uint8 on the device."""
        batch = np.asarray(self.images[indices])
        if batch.dtype != np.uint8 or batch.ndim != 3:
            raise TypeError(f"expected (B, H, W) uint8 images, got {batch.dtype} {batch.shape}")
        return torch.from_numpy(batch).to(self.device, non_blocking=True)

    def __call__(self, ctx: Any) -> dict[str, Any]:
        indices = self.sampler.indices(ctx.step)
        raw = self.load(indices)
        generator = ctx.generator(0)
        views = [normalize(augment(raw, cfg, cfg.size or self.preprocess.image_size, generator), self.preprocess)
                 for cfg in self.views]
        return {"views": views, "indices": torch.from_numpy(indices)}
