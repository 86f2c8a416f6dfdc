"""``random``: an untrained backbone, the floor every method must beat.

Same backbones as the trained baselines, initialised by torchvision/timm's
default initialisers from a seeded generator; nothing is pretrained, so the card
lists no pretraining data. Usage::

    python -m harness run --method random --task mimic-cls          # small profile
    python -m harness run --method random --task mimic-cls --profile paper   # ResNet-50, 224 px
"""

from __future__ import annotations

from pathlib import Path

import torch

from baselines.common.backbones import build_backbone
from baselines.common.encoder import imagenet_preprocess
from baselines.common.method import BaselineMethod
from baselines.random_init.config import PROFILES, RandomConfig
from baselines.random_init.encoder import RandomImageTextEncoder
from harness.encoders import MethodCard

__all__ = ["RandomMethod", "RandomConfig", "RandomImageTextEncoder"]

PAPER = "harness design: untrained backbone with the libraries' default initialisation (the floor)"


class RandomMethod(BaselineMethod):
    """The ``random`` method: ``pretrain`` does nothing, ``load`` builds a seeded untrained encoder."""

    name, paper, config_class, profiles = "random", PAPER, RandomConfig, PROFILES
    pretrains = False  # nothing to learn: that is the point of the floor

    def card_for(self, cfg: RandomConfig) -> MethodCard:
        return MethodCard(
            name=self.name, paper=self.paper,
            preprocess=imagenet_preprocess(cfg.image_size, cfg.in_chans),
            pretraining_data=(),
            capabilities=("image", "image_regions", "text", "trainable", "localization"),
            notes=f"untrained {cfg.backbone}, seed {cfg.seed}; ImageNet mean/std kept so it is fed like "
                  "the ImageNet baseline (harness choice); text: seeded random word-bucket embeddings, the "
                  "chance level of retrieval and localization",
        )

    def build_encoder(self, cfg: RandomConfig, weights: dict[str, torch.Tensor] | None, checkpoint: Path | None
                      ) -> RandomImageTextEncoder:
        with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
            torch.manual_seed(cfg.seed)
            backbone = build_backbone(cfg.backbone, in_chans=cfg.in_chans, image_size=cfg.image_size)
        return RandomImageTextEncoder(backbone, self.card_for(cfg), cfg.seed)
