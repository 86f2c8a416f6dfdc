"""``msn`` and ``msn-ehr``: Masked Siamese Networks, without and with EHR fused into the anchor branch.

Shurrab, Guerra-Manzanares, Shamout, "Multimodal masked siamese network improves
chest X-ray representation learning", Sci Rep 2024 (docs/methods.md section 4;
the recipe is the authors' code, github.com/nyuad-cai/CXR-EHR-MSN). Usage::

    python -m harness run --method msn --task mimic-cls                      # small: ViT-Tiny/8 at 64 px, CPU
    python -m harness run --method msn-ehr --task mimic-cls                  # + all three EHR groups (13 features)
    python -m harness run --method msn-ehr --task mimic-cls --set 'ehr.groups=[demographics]'
    python -m harness run --method msn-ehr --task mimic-cls --set ehr.groups=[inpatient] --set ehr.age_encoding=bin5
    python -m harness run --method msn-ehr --task mimic-cls --set ehr.missing=exclude   # drop images without EHR
    python -m harness run --method msn-ehr --task mimic-cls --profile paper  # ViT-Small/16, 224 px, 100 epochs (GPU)
    python -m harness run --method msn --task mimic-cls --profile paper --set backbone=vit_tiny

EHR groups: ``demographics`` (sex + age), ``scan`` (view + orientation),
``inpatient`` (in-hospital death + ICU stay); age as ``minmax``, ``bin5`` or
``bin10`` (``harness.data.ehr``). EHR needs MIMIC-IV (real or synthetic) next to
MIMIC-CXR: ``msn-ehr`` on a dataset without ``ehr_*`` columns is a ``DataError``.

``load`` returns the TARGET (EMA) backbone, as the authors' ``evaluate.py`` loads
it (keys ``backbone.*``), without projection head, prototypes or EHR layers: the
CLS token is the global feature and the patch tokens the region features. EHR is
never used at evaluation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from baselines.common.encoder import BackboneEncoder, imagenet_preprocess
from baselines.common.method import BaselineMethod
from baselines.msn_ehr.config import (
    MSN_EHR_PROFILES,
    MSN_PROFILES,
    EHRConfig,
    MSNConfig,
    MSNEHRConfig,
    build_config,
)
from baselines.msn_ehr.model import build_vit
from baselines.msn_ehr.recipe import differences_from_msn
from harness.encoders import MethodCard, PretrainRequest

__all__ = ["MSNMethod", "MSNEHRMethod", "MSNConfig", "MSNEHRConfig", "EHRConfig"]

PAPER = ("Shurrab, Guerra-Manzanares, Shamout, 'Multimodal masked siamese network improves chest X-ray "
         "representation learning', Sci Rep 2024 (arXiv 2407.04449), recipe from the authors' code "
         "(nyuad-cai/CXR-EHR-MSN b3755c0); MSN: Assran et al. ECCV 2022")

HARNESS_CHOICES = ("harness choices: training split only; grey 1-channel patch embedding with grey ImageNet "
                   "mean/std; timm ViT; per-step cosine; final weights (not lowest train loss); EMA after each "
                   "optimiser step (MSN's order); Sinkhorn and ME-MAX over the global batch under DDP (MSN; "
                   "lightly's default is per GPU); target (EMA) backbone evaluated, CLS token global, patch "
                   "tokens regions")


class MSNMethod(BaselineMethod):
    """The ``msn`` method: vanilla MSN (see the module docstring)."""

    name, paper, config_class, profiles = "msn", PAPER, MSNConfig, MSN_PROFILES
    weights_prefix, weights_part = "target_backbone.", "MSN target backbone"

    def config(self, values: dict[str, Any]) -> MSNConfig:
        return build_config(self.config_class, values, what=f"{self.name} config")  # with the nested ehr section

    def card_for(self, cfg: MSNConfig) -> MethodCard:
        model = (f"{cfg.backbone} (patch {cfg.patch_size}, {cfg.num_heads} heads) at {cfg.image_size} px, "
                 f"K {cfg.num_prototypes}, T {cfg.temperature} / sharpen {cfg.sharpen_temperature}, "
                 f"1 + {cfg.num_focal_views} anchor views")
        ehr = ""
        if isinstance(cfg, MSNEHRConfig):
            ehr = (f"; EHR {'+'.join(cfg.ehr.groups)} (age {cfg.ehr.age_encoding}, missing EHR "
                   f"{cfg.ehr.missing}) fused into the anchor branch in pretraining only")
        # the named recipe settings appear among the differences when they are not MSN's (recipe.py)
        return MethodCard(name=self.name, paper=self.paper, preprocess=imagenet_preprocess(cfg.image_size, 1),
                          pretraining_data=("{task}",), capabilities=("image", "image_regions", "trainable"),
                          notes=(f"{model}, random init{ehr}; {HARNESS_CHOICES}; differences from the original "
                                 f"MSN (facebookresearch/msn): {'; '.join(differences_from_msn(cfg))}"))

    def train(self, request: PretrainRequest, cfg: MSNConfig, card: dict[str, Any]) -> Path:
        from baselines.msn_ehr.pretrain import pretrain

        return pretrain(request, cfg, card=card)

    def build_encoder(self, cfg: MSNConfig, weights: dict[str, torch.Tensor] | None, checkpoint: Path | None
                      ) -> BackboneEncoder:
        """The target (EMA) ViT of the checkpoint as an image + region encoder."""
        backbone = build_vit(cfg.backbone, patch_size=cfg.patch_size, num_heads=cfg.num_heads,
                             image_size=cfg.image_size)
        backbone.load_state_dict(weights)
        return BackboneEncoder(backbone, self.card_for(cfg))


class MSNEHRMethod(MSNMethod):
    """The ``msn-ehr`` method: MSN with the EHR vector fused into the anchor branch."""

    name, config_class, profiles = "msn-ehr", MSNEHRConfig, MSN_EHR_PROFILES
