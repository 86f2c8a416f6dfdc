"""``supervised``: a label-supervised reference row, the ceiling beside the self-supervised baselines.

A CNN (ResNet; EfficientNet-Lite0 from ImageNet at ``small``) with a linear multi-label head trained
with BCE on the TRAINING labels of the task it is run on (the task's label set and label policy), its
checkpoint chosen on held-out training patients; then the head is dropped and the backbone is scored
by the task's protocol like any encoder (its frozen features under the linear probe; fine-tuned again
under ``finetune``). What a CXR paper calls the
supervised baseline (CheXNet, CheXpert), here per task::

    python -m harness run --method supervised --task mimic-cls      # ImageNet Lite0, 128 px, 200 steps (small)
    python -m harness run --method supervised --task nih14-cls --profile paper

The card says ``uses_labels``: the run offers the method the task's training labels (and nothing else
does), refuses a task without labels and ``--pretrain-on``, keys the pretraining cache by the task's
label set and split, and the record and the leaderboard mark the row so that it is never the
reference nor the best of a self-supervised comparison. At a label fraction the probe sees the
fraction, but the backbone was trained on every training label: a ceiling, not a label-efficient method.
"""

from __future__ import annotations

from pathlib import Path

import torch

from baselines.common.backbones import build_backbone
from baselines.common.encoder import BackboneEncoder, imagenet_preprocess
from baselines.common.method import BaselineMethod
from baselines.supervised.config import PROFILES, SupervisedConfig
from harness.encoders import MethodCard, PretrainRequest

__all__ = ["SupervisedMethod", "SupervisedConfig"]

PAPER = ("label-supervised reference: an ImageNet-initialised CNN trained with BCE on the task's training labels, "
         "the CheXpert recipe (Irvin et al., AAAI 2019: Adam 1e-4, batch 16, 3 epochs, checkpoint chosen on "
         "validation) for `paper`; harness design otherwise (the ceiling of each classification table)")


class SupervisedMethod(BaselineMethod):
    """The ``supervised`` method: ``pretrain`` learns the task's training labels, ``load`` keeps the backbone."""

    name, paper, config_class, profiles = "supervised", PAPER, SupervisedConfig, PROFILES
    weights_prefix, weights_part = "backbone.", "supervised classifier backbone"

    def card_for(self, cfg: SupervisedConfig) -> MethodCard:
        budget = f"{cfg.steps} steps" if cfg.steps is not None else f"{cfg.epochs:g} epochs"
        seen = ("{task}", "imagenet:train") if cfg.init == "imagenet" else ("{task}",)
        return MethodCard(
            name=self.name, paper=self.paper, preprocess=imagenet_preprocess(cfg.image_size, 3),
            pretraining_data=seen, capabilities=("image", "image_regions", "trainable"), uses_labels=True,
            notes=f"{cfg.backbone} ({cfg.init} init) trained with BCE on the task's TRAINING labels (its label "
                  f"policy; ignored labels left out of the loss), {budget}; "
                  f"checkpoint with the lowest BCE on {cfg.val_fraction:.0%} of the training patients, held out "
                  "(never the task's validation or test patients); head dropped, backbone features scored by the "
                  "task's protocol",
        )

    def train(self, request: PretrainRequest, cfg: SupervisedConfig, card: dict) -> Path:
        from baselines.supervised.pretrain import pretrain

        return pretrain(request, cfg, card=card)

    def build_encoder(self, cfg: SupervisedConfig, weights: dict[str, torch.Tensor] | None, checkpoint: Path | None
                      ) -> BackboneEncoder:
        with torch.random.fork_rng(devices=[]):  # building draws a random init that the weights then replace
            backbone = build_backbone(cfg.backbone, in_chans=3, image_size=cfg.image_size)
        backbone.load_state_dict(weights)
        return BackboneEncoder(backbone, self.card_for(cfg))
