"""How images are prepared for an encoder: ``Preprocess`` (shipped with its weights) and the conversion.

uint8 grey images from the image cache become the float tensors an encoder's card
asks for, in this order (``to_model_input``):

1. **resize** to ``resize_to`` when it is set (the side before a centre crop), else
   straight to ``image_size``, with ``resize_mode`` (``bilinear`` or ``bicubic``,
   antialiased, or ``nearest``); the image cache already stores the images at that side
   (``Preprocess.stored_size``), so this step usually does nothing;
2. **centre crop** to ``image_size`` when ``resize_to`` is set (offset
   ``(resize_to - image_size) // 2``, as Hugging Face's image processors crop);
3. **pixel range**: 0..255 maps linearly onto ``pixel_range`` (``(0, 1)`` by default,
   ``(-1024, 1024)`` for torchxrayvision, ``(0, 255)`` for a model normalised on raw
   pixel values);
4. **channels** 1 or 3 (the grey channel repeated);
5. **normalise** with ``mean`` / ``std`` (one value per channel).

``image_size`` is always the side of the tensor the encoder receives; the fields added
later (``resize_to``, ``resize_mode``, ``pixel_range``) default to what every earlier card
meant: resize straight to ``image_size``, bilinear, pixels in [0, 1].
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from numbers import Integral
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # torch stays out of `harness ls`: the conversions import it when called
    import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_MODES = ("bilinear", "bicubic", "nearest")


@dataclass(frozen=True)
class Preprocess:
    """How images must be prepared for an encoder (shipped with its weights; see the module docstring)."""

    image_size: int = 224  # the side of the square tensor the encoder receives (after any crop)
    channels: int = 3  # 1 for grey-native models; 3 repeats the grey channel
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    resize_to: int | None = None  # resize to this side, then centre-crop image_size; None: no crop
    resize_mode: str = "bilinear"  # bilinear | bicubic (both antialiased) | nearest
    pixel_range: tuple[float, float] = (0.0, 1.0)  # what 0 and 255 become before mean / std

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError("mean and std need one value per channel")
        if any(float(s) <= 0 for s in self.std):
            raise ValueError(f"std must be positive, got {tuple(self.std)}")
        if not (isinstance(self.image_size, Integral) and self.image_size > 0):
            raise ValueError(f"image_size must be a positive int, got {self.image_size!r}")
        crop_ok = isinstance(self.resize_to, Integral) and self.resize_to >= self.image_size
        if self.resize_to is not None and not crop_ok:
            raise ValueError(f"resize_to must be an int of at least image_size {self.image_size} (the crop), got "
                             f"{self.resize_to!r}")
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {self.resize_mode!r}")
        if len(self.pixel_range) != 2 or not float(self.pixel_range[0]) < float(self.pixel_range[1]):
            raise ValueError(f"pixel_range must be (low, high) with low < high, got {tuple(self.pixel_range)}")

    @property
    def stored_size(self) -> int:
        """The side the image cache stores the images at for this card: before any crop."""
        return self.resize_to or self.image_size

    def describe(self) -> dict[str, Any]:
        """The fields as plain JSON values (what a record stores)."""
        out = asdict(self)
        out["mean"], out["std"] = [float(v) for v in self.mean], [float(v) for v in self.std]
        out["pixel_range"] = [float(v) for v in self.pixel_range]
        return out


def _resize(x: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    import torch.nn.functional as F

    if mode == "nearest":
        return F.interpolate(x, size=(size, size), mode="nearest")
    out = F.interpolate(x, size=(size, size), mode=mode, align_corners=False, antialias=True)
    # bicubic overshoots at edges; PIL (what image processors use) clips to the pixel range
    return out.clamp_(0.0, 1.0) if mode == "bicubic" else out


def to_model_input(images: np.ndarray | torch.Tensor, preprocess: Preprocess, device: str | torch.device = "cpu"
                   ) -> torch.Tensor:
    """``(B, H, W)`` uint8 -> ``(B, C, S, S)`` float: resized, cropped, scaled, channel-repeated, normalised."""
    import torch

    x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
    if x.dtype != torch.uint8:
        raise TypeError(f"expected uint8 images, got {x.dtype}")
    x = x.to(device=device, dtype=torch.float32).div_(255.0).unsqueeze(1)
    side = preprocess.stored_size
    if x.shape[-1] != side or x.shape[-2] != side:
        x = _resize(x, side, preprocess.resize_mode)
    if preprocess.resize_to is not None and preprocess.resize_to != preprocess.image_size:
        top = (side - preprocess.image_size) // 2
        x = x[..., top:top + preprocess.image_size, top:top + preprocess.image_size]
    low, high = (float(v) for v in preprocess.pixel_range)
    if (low, high) != (0.0, 1.0):
        x = x * (high - low) + low
    if preprocess.channels == 3:
        x = x.expand(-1, 3, -1, -1)
    mean = torch.tensor(preprocess.mean, device=x.device, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(preprocess.std, device=x.device, dtype=torch.float32).view(1, -1, 1, 1)
    return (x - mean) / std


def from_model_input(x: torch.Tensor, preprocess: Preprocess) -> torch.Tensor:
    """Undo the normalisation and pixel range: ``(B, C, S, S)`` -> ``(B, 1, S, S)`` in [0, 1] (first channel)."""
    import torch

    mean = torch.tensor(preprocess.mean, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(preprocess.std, device=x.device).view(1, -1, 1, 1)
    low, high = (float(v) for v in preprocess.pixel_range)
    return ((x * std + mean)[:, :1] - low).div(high - low).clamp(0, 1)
