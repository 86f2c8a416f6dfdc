"""``pixels``: the config and its three profiles (how far the image is downsampled, and into which grid).

``grid`` is the side of the downsampled image: ``image_size`` must be a multiple of it, so every
feature is the plain mean of one ``image_size / grid`` square block of pixels (area averaging, no
interpolation weights). ``regions`` is the side of the region grid the downsampled image is cut into
(``grid`` a multiple of it): region ``(i, j)`` is its ``grid / regions`` square patch, flattened.

Why these sizes: a linear probe fits one weight per feature and label, and the synthetic world's
training splits hold a few thousand images, so the global vector is kept in the hundreds (16 x 16 =
256 at ``small``, about half the 512 features of the ResNet-18 it is compared with), where the probe
is well posed; a block of 8 x 8 px of a 128 px image keeps what a thumbnail shows (heart size, lung
fields, effusions, large opacities) and averages away what only learnt filters find (fine texture,
thin lines). ``paper`` keeps 8 px blocks at 224 px (28 x 28 = 784 features). The region grid matches
the ResNet grid of the same profile (4 x 4 at 128 px, 7 x 7 at 224 px), so a region decoder or a region
protocol sees the same layout as for the backbones.
"""

from __future__ import annotations

from dataclasses import dataclass

from baselines.common.config import MethodConfig, to_dict


@dataclass(frozen=True)
class PixelsConfig(MethodConfig):
    """Downsampled raw pixels; ``seed`` is unused (nothing is random) but kept so every profile names one."""

    image_size: int = 128
    grid: int = 16  # the side of the downsampled image: grid x grid global features
    regions: int = 4  # the side of the region grid: regions x regions patches of (grid / regions)^2 pixels

    def __post_init__(self) -> None:
        if min(self.image_size, self.grid, self.regions) <= 0:
            raise ValueError(f"pixels: image_size, grid and regions must be positive, got {self}")
        if self.image_size % self.grid:
            raise ValueError(f"pixels: image_size {self.image_size} must be a multiple of grid {self.grid} "
                             "(each feature is the mean of one square block)")
        if self.grid % self.regions:
            raise ValueError(f"pixels: grid {self.grid} must be a multiple of regions {self.regions} "
                             "(each region is one square patch of the downsampled image)")

    @property
    def block(self) -> int:
        """Pixels per side of the block one feature averages."""
        return self.image_size // self.grid

    @property
    def patch(self) -> int:
        """Downsampled pixels per side of one region."""
        return self.grid // self.regions


PROFILES = {
    "smoke": to_dict(PixelsConfig(image_size=32, grid=8, regions=4)),
    "small": to_dict(PixelsConfig(image_size=128, grid=16, regions=4)),
    "paper": to_dict(PixelsConfig(image_size=224, grid=28, regions=7)),
}
