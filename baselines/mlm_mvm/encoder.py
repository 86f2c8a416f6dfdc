"""``MLMMVMEncoder``: a pretrained ``MLMMVMModel`` as a harness image, text and regeneration encoder.

Image vectors from the [IMG] token of an image-only pass, report vectors from the [CLS]
token of a text-only pass (projected into one space when the contrastive term trained
the alignment heads), and ``regenerate``: the pixel decoder filling hidden pixels.
Inputs are ``(B, 1, S, S)`` grey images in [-1, 1] as the card's preprocessing gives them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from baselines.common.text import TextTokenizer
from baselines.mlm_mvm.model import MLMMVMModel
from harness.encoders import MethodCard


class MLMMVMEncoder(nn.Module):
    """Image / report vectors and masked-image regeneration of a pretrained ``MLMMVMModel``."""

    def __init__(self, model: MLMMVMModel, tokenizer: TextTokenizer, card: MethodCard) -> None:
        super().__init__()
        self.model, self.tokenizer, self.card = model, tokenizer, card
        self.num_features: int = model.num_features

    def _check(self, images: torch.Tensor) -> None:
        size = self.card.preprocess.image_size
        if images.ndim != 4 or images.shape[1] != 1 or images.shape[-1] != size or images.shape[-2] != size:
            raise ValueError(f"mlm-mvm: expected (B, 1, {size}, {size}) images, got {tuple(images.shape)}")

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 1, S, S) -> (B, num_features)``: the [IMG] token of an image-only pass."""
        self._check(images)
        return self.model.image_vector(images)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """``list[str] -> (B, num_features)``: the [CLS] token of a text-only pass."""
        ids, mask = self.tokenizer.encode(texts)
        device = self.model.patch_embed.weight.device
        return self.model.report_vector(ids.to(device), mask.to(device))

    def regenerate(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``(B, 1, S, S)`` images and hidden-pixel mask -> the images with hidden pixels regenerated.

        A patch that holds any hidden pixel is replaced by the mask token; the decoder's
        pixels fill the hidden pixels and the visible ones are kept as given.
        """
        self._check(images)
        p = self.model.cfg.patch_size
        patch_mask = F.max_pool2d(mask.float(), kernel_size=p, stride=p).flatten(1) > 0  # (B, N)
        image_out, _ = self.model.encode(self.model.embed_image(images, patch_mask), None)
        regenerated = self.model.unpatchify(self.model.decode_pixels(image_out))  # (B, 1, S, S)
        return torch.where(mask.bool(), regenerated.to(images.dtype), images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.encode_image(images)
