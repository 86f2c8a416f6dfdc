"""``moco``: MoCo v2 pretraining on the task's training images (MoCo-CXR recipe).

Dalla Serra et al. (MIUA 2022) initialise the image model of a multimodal
classifier from MoCo pretraining on unlabelled CXRs; their MoCo settings are not
public, so the harness uses MoCo-CXR's (Sowrirajan et al. 2021), as
specs/methods.md sections 1, 5.1 and 7 decide. Usage::

    python -m harness run --method moco --task mimic-cls                   # small: EfficientNet-Lite0, CPU minutes
    python -m harness run --method moco --task mimic-cls --profile paper   # ResNet-50, 224 px, 20 epochs (GPU)
    torchrun --nproc_per_node 4 -m harness run --method moco --task mimic-cls --profile paper   # DDP

``load`` returns the *query* encoder's backbone (MoCo's "encoder_q", without the
projection head) as the image + region encoder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from baselines.common.backbones import build_backbone
from baselines.common.config import from_dict
from baselines.common.encoder import BackboneEncoder, card_meta, imagenet_preprocess
from baselines.common.train import load_checkpoint
from baselines.moco.config import PROFILES, MoCoConfig
from harness.encoders import MethodCard, PretrainRequest

__all__ = ["MoCoMethod", "MoCoConfig"]

PAPER = ("MoCo v2 (He et al. CVPR 2020; Chen et al. arXiv 2003.04297) with the MoCo-CXR recipe (Sowrirajan et al. "
         "MIDL 2021): ImageNet init, queue, momentum 0.999, InfoNCE T 0.2, MLP head dim 128, CXR-safe augmentations; "
         "as used for image pretraining by Dalla Serra et al. MIUA 2022 (whose own MoCo settings are unpublished)")


def card_for(cfg: MoCoConfig) -> MethodCard:
    seen = ("{task}", "imagenet:train") if cfg.init == "imagenet" else ("{task}",)
    return MethodCard(
        name="moco", paper=PAPER, preprocess=imagenet_preprocess(cfg.image_size, 3), pretraining_data=seen,
        notes=(f"{cfg.backbone} at {cfg.image_size} px, init {cfg.init}; harness choices: queue capped at the "
               "training-set size, single-process shuffle-BN by sub-batches, grey repeated to 3 channels with "
               "ImageNet mean/std"),
    )


class MoCoMethod:
    """The ``moco`` method (see the module docstring)."""

    profiles: dict[str, dict[str, Any]] = PROFILES

    def __init__(self) -> None:
        self.card = card_for(from_dict(MoCoConfig, PROFILES["small"]))

    def pretrain(self, request: PretrainRequest) -> Path:
        from baselines.moco.pretrain import pretrain

        cfg = from_dict(MoCoConfig, request.config, what="moco config")
        return pretrain(request, cfg, card=card_meta(card_for(cfg)))

    def load(self, checkpoint: Path | None, config: dict[str, Any]) -> BackboneEncoder:
        cfg = from_dict(MoCoConfig, config, what="moco config")
        if checkpoint is None:
            raise ValueError("moco: needs the checkpoint that pretrain returned (got None)")
        state = load_checkpoint(checkpoint)["model"]
        prefix = "encoder_q.backbone."
        weights = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if not weights:
            raise ValueError(f"{checkpoint}: no MoCo query encoder ('{prefix}*') in this checkpoint")
        backbone = build_backbone(cfg.backbone, in_chans=3, image_size=cfg.image_size)
        backbone.load_state_dict(weights)
        return BackboneEncoder(backbone, card_for(cfg)).eval()
