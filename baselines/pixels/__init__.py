"""``pixels``: downsampled raw pixels, the floor a linear probe reaches with no learning at all.

The image, area-averaged to a ``grid x grid`` thumbnail, is the global feature vector; the same
thumbnail cut into a ``regions x regions`` grid of patches gives the region features (so the
regeneration decoder and region protocols read a spatial map). No weights, no training, no random
numbers: every table gets a row that says what the pixels alone give, beside ``random`` (an untrained
network's features, which can be better or worse than the pixels themselves). Usage::

    python -m harness run --method pixels --task mimic-cls          # 16 x 16 of 128 px (small)
    python -m harness run --method pixels --task mimic-regen

The sizes and why: ``baselines/pixels/config.py``. It has no text, so retrieval and phrase grounding
(which need a text encoder in the same space) refuse it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from baselines.common.method import BaselineMethod
from baselines.pixels.config import PROFILES, PixelsConfig
from baselines.pixels.encoder import PixelsEncoder
from harness.encoders import MethodCard, Preprocess

__all__ = ["PixelsMethod", "PixelsConfig", "PixelsEncoder"]

PAPER = "harness design: the image area-averaged to a thumbnail, as features (no learning: the pixel floor)"


class PixelsMethod(BaselineMethod):
    """The ``pixels`` method: ``pretrain`` does nothing, ``load`` builds the downsampling encoder."""

    name, paper, config_class, profiles = "pixels", PAPER, PixelsConfig, PROFILES
    pretrains = False  # nothing to learn: that is the point of the row

    def card_for(self, cfg: PixelsConfig) -> MethodCard:
        # one grey channel in [0, 1]: mean 0 and std 1 leave the pixels as they are (the probe standardises)
        preprocess = Preprocess(image_size=cfg.image_size, channels=1, mean=(0.0,), std=(1.0,))
        return MethodCard(
            name=self.name, paper=self.paper, preprocess=preprocess, pretraining_data=(),
            capabilities=("image", "image_regions", "trainable"),
            notes=f"{cfg.image_size} px grey in [0, 1] area-averaged to {cfg.grid} x {cfg.grid} "
                  f"({cfg.block} x {cfg.block} px blocks): {cfg.grid * cfg.grid} global features; regions: "
                  f"{cfg.regions} x {cfg.regions} patches of {cfg.patch} x {cfg.patch} of them; sizes keep the "
                  "probe well posed on a few thousand images (baselines/pixels/config.py); no parameters",
        )

    def build_encoder(self, cfg: PixelsConfig, weights: dict[str, torch.Tensor] | None, checkpoint: Path | None
                      ) -> PixelsEncoder:
        return PixelsEncoder(cfg, self.card_for(cfg))
