"""The method seam: encoder capability protocols, preprocessing, method cards.

A *method* (baseline or submission) turns pretraining data into a checkpoint and
a checkpoint into an *encoder*. An encoder declares what it can do by the
methods it has; a task lists the capabilities it requires and a run refuses a
mismatch before any work.

Images reach an encoder as float tensors ``(B, C, H, W)`` already preprocessed
as its card says (resized to ``image_size``, ``channels`` 1 or 3 by repeating
the grey channel, normalised with ``mean``/``std``). Encoders never move
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

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # torch stays out of `harness ls`
    from torch import Tensor

CAPABILITIES = ("image", "image_regions", "text", "regeneration", "trainable", "localization")

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


@dataclass(frozen=True)
class MethodCard:
    """What a leaderboard needs to know about a method or submission."""

    name: str
    paper: str  # citation or "harness design"; say what is a harness choice
    preprocess: Preprocess = field(default_factory=Preprocess)
    # Datasets and splits seen in pretraining, as "dataset:split" (e.g. "mimic-cxr:train",
    # "imagenet:train"). "{task}" means "the task's own dataset, training split".
    pretraining_data: tuple[str, ...] = ()
    # What the encoder it loads can do (checked against a task's requires before any work;
    # the loaded encoder is checked again with capabilities()).
    capabilities: tuple[str, ...] = ("image", "trainable")
    notes: str = ""


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


@dataclass
class PretrainRequest:
    """Everything a method's ``pretrain`` may use. Training split only, by construction.

    ``data.records.frame`` holds only ``split == "train"`` rows of the task's
    dataset; ``load_source(name)`` returns another dataset's training data for
    methods that mix sources (e.g. ``mlm-mvm`` cross-source unpaired).
    """

    data: Any  # harness.data.store.TrainingData
    config: dict[str, Any]  # the resolved profile config (+ --set overrides)
    workdir: Path  # checkpoints and logs for this pretraining run live here
    seed: int
    device: str
    load_source: Any = None  # Callable[[str], TrainingData]
    progress: bool = True


class Method(Protocol):
    """A registered method. ``harness`` reaches baselines only through this seam.

    ``profiles`` maps ``smoke`` / ``small`` / ``paper`` to config dicts.
    ``pretrain`` returns the path of a final checkpoint, or None for methods that
    do not pretrain (``random``, ``imagenet``). ``load`` builds the encoder
    from that checkpoint (or from nothing) with the same config.
    """

    card: MethodCard
    profiles: dict[str, dict[str, Any]]

    def pretrain(self, request: PretrainRequest) -> Path | None: ...

    def load(self, checkpoint: Path | None, config: dict[str, Any]) -> ImageEncoder: ...
