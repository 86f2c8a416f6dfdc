"""``PixelsEncoder``: the image itself, area-averaged, as global and region features. Nothing is learnt.

Shapes, with ``S = image_size``, ``g = grid``, ``r = regions``, ``b = S / g``, ``p = g / r``::

    images              (B, 1, S, S)      grey, in [0, 1] (the card: mean 0, std 1)
    thumbnail           (B, g, g)         mean of each b x b block
    encode_image        (B, g * g)        the thumbnail, row-major
    encode_image_regions(B, r * r, p * p) region (i, j) = thumbnail[i*p:(i+1)*p, j*p:(j+1)*p], row-major
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from baselines.pixels.config import PixelsConfig
from harness.encoders import MethodCard


class PixelsEncoder(nn.Module):
    """The downsampled image as features (``harness.encoders`` image and region encoder).

    It has no parameters; its geometry is kept as a buffer (``pixels_geometry``) so that its
    weights hash (the feature cache key, the frozen guard) differs between configurations.
    """

    def __init__(self, cfg: PixelsConfig, card: MethodCard) -> None:
        super().__init__()
        self.cfg, self.card = cfg, card
        self.num_features: int = cfg.grid * cfg.grid
        self.region_grid: tuple[int, int] = (cfg.regions, cfg.regions)
        self.register_buffer("pixels_geometry", torch.tensor([cfg.image_size, cfg.grid, cfg.regions]))

    def _check(self, images: torch.Tensor) -> None:
        size = self.cfg.image_size
        if images.ndim != 4 or images.shape[1] != 1 or images.shape[-2:] != (size, size):
            raise ValueError(f"{self.card.name}: expected (B, 1, {size}, {size}) images, got {tuple(images.shape)}")

    def thumbnail(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 1, S, S) -> (B, g, g)``: the mean of each ``b x b`` block (exact area averaging)."""
        self._check(images)
        return F.avg_pool2d(images.float(), kernel_size=self.cfg.block)[:, 0]  # (B, g, g)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 1, S, S) -> (B, g*g)``."""
        return self.thumbnail(images).flatten(1)

    def encode_image_regions(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 1, S, S) -> (B, r*r, p*p)``: the thumbnail cut into ``r x r`` patches."""
        t = self.thumbnail(images)  # (B, g, g)
        r, p = self.cfg.regions, self.cfg.patch
        t = t.reshape(-1, r, p, r, p).permute(0, 1, 3, 2, 4)  # (B, r, r, p, p): patch (i, j), then its pixels
        return t.reshape(-1, r * r, p * p)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.encode_image(images)
