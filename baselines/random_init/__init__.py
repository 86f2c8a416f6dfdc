"""``random``: an untrained backbone, the floor every method must beat.

Same backbones as the trained baselines, initialised by torchvision/timm's
default initialisers from a seeded generator; nothing is pretrained, so the card
lists no pretraining data. Usage::

    python -m harness run --method random --task mimic-cls          # small profile
    python -m harness run --method random --task mimic-cls --profile paper   # ResNet-50, 224 px
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from baselines.common.backbones import build_backbone
from baselines.common.config import from_dict, to_dict
from baselines.common.encoder import BackboneEncoder, imagenet_preprocess
from harness.encoders import MethodCard, PretrainRequest

PAPER = "harness design: untrained backbone with the libraries' default initialisation (the floor)"


@dataclass(frozen=True)
class RandomConfig:
    backbone: str = "resnet18"
    image_size: int = 128
    in_chans: int = 3  # 3: grey repeated, as for the ImageNet baselines it is compared with
    seed: int = 0  # the initialisation seed


def card_for(config: RandomConfig) -> MethodCard:
    return MethodCard(
        name="random", paper=PAPER,
        preprocess=imagenet_preprocess(config.image_size, config.in_chans),
        pretraining_data=(),
        capabilities=("image", "image_regions", "text", "trainable", "localization"),
        notes=f"untrained {config.backbone}, seed {config.seed}; ImageNet mean/std kept so it is fed like "
              "the ImageNet baseline (harness choice); text: seeded random word-bucket embeddings, the "
              "chance level of retrieval and localization",
    )


class RandomImageTextEncoder(BackboneEncoder):
    """The untrained backbone plus an untrained text encoder in the same space: chance for image-text tasks.

    Text is lower-cased, split into words, each word hashed (sha1, stable across runs) into one of
    ``TEXT_BUCKETS`` rows of a seeded random embedding table, and the rows averaged. Region features and
    text vectors have the same width, so every task (retrieval, localization) can run on the floor.
    """

    TEXT_BUCKETS = 4096
    joint_space = True

    def __init__(self, backbone, card: MethodCard, seed: int) -> None:
        super().__init__(backbone, card)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 1)
            self.word_embedding = nn.Embedding(self.TEXT_BUCKETS, self.num_features)

    @classmethod
    def bucket(cls, word: str) -> int:
        return int.from_bytes(hashlib.sha1(word.encode()).digest()[:4], "big") % cls.TEXT_BUCKETS

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """``list[str] -> (B, num_features)``; an empty text is the zero vector."""
        device = self.word_embedding.weight.device
        out = torch.zeros(len(texts), self.num_features, device=device)
        for i, text in enumerate(texts):
            words = re.findall(r"[a-z0-9]+", text.lower())
            if words:
                ids = torch.tensor([self.bucket(w) for w in words], device=device)
                out[i] = self.word_embedding(ids).mean(0)
        return out


class RandomMethod:
    """The ``random`` method: ``pretrain`` does nothing, ``load`` builds a seeded untrained encoder."""

    profiles: dict[str, dict[str, Any]] = {
        "smoke": to_dict(RandomConfig(backbone="resnet18", image_size=32)),
        "small": to_dict(RandomConfig(backbone="resnet18", image_size=128)),
        "paper": to_dict(RandomConfig(backbone="resnet50", image_size=224)),
    }

    def __init__(self) -> None:
        self.card = card_for(RandomConfig())

    def pretrain(self, request: PretrainRequest) -> Path | None:
        return None  # nothing to learn: that is the point of the floor

    def load(self, checkpoint: Path | None, config: dict[str, Any]) -> RandomImageTextEncoder:
        if checkpoint is not None:
            raise ValueError(f"random: takes no checkpoint (got {checkpoint})")
        cfg = from_dict(RandomConfig, config, what="random config")
        with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
            torch.manual_seed(cfg.seed)
            backbone = build_backbone(cfg.backbone, in_chans=cfg.in_chans, image_size=cfg.image_size)
        return RandomImageTextEncoder(backbone, card_for(cfg), cfg.seed).eval()
