"""What an encoder can do: the capability protocols and the names tasks require.

An encoder declares what it can do by the methods it has; a task lists the
capabilities it requires (``TaskSpec.requires``) and a run refuses a mismatch
before any work.

Images reach an encoder as float tensors ``(B, C, H, W)`` already preprocessed
as its card says (``harness.encoders.preprocess``). Encoders never move
themselves to a device; the harness calls ``encoder.to(device)`` when the
encoder is a ``torch.nn.Module``.

Capabilities (``capabilities(encoder)``):

=================  ==========================================================
``image``          ``encode_image(images) -> (B, D)`` global features
``image_regions``  ``encode_image_regions(images) -> (B, R, Dr)`` region
                   features over a ``region_grid = (h, w)`` grid, R = h * w
``text``           ``encode_text(texts: list[str]) -> (B, Dt)``
``regeneration``   ``regenerate(images, mask) -> images``: mask ``(B, 1, H, W)``
                   bool, True where pixels were hidden; output in the same
                   normalised space as the input
``trainable``      the encoder is a ``torch.nn.Module`` whose ``encode_image``
                   is differentiable (fine-tuning)
``localization``   ``image_regions`` and ``text`` in one joint space
                   (``Dr == Dt``): a phrase embedding scores every region
=================  ==========================================================
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:  # torch stays out of `harness ls`
    from torch import Tensor

    from harness.encoders.card import MethodCard

CAPABILITIES = ("image", "image_regions", "text", "regeneration", "trainable", "localization")


@runtime_checkable
class ImageEncoder(Protocol):
    card: MethodCard
    num_features: int

    def encode_image(self, images: Tensor) -> Tensor: ...


@runtime_checkable
class RegionEncoder(Protocol):
    region_grid: tuple[int, int]

    def encode_image_regions(self, images: Tensor) -> Tensor: ...


@runtime_checkable
class TextEncoder(Protocol):
    def encode_text(self, texts: list[str]) -> Tensor: ...


@runtime_checkable
class Regenerator(Protocol):
    def regenerate(self, images: Tensor, mask: Tensor) -> Tensor: ...


def capabilities(encoder: object) -> set[str]:
    """The capability names an encoder object offers (see the module docstring)."""
    caps: set[str] = set()
    if isinstance(encoder, ImageEncoder):
        caps.add("image")
    if isinstance(encoder, RegionEncoder):
        caps.add("image_regions")
    if isinstance(encoder, TextEncoder):
        caps.add("text")
    if isinstance(encoder, Regenerator):
        caps.add("regeneration")
    try:
        import torch

        if isinstance(encoder, torch.nn.Module) and "image" in caps:
            caps.add("trainable")
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    if {"image_regions", "text"} <= caps and getattr(encoder, "joint_space", False):
        caps.add("localization")
    return caps


def missing_capabilities(encoder: object, required: tuple[str, ...]) -> list[str]:
    have = capabilities(encoder)
    return [c for c in required if c not in have]
