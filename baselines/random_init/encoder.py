"""``RandomImageTextEncoder``: the untrained floor for every task, image-only and image-text alike."""

from __future__ import annotations

import hashlib
import re

import torch
from torch import nn

from baselines.common.backbones import Backbone
from baselines.common.encoder import BackboneEncoder
from harness.encoders import MethodCard


class RandomImageTextEncoder(BackboneEncoder):
    """The untrained backbone plus an untrained text encoder in the same space: chance for image-text tasks.

    Text is lower-cased, split into words, each word hashed (sha1, stable across runs) into one of
    ``TEXT_BUCKETS`` rows of a seeded random embedding table, and the rows averaged. Region features and
    text vectors have the same width, so every task (retrieval, localization) can run on the floor.
    """

    TEXT_BUCKETS = 4096
    joint_space = True

    def __init__(self, backbone: Backbone, card: MethodCard, seed: int) -> None:
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
