"""JoImTeRNet-style region-word alignment: the config and its three profiles.

``paper`` follows the authors' ``misc/config.py`` (docs/methods.md section 2):
joint dim 512, text BERT from scratch (512 hidden, 3 layers, 8 heads, FFN 2048),
GAMMA1 4 / GAMMA2 5 / GAMMA3 10, margins 0.5, lambda_DAMSM 1, lambda_TRIPLET 2,
AdamW lr 1e-4 wd 1e-4, clip 1.5, batch 128, 35 epochs with x0.1 at epoch 20,
seed 42. Harness choices, everywhere: a torchvision ResNet-18 image encoder at
224 px (the paper's custom 2048 px six-stage ResNet with soft attention is not
reproduced), regions from its last stage, a WordPiece vocabulary. ``paper``
samples an ITM step with p 0.3 and an MLM step with p 0.7 as the authors do;
``small``/``smoke`` sum both at every step (``itm_probability: null``).
``small`` is the CPU default on the synthetic world; ``smoke`` runs in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

from baselines.common.config import TrainingConfig, to_dict
from baselines.common.text import TEXT_MODELS, is_text_model


@dataclass(frozen=True)
class RegionWordConfig(TrainingConfig):
    """JoImTeRNet's fields. From ``TrainingConfig`` unchanged: 224 px, batch 128, AdamW lr 1e-4 and
    weight decay 1e-4, brightness and contrast 0.1, checkpoints every 1,000 steps, ``steps``, ``amp``."""

    epochs: float = 35.0
    rotation: float = 15.0  # paper RandomRotation(15)
    log_every: int = 50
    seed: int = 42
    backbone: str = "resnet18"
    init: str = "random"  # random (paper: image encoder from scratch) | imagenet
    embed_dim: int = 512  # the joint space (regions, global image vector, words, sentence)
    text_model: str = "scratch"  # scratch: BERT from a BertConfig on a WordPiece vocabulary | minilm | a local HF dir
    vocab_size: int = 8411  # WordPiece target size (scratch); the paper's final word vocabulary had 8,411
    max_length: int = 160  # tokens including [CLS] and [SEP] (paper: 159 + 1)
    text_hidden: int = 512
    text_layers: int = 3
    text_heads: int = 8
    text_ffn: int = 2048
    text_dropout: float = 0.1
    gamma1: float = 4.0  # word-region attention sharpness (softmax over regions)
    gamma2: float = 5.0  # word-relevance aggregation (log-sum-exp)
    gamma3: float = 10.0  # logit scale of both cross-entropies
    margin: float = 0.5  # triplet margins (sentence and word-region)
    weight_sentence: float = 1.0  # lambda_DAMSM on the two sentence-level CEs
    weight_word: float = 1.0  # lambda_DAMSM on the two word-region CEs
    weight_triplet: float = 2.0  # lambda_TRIPLET on the four triplet terms
    weight_mlm: float = 1.0
    # Paper: each step is an ITM step with probability 0.3, else an MLM step. None: both every step (harness
    # choice for short CPU runs, where 70 % text-only steps would starve the image side).
    itm_probability: float | None = 0.3
    mlm_probability: float = 0.15
    grad_clip: float = 1.5
    lr_decay_epochs: tuple[float, ...] = (20.0,)
    scale: tuple[float, float] = (0.8, 1.0)  # crop area (paper: RandomCrop of a padded image)

    def __post_init__(self) -> None:
        if self.init not in ("imagenet", "random"):
            raise ValueError(f"region-word: init must be 'imagenet' or 'random', got {self.init!r}")
        if not is_text_model(self.text_model):
            raise ValueError(f"region-word: text_model must be one of {TEXT_MODELS} or a local Hugging Face "
                             f"model directory, got {self.text_model!r}")
        if self.itm_probability is not None and not 0 < self.itm_probability < 1:
            raise ValueError(f"region-word: itm_probability must be in (0, 1) or None, got {self.itm_probability}")
        if self.batch_size < 2:
            raise ValueError("region-word: in-batch negatives need batch_size >= 2")
        if not 0 < self.mlm_probability < 1 or self.max_length < 3 or self.embed_dim <= 0:
            raise ValueError(f"region-word: bad mlm_probability / max_length / embed_dim in {self}")


PROFILES = {
    "smoke": to_dict(RegionWordConfig(image_size=32, embed_dim=32, vocab_size=200, max_length=32, text_hidden=32,
                                      text_layers=1, text_heads=2, text_ffn=64, batch_size=4, steps=3,
                                      itm_probability=None, lr=1e-3, checkpoint_every=2, log_every=1, seed=0)),
    "small": to_dict(RegionWordConfig(image_size=96, embed_dim=128, vocab_size=2000, max_length=96, text_hidden=128,
                                      text_layers=2, text_heads=4, text_ffn=512, batch_size=32, steps=150,
                                      itm_probability=None, lr=5e-4, lr_decay_epochs=(), rotation=5.0,
                                      checkpoint_every=50, log_every=10, seed=0)),
    "paper": to_dict(RegionWordConfig()),
}
