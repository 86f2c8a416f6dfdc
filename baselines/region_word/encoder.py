"""``RegionWordEncoder``: a pretrained ``RegionWordModel`` as a harness image, region and text encoder.

Global image vector, projected regions and the [CLS] sentence vector, all in one joint
space of ``embed_dim`` (``joint_space``: the localization and retrieval protocols compare
them directly). Inputs are ``(B, 3, S, S)`` images as the card's preprocessing gives them
and report strings, tokenised by the tokenizer the model was trained with.
"""

from __future__ import annotations

import torch
from torch import nn

from baselines.common.text import TextTokenizer
from baselines.region_word.model import RegionWordModel
from harness.encoders import MethodCard


class RegionWordEncoder(nn.Module):
    """Image global / region features and report sentence vectors in one joint space of ``embed_dim``."""

    joint_space = True

    def __init__(self, model: RegionWordModel, tokenizer: TextTokenizer, card: MethodCard) -> None:
        super().__init__()
        self.model, self.tokenizer, self.card = model, tokenizer, card
        self.num_features: int = model.embed_dim
        self.region_grid: tuple[int, int] = model.backbone.grid(card.preprocess.image_size)

    def _check(self, images: torch.Tensor) -> None:
        size = self.card.preprocess.image_size
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"region-word: expected (B, 3, {size}, {size}) images, got {tuple(images.shape)}")

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S) -> (B, embed_dim)``: the projected global image vector."""
        self._check(images)
        return self.model.image_features(images)[0]

    def encode_image_regions(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S) -> (B, h*w, embed_dim)`` over ``region_grid`` (row-major)."""
        self._check(images)
        regions = self.model.image_features(images)[1]
        h, w = self.region_grid
        if regions.shape[1] != h * w:
            raise ValueError(f"region-word: {regions.shape[1]} regions for a {h}x{w} grid; images must be "
                             f"{self.card.preprocess.image_size} px")
        return regions

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """``list[str] -> (B, embed_dim)``: the projected [CLS] sentence vector."""
        device = self.model.sentence_proj.weight.device
        ids, mask = self.tokenizer.encode(texts)
        return self.model.text_features(ids.to(device), mask.to(device))[0]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.encode_image(images)
