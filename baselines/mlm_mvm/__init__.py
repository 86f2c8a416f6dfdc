"""``mlm-mvm``: masked language + multi-scale masked vision modelling on mixed image/report data.

Inspired by Wang et al., "Self-supervised Image-text Pre-training With Mixed Data
in Chest X-rays" (NVIDIA, arXiv 2103.16022; docs/methods.md section 3). The
paper's architecture and hyperparameters are not public: the single-stream
transformer, the masking scales and ratio, the L1 pixel loss, the contrastive term
on pairs and every profile value are the HARNESS'S DESIGN (``baselines.mlm_mvm.model``).
Usage::

    python -m harness run --method mlm-mvm --task openi-regen                       # small: CPU minutes
    python -m harness run --method mlm-mvm --task mimic-retrieval --set mixing=paired+unpaired
    python -m harness run --method mlm-mvm --task nih14-regen \\
        --set mixing="cross-source unpaired" --set text_source=openi            # NIH images, OpenI reports

``load`` returns an ``MLMMVMEncoder``: image and report vectors (``image``, ``text``)
and ``regenerate(images, mask)`` (``regeneration``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from baselines.common.method import BaselineMethod
from baselines.common.text import TOKENIZER_FILE, TextTokenizer
from baselines.mlm_mvm.config import PROFILES, MLMMVMConfig
from baselines.mlm_mvm.encoder import MLMMVMEncoder
from baselines.mlm_mvm.model import MLMMVMModel
from baselines.mlm_mvm.pretrain import preprocess_for
from harness.encoders import MethodCard, PretrainRequest

__all__ = ["MLMMVMMethod", "MLMMVMConfig", "MLMMVMEncoder"]

PAPER = ("Inspired by Wang, Xu, Tam, Yang, Xu, 'Self-supervised Image-text Pre-training With Mixed Data in Chest "
         "X-rays', arXiv 2103.16022 (2021); architecture and recipe are the harness's design (paper not public)")


class MLMMVMMethod(BaselineMethod):
    """The ``mlm-mvm`` method (see the module docstring)."""

    name, paper, config_class, profiles = "mlm-mvm", PAPER, MLMMVMConfig, PROFILES

    def card_for(self, cfg: MLMMVMConfig) -> MethodCard:
        seen = ("{task}",) if cfg.mixing != "cross-source unpaired" else ("{task}", f"{cfg.text_source}:train")
        return MethodCard(
            name=self.name, paper=self.paper, preprocess=preprocess_for(cfg), pretraining_data=seen,
            capabilities=("image", "text", "regeneration", "trainable"),
            notes=(f"harness design: single-stream transformer (width {cfg.width}, depth {cfg.depth}, patch "
                   f"{cfg.patch_size} px at {cfg.image_size} px) over image patches and report tokens; MLM "
                   f"{cfg.mlm_probability:.0%}; multi-scale MVM (squares of {list(cfg.mvm_scales)} patches, "
                   f"{cfg.mvm_ratio:.0%} hidden by MAE's per-sample rule, {cfg.mvm_loss.upper()} on hidden pixels, no "
                   f"norm_pix_loss) with a {cfg.decoder_depth}-block pixel decoder; image-report contrastive term on "
                   f"pairs (weight {cfg.weight_itc}); mixing: {cfg.mixing}"),
        )

    def train(self, request: PretrainRequest, cfg: MLMMVMConfig, card: dict[str, Any]) -> Path:
        from baselines.mlm_mvm.pretrain import pretrain

        return pretrain(request, cfg, card=card)

    def build_encoder(self, cfg: MLMMVMConfig, weights: dict[str, torch.Tensor] | None, checkpoint: Path | None
                      ) -> MLMMVMEncoder:
        """The whole model from the checkpoint, its tokenizer from ``tokenizer.json`` next to it."""
        tokenizer = TextTokenizer.load(checkpoint.parent / TOKENIZER_FILE, cfg.max_length)
        model = MLMMVMModel(cfg, tokenizer.vocab_size, tokenizer.pad_id)
        model.load_state_dict(weights)
        return MLMMVMEncoder(model, tokenizer, self.card_for(cfg))
