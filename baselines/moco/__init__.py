"""``moco``: MoCo v2 pretraining on the task's training images (MoCo-CXR recipe).

Dalla Serra et al. (MIUA 2022) initialise the image model of a multimodal
classifier from MoCo pretraining on unlabelled CXRs; their MoCo settings are not
public, so the harness uses MoCo-CXR's (Sowrirajan et al. 2021), as
docs/methods.md sections 1, 5.1 and 7 decide. Usage::

    python -m harness run --method moco --task mimic-cls                   # small: EfficientNet-Lite0, CPU minutes
    python -m harness run --method moco --task mimic-cls --profile paper   # ResNet-50, 224 px, 20 epochs (GPU)
    torchrun --nproc_per_node 4 -m harness run --method moco --task mimic-cls --profile paper   # DDP

``load`` returns the *query* encoder's backbone (MoCo's "encoder_q", without the
projection head) as the image + region encoder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from baselines.common.backbones import build_backbone
from baselines.common.encoder import BackboneEncoder, imagenet_preprocess
from baselines.common.method import BaselineMethod
from baselines.moco.config import PROFILES, MoCoConfig
from harness.encoders import MethodCard, PretrainRequest

__all__ = ["MoCoMethod", "MoCoConfig"]

PAPER = ("MoCo v2 (He et al. CVPR 2020; Chen et al. arXiv 2003.04297) with the MoCo-CXR recipe (Sowrirajan et al. "
         "MIDL 2021): ImageNet init, queue, momentum 0.999, InfoNCE T 0.2, MLP head dim 128, CXR-safe augmentations; "
         "as used for image pretraining by Dalla Serra et al. MIUA 2022 (whose own MoCo settings are unpublished)")


class MoCoMethod(BaselineMethod):
    """The ``moco`` method (see the module docstring)."""

    name, paper, config_class, profiles = "moco", PAPER, MoCoConfig, PROFILES
    weights_prefix, weights_part = "encoder_q.backbone.", "MoCo query encoder"

    def card_for(self, cfg: MoCoConfig) -> MethodCard:
        seen = ("{task}", "imagenet:train") if cfg.init == "imagenet" else ("{task}",)
        return MethodCard(
            name=self.name, paper=self.paper, preprocess=imagenet_preprocess(cfg.image_size, 3),
            pretraining_data=seen,
            notes=(f"{cfg.backbone} at {cfg.image_size} px, init {cfg.init}; harness choices: queue capped at a "
                   "quarter of the training images (a multiple of the global batch), single-process shuffle-BN by "
                   f"{cfg.shuffle_bn_splits} sub-batches (MoCo-CXR's one-GPU scripts: none), grey repeated to 3 "
                   "channels with ImageNet mean/std (MoCo-CXR: 0.502 / 0.0856), random resized crop of area "
                   f"{cfg.scale[0]}-{cfg.scale[1]} (MoCo-CXR: a fixed-size random crop)"),
        )

    def train(self, request: PretrainRequest, cfg: MoCoConfig, card: dict[str, Any]) -> Path:
        from baselines.moco.pretrain import pretrain

        return pretrain(request, cfg, card=card)

    def build_encoder(self, cfg: MoCoConfig, weights: dict[str, torch.Tensor] | None, checkpoint: Path | None
                      ) -> BackboneEncoder:
        backbone = build_backbone(cfg.backbone, in_chans=3, image_size=cfg.image_size)
        backbone.load_state_dict(weights)
        return BackboneEncoder(backbone, self.card_for(cfg))
