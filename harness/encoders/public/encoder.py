"""What every public-encoder route shares: the encoder module, its card, and the first forward pass.

A route builds the library's model from local files, then subclasses ``PublicEncoder``
with the methods its family has (``encode_image``; ``encode_image_regions`` +
``region_grid`` where the model has patch tokens or a feature map; ``encode_text`` for
dual encoders), because the harness reads capabilities from the methods an encoder has.
The methods use ``self.net`` only (no closures), so the deep copy a fine-tuning protocol
trains is a whole, independent model.

``finish`` runs the model once on a zero batch of the card's input size: a size or
channel count the library refuses is one line naming the input and where that size came
from, ``num_features`` and ``region_grid`` are read from the outputs, and a feature that
is not ``(B, D)`` (a head that is not a global feature) is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from harness.encoders.card import MethodCard
from harness.encoders.errors import SubmissionError
from harness.encoders.preprocess import Preprocess
from harness.encoders.weights import one_line


class PublicEncoder(nn.Module):
    """A library model (``self.net``) as a harness encoder; subclasses add the capability methods."""

    joint_space = False

    def __init__(self, card: MethodCard, net: nn.Module) -> None:
        super().__init__()
        self.card = card
        self.net = net.eval()
        self.num_features = 0


def card_for(family: str, name: str, preprocess: Preprocess, pretraining_data: tuple[str, ...],
             weights: str | Path | None, notes: list[str]) -> MethodCard:
    """The card of a public encoder: what it is, its preprocessing and where each came from (``notes``)."""
    from harness.storage import file_sha256

    what = f"{family}:{name}"
    paper = f"user weights {Path(weights).name} for {what}" if weights else f"user model directory for {what}"
    if weights and Path(weights).is_file():
        notes = [f"weights file sha256 {file_sha256(weights)}", *notes]
    return MethodCard(name=f"{family}-{Path(name).name}", paper=paper, preprocess=preprocess,
                      pretraining_data=tuple(pretraining_data), capabilities=("image", "trainable"),
                      notes="; ".join(notes))


def finish(encoder: PublicEncoder, what: str, size_from: str) -> PublicEncoder:
    """Probe ``encoder`` once (see the module docstring); returns it in eval mode.

    Args:
        encoder: the built encoder.
        what: the model, for messages (``timm:convnext_tiny``).
        size_from: where the input size came from (``timm's pretrained_cfg``, ``--image-size``).

    Raises:
        SubmissionError: the model refuses the input, or its outputs are not features.
    """
    import torch

    p = encoder.card.preprocess
    probe = torch.zeros(1, p.channels, p.image_size, p.image_size)
    encoder.eval()
    try:
        with torch.no_grad():
            out = encoder.encode_image(probe)
            regions = encoder.encode_image_regions(probe) if hasattr(encoder, "encode_image_regions") else None
    except SubmissionError:
        raise
    except Exception as exc:  # noqa: BLE001 - the library's own refusal (e.g. timm's fixed ViT size)
        raise SubmissionError(f"{what} refuses a {tuple(probe.shape)} input, {p.image_size} px as {size_from} "
                              f"says: {one_line(exc)}") from None
    if out.ndim != 2:
        raise SubmissionError(f"{what} returns {tuple(out.shape)} features for a {tuple(probe.shape)} input, not "
                              "(1, D): its head is not a global feature")
    encoder.num_features = int(out.shape[1])
    if regions is not None:
        grid = tuple(int(g) for g in encoder.region_grid)
        if regions.ndim != 3 or regions.shape[1] != grid[0] * grid[1]:
            raise SubmissionError(f"{what}: region features {tuple(regions.shape)} do not fill its {grid} grid")
    return encoder


def size_source(overrides: dict[str, Any], default: str) -> str:
    """Where the input size came from, for ``finish``'s message."""
    if "crop_size" in overrides:
        return "--crop-size"
    return "--image-size" if "image_size" in overrides else default


def map_to_regions(fmap: Any) -> Any:
    """A ``(B, C, h, w)`` feature map as ``(B, h*w, C)`` region features."""
    return fmap.flatten(2).transpose(1, 2)
