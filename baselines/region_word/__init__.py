"""``region-word``: JoImTeRNet-style joint image-report pretraining with word-region alignment.

Ji, Shaikh et al., "Improving Joint Learning of Chest X-Ray and Radiology Report
by Word Region Alignment", MLMI 2021 (specs/methods.md section 2), whose losses
follow GLoRIA / AttnGAN-DAMSM: sentence-level image-text CE, word-region
attention CE, sentence and word-region triplets, plus MLM on the reports.
Usage::

    python -m harness run --method region-word --task mimic-retrieval                  # small: CPU minutes
    python -m harness run --method region-word --task mimic-retrieval --profile paper  # 224 px, 35 epochs (GPU)
    python -m harness run --method region-word --task mimic-retrieval --set text_model=minilm

``load`` returns a ``RegionWordEncoder``: the global image vector, projected
regions and the sentence vector, all in one joint space (``localization``).
The scratch tokenizer is read from ``tokenizer.json`` next to the checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from baselines.common.backbones import build_backbone
from baselines.common.config import from_dict
from baselines.common.encoder import card_meta, imagenet_preprocess
from baselines.common.text import TOKENIZER_FILE, TextTokenizer, pretrained_tokenizer
from baselines.common.train import load_checkpoint
from baselines.region_word.config import PROFILES, RegionWordConfig
from baselines.region_word.model import RegionWordModel
from harness.encoders import MethodCard, PretrainRequest

__all__ = ["RegionWordMethod", "RegionWordConfig", "RegionWordEncoder"]

PAPER = ("JoImTeRNet: Ji, Shaikh et al. MLMI 2021 (arXiv 2109.01949), word-region alignment with GLoRIA/DAMSM "
         "losses (sentence + word-region CE, triplets, MLM)")


def card_for(cfg: RegionWordConfig) -> MethodCard:
    seen = ("{task}", "imagenet:train") if cfg.init == "imagenet" else ("{task}",)
    text = {"minilm": "all-MiniLM-L6-v2 (pretrained on web sentence pairs)",
            "scratch": f"BERT from scratch ({cfg.text_layers} layers, {cfg.text_hidden} hidden) on a WordPiece "
                       "vocabulary"}.get(cfg.text_model, f"local pretrained model {Path(cfg.text_model).name}")
    mixing = ("ITM and MLM summed every step (paper: sampled 0.3/0.7)" if cfg.itm_probability is None
              else f"ITM step with p {cfg.itm_probability}, else MLM (as the paper)")
    return MethodCard(
        name="region-word", paper=PAPER, preprocess=imagenet_preprocess(cfg.image_size, 3),
        pretraining_data=seen,
        capabilities=("image", "image_regions", "text", "trainable", "localization"),
        notes=(f"{cfg.backbone} at {cfg.image_size} px (init {cfg.init}), joint dim {cfg.embed_dim}; text: {text}; "
               "harness choices: torchvision backbone instead of the paper's 2048 px custom ResNet, regions from "
               f"its last stage, {mixing}, no flips"),
    )


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


class RegionWordMethod:
    """The ``region-word`` method (see the module docstring)."""

    profiles: dict[str, dict[str, Any]] = PROFILES

    def __init__(self) -> None:
        self.card = card_for(from_dict(RegionWordConfig, PROFILES["small"]))

    def pretrain(self, request: PretrainRequest) -> Path:
        from baselines.region_word.pretrain import pretrain

        cfg = from_dict(RegionWordConfig, request.config, what="region-word config")
        return pretrain(request, cfg, card=card_meta(card_for(cfg)))

    def load(self, checkpoint: Path | None, config: dict[str, Any]) -> RegionWordEncoder:
        from baselines.region_word.pretrain import build_model

        cfg = from_dict(RegionWordConfig, config, what="region-word config")
        if checkpoint is None:
            raise ValueError("region-word: needs the checkpoint that pretrain returned (got None)")
        checkpoint = Path(checkpoint)
        state = load_checkpoint(checkpoint)["model"]
        tokenizer = (pretrained_tokenizer(cfg.text_model, cfg.max_length) if cfg.text_model != "scratch"
                     else TextTokenizer.load(checkpoint.parent / TOKENIZER_FILE, cfg.max_length))
        backbone = build_backbone(cfg.backbone, in_chans=3, image_size=cfg.image_size)  # weights come from state
        model = build_model(cfg, tokenizer, pretrained_text=False, backbone=backbone)
        model.load_state_dict(state)
        return RegionWordEncoder(model, tokenizer, card_for(cfg)).eval()
