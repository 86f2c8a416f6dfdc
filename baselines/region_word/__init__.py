"""``region-word``: JoImTeRNet-style joint image-report pretraining with word-region alignment.

Ji, Shaikh et al., "Improving Joint Learning of Chest X-Ray and Radiology Report
by Word Region Alignment", MLMI 2021 (docs/methods.md section 2), whose losses
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

from baselines.common.backbones import build_backbone
from baselines.common.encoder import imagenet_preprocess
from baselines.common.method import BaselineMethod
from baselines.common.text import TOKENIZER_FILE, TextTokenizer, pretrained_tokenizer
from baselines.region_word.config import PROFILES, RegionWordConfig
from baselines.region_word.encoder import RegionWordEncoder
from harness.encoders import MethodCard, PretrainRequest

__all__ = ["RegionWordMethod", "RegionWordConfig", "RegionWordEncoder"]

PAPER = ("JoImTeRNet: Ji, Shaikh et al. MLMI 2021 (arXiv 2109.01949), word-region alignment with GLoRIA/DAMSM "
         "losses (sentence + word-region CE, triplets, MLM)")


class RegionWordMethod(BaselineMethod):
    """The ``region-word`` method (see the module docstring)."""

    name, paper, config_class, profiles = "region-word", PAPER, RegionWordConfig, PROFILES

    def card_for(self, cfg: RegionWordConfig) -> MethodCard:
        seen = ("{task}", "imagenet:train") if cfg.init == "imagenet" else ("{task}",)
        text = {"minilm": "all-MiniLM-L6-v2 (pretrained on web sentence pairs)",
                "scratch": f"BERT from scratch ({cfg.text_layers} layers, {cfg.text_hidden} hidden) on a WordPiece "
                           "vocabulary"}.get(cfg.text_model, f"local pretrained model {Path(cfg.text_model).name}")
        mixing = ("ITM and MLM summed every step (paper: sampled 0.3/0.7)" if cfg.itm_probability is None
                  else f"ITM step with p {cfg.itm_probability}, else MLM (as the paper)")
        return MethodCard(
            name=self.name, paper=self.paper, preprocess=imagenet_preprocess(cfg.image_size, 3),
            pretraining_data=seen,
            capabilities=("image", "image_regions", "text", "trainable", "localization"),
            notes=(f"{cfg.backbone} at {cfg.image_size} px (init {cfg.init}), joint dim {cfg.embed_dim}; text: "
                   f"{text}; harness choices: torchvision backbone instead of the paper's 2048 px custom ResNet, "
                   f"regions from its last stage, {mixing}, no flips"),
        )

    def train(self, request: PretrainRequest, cfg: RegionWordConfig, card: dict[str, Any]) -> Path:
        from baselines.region_word.pretrain import pretrain

        return pretrain(request, cfg, card=card)

    def build_encoder(self, cfg: RegionWordConfig, weights: dict[str, torch.Tensor] | None, checkpoint: Path | None
                      ) -> RegionWordEncoder:
        """The whole model from the checkpoint; the scratch tokenizer from ``tokenizer.json`` next to it."""
        from baselines.region_word.pretrain import build_model

        tokenizer = (pretrained_tokenizer(cfg.text_model, cfg.max_length) if cfg.text_model != "scratch"
                     else TextTokenizer.load(checkpoint.parent / TOKENIZER_FILE, cfg.max_length))
        backbone = build_backbone(cfg.backbone, in_chans=3, image_size=cfg.image_size)  # weights come from state
        model = build_model(cfg, tokenizer, pretrained_text=False, backbone=backbone)
        model.load_state_dict(weights)
        return RegionWordEncoder(model, tokenizer, self.card_for(cfg))
