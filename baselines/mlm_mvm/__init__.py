"""``mlm-mvm``: masked language + multi-scale masked vision modelling on mixed image/report data.

Inspired by Wang et al., "Self-supervised Image-text Pre-training With Mixed Data
in Chest X-rays" (NVIDIA, arXiv 2103.16022; specs/methods.md section 3). The
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
import torch.nn.functional as F
from torch import nn

from baselines.common.config import from_dict
from baselines.common.encoder import card_meta
from baselines.common.text import TOKENIZER_FILE, TextTokenizer
from baselines.common.train import load_checkpoint
from baselines.mlm_mvm.config import PROFILES, MLMMVMConfig
from baselines.mlm_mvm.model import MLMMVMModel
from baselines.mlm_mvm.pretrain import preprocess_for
from harness.encoders import MethodCard, PretrainRequest

__all__ = ["MLMMVMMethod", "MLMMVMConfig", "MLMMVMEncoder"]

PAPER = ("Inspired by Wang, Xu, Tam, Yang, Xu, 'Self-supervised Image-text Pre-training With Mixed Data in Chest "
         "X-rays', arXiv 2103.16022 (2021); architecture and recipe are the harness's design (paper not public)")


def card_for(cfg: MLMMVMConfig) -> MethodCard:
    seen = ("{task}",) if cfg.mixing != "cross-source unpaired" else ("{task}", f"{cfg.text_source}:train")
    return MethodCard(
        name="mlm-mvm", paper=PAPER, preprocess=preprocess_for(cfg), pretraining_data=seen,
        capabilities=("image", "text", "regeneration", "trainable"),
        notes=(f"harness design: single-stream transformer (width {cfg.width}, depth {cfg.depth}, patch "
               f"{cfg.patch_size} px at {cfg.image_size} px) over image patches and report tokens; MLM "
               f"{cfg.mlm_probability:.0%}; multi-scale MVM (squares of {list(cfg.mvm_scales)} patches, "
               f"{cfg.mvm_ratio:.0%} hidden, L1 on hidden pixels) with a {cfg.decoder_depth}-block pixel decoder; "
               f"image-report contrastive term on pairs (weight {cfg.weight_itc}); mixing: {cfg.mixing}"),
    )


class MLMMVMEncoder(nn.Module):
    """Image / report vectors and masked-image regeneration of a pretrained ``MLMMVMModel``."""

    def __init__(self, model: MLMMVMModel, tokenizer: TextTokenizer, card: MethodCard) -> None:
        super().__init__()
        self.model, self.tokenizer, self.card = model, tokenizer, card
        self.num_features: int = model.num_features

    def _check(self, images: torch.Tensor) -> None:
        size = self.card.preprocess.image_size
        if images.ndim != 4 or images.shape[1] != 1 or images.shape[-1] != size or images.shape[-2] != size:
            raise ValueError(f"mlm-mvm: expected (B, 1, {size}, {size}) images, got {tuple(images.shape)}")

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 1, S, S) -> (B, num_features)``: the [IMG] token of an image-only pass."""
        self._check(images)
        return self.model.image_vector(images)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """``list[str] -> (B, num_features)``: the [CLS] token of a text-only pass."""
        ids, mask = self.tokenizer.encode(texts)
        device = self.model.patch_embed.weight.device
        return self.model.report_vector(ids.to(device), mask.to(device))

    def regenerate(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``(B, 1, S, S)`` images and hidden-pixel mask -> the images with hidden pixels regenerated.

        A patch that holds any hidden pixel is replaced by the mask token; the decoder's
        pixels fill the hidden pixels and the visible ones are kept as given.
        """
        self._check(images)
        p = self.model.cfg.patch_size
        patch_mask = F.max_pool2d(mask.float(), kernel_size=p, stride=p).flatten(1) > 0  # (B, N)
        image_out, _ = self.model.encode(self.model.embed_image(images, patch_mask), None)
        regenerated = self.model.unpatchify(self.model.decode_pixels(image_out))  # (B, 1, S, S)
        return torch.where(mask.bool(), regenerated.to(images.dtype), images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.encode_image(images)


class MLMMVMMethod:
    """The ``mlm-mvm`` method (see the module docstring)."""

    profiles: dict[str, dict[str, Any]] = PROFILES

    def __init__(self) -> None:
        self.card = card_for(from_dict(MLMMVMConfig, PROFILES["small"]))

    def pretrain(self, request: PretrainRequest) -> Path:
        from baselines.mlm_mvm.pretrain import pretrain

        cfg = from_dict(MLMMVMConfig, request.config, what="mlm-mvm config")
        return pretrain(request, cfg, card=card_meta(card_for(cfg)))

    def load(self, checkpoint: Path | None, config: dict[str, Any]) -> MLMMVMEncoder:
        cfg = from_dict(MLMMVMConfig, config, what="mlm-mvm config")
        if checkpoint is None:
            raise ValueError("mlm-mvm: needs the checkpoint that pretrain returned (got None)")
        checkpoint = Path(checkpoint)
        state = load_checkpoint(checkpoint)["model"]
        tokenizer = TextTokenizer.load(checkpoint.parent / TOKENIZER_FILE, cfg.max_length)
        model = MLMMVMModel(cfg, tokenizer.vocab_size, tokenizer.pad_id)
        model.load_state_dict(state)
        return MLMMVMEncoder(model, tokenizer, card_for(cfg)).eval()
