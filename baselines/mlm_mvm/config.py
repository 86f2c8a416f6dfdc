"""MLM + multi-scale MVM on mixed data: the config and its three profiles.

Wang et al. 2021 (arXiv 2103.16022; docs/methods.md section 3) publish no
architecture, scales, ratios, losses or schedule, so EVERY value here is a harness
choice, sized like a ViT-S/16 for ``paper`` (224 px, width 384, depth 12) and
like a ViT-Tiny for the CPU profiles. ``mixing`` selects the pretraining data:

- ``paired``: image-report pairs of the task's training split (rows without report
  text are a counted skip);
- ``paired+unpaired``: ``unpaired_fraction`` of those studies lose their pairing:
  half give only their image, half only their report (never both), plus every
  image without a report;
- ``cross-source unpaired``: every training image of the task's dataset, image-only,
  and the reports of ``text_source`` (another dataset's training split), text-only.
"""

from __future__ import annotations

from dataclasses import dataclass

from baselines.common.config import TrainingConfig, to_dict

MIXINGS = ("paired", "paired+unpaired", "cross-source unpaired")
MVM_LOSSES = ("l1", "l2")


@dataclass(frozen=True)
class MLMMVMConfig(TrainingConfig):
    """The harness's design (every value). From ``TrainingConfig`` unchanged: 224 px, batch 128 (summed over
    the paired, image-only and text-only parts of a step), 100 epochs, brightness and contrast 0.1,
    checkpoints every 1,000 steps, ``steps``, ``amp``, seed 0."""

    lr: float = 3e-4
    weight_decay: float = 0.05
    rotation: float = 5.0
    log_every: int = 50
    patch_size: int = 16  # image tokens are patch_size^2 pixels; the finest masking scale
    width: int = 384
    depth: int = 12
    heads: int = 6
    decoder_depth: int = 2  # transformer blocks of the pixel decoder (image tokens only)
    embed_dim: int = 256  # image / report global vectors (the alignment heads)
    vocab_size: int = 8192  # WordPiece trained on the pretraining reports
    max_length: int = 128  # report tokens including [CLS] and [SEP]
    dropout: float = 0.1
    mvm_scales: tuple[int, ...] = (1, 2, 4)  # masked square sizes in patches (16 / 32 / 64 px at 224)
    mvm_ratio: float = 0.5  # fraction of the cells of the chosen scale that are hidden (MAE's count rule)
    # The pixel loss on hidden patches: "l1" (SimMIM) or "l2" (MAE). Never MAE's norm_pix_loss: the decoder's
    # pixels ARE the regeneration output, and a per-patch normalised target has no scale to undo at a hidden patch.
    mvm_loss: str = "l1"
    mlm_probability: float = 0.15
    # Harness choice: an image-report contrastive term on PAIRED batches only, so the separate image and
    # text embeddings the harness retrieves with are aligned (0 turns it off).
    weight_itc: float = 1.0
    temperature: float = 0.07
    weight_mlm: float = 1.0
    weight_mvm: float = 1.0
    mixing: str = "paired"
    unpaired_fraction: float = 0.5
    text_source: str | None = None  # cross-source unpaired: the dataset whose reports are used
    warmup_steps: int = 1000
    grad_clip: float = 1.0
    scale: tuple[float, float] = (0.8, 1.0)  # crop area; no flips (reports name the side)

    def __post_init__(self) -> None:
        if self.mixing not in MIXINGS:
            raise ValueError(f"mlm-mvm: mixing must be one of {MIXINGS}, got {self.mixing!r}")
        if self.mixing == "cross-source unpaired" and not self.text_source:
            raise ValueError("mlm-mvm: mixing 'cross-source unpaired' needs text_source (a dataset with reports)")
        if self.mvm_loss not in MVM_LOSSES:
            raise ValueError(f"mlm-mvm: mvm_loss must be one of {MVM_LOSSES}, got {self.mvm_loss!r}")
        if self.image_size % self.patch_size:
            raise ValueError(f"mlm-mvm: image_size {self.image_size} is not a multiple of patch_size "
                             f"{self.patch_size}")
        if len(self.mvm_scales) < 1 or min(self.mvm_scales) < 1:
            raise ValueError(f"mlm-mvm: mvm_scales must be positive patch counts, got {self.mvm_scales}")
        if not 0 < self.mvm_ratio < 1 or not 0 < self.mlm_probability < 1 or not 0 < self.unpaired_fraction < 1:
            raise ValueError("mlm-mvm: mvm_ratio, mlm_probability and unpaired_fraction must be in (0, 1)")
        if self.width % self.heads:
            raise ValueError(f"mlm-mvm: width {self.width} not divisible by heads {self.heads}")
        if self.batch_size < 4:
            raise ValueError("mlm-mvm: batch_size must be at least 4 (two per part of a mixed step)")


PROFILES = {
    "smoke": to_dict(MLMMVMConfig(image_size=32, patch_size=8, width=32, depth=1, heads=2, decoder_depth=1,
                                  embed_dim=16, vocab_size=200, max_length=32, mvm_scales=(1, 2), batch_size=8,
                                  steps=3, lr=1e-3, warmup_steps=1, checkpoint_every=2, log_every=1)),
    # small: ~1,000 images x 5 epochs at 64 px; no dropout (a short run is not at risk of overfitting)
    "small": to_dict(MLMMVMConfig(image_size=64, patch_size=8, width=128, depth=3, heads=4, decoder_depth=1,
                                  embed_dim=128, vocab_size=2000, max_length=64, dropout=0.0,
                                  mvm_scales=(1, 2, 4), batch_size=32, steps=150, lr=1e-3, warmup_steps=15,
                                  checkpoint_every=50, log_every=10)),
    "paper": to_dict(MLMMVMConfig()),
}
