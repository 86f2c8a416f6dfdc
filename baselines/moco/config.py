"""MoCo v2 with the MoCo-CXR recipe: the config and its three profiles.

``paper`` follows MoCo-CXR's scripts (docs/methods.md section 5.1: Adam lr 1e-4, wd 1e-4,
batch 16, 20 epochs, lr x0.1 at epochs 12/18/24, T 0.2, m 0.999, dim 128, queue
24,576, flip + 10 degree rotation + crop, no colour jitter nor brightness / contrast change)
with the harness's ResNet-50 at 224 px (MoCo-CXR used ResNet-18 / DenseNet-121 at 320 px:
harness choice, so the image features match the Dalla Serra et al. ResNet-50 pipeline).
Shuffle BN stays on (2 sub-batches of 8 on one process) where MoCo-CXR's one-GPU scripts had
none (a one-GPU shuffle leaves BatchNorm's batch unchanged): harness choice, since shuffle BN
is part of MoCo; ``--set shuffle_bn_splits=1`` gives MoCo-CXR's one-GPU behaviour.
``small`` is the CPU default on the synthetic world; ``smoke`` runs in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

from baselines.common.config import TrainingConfig, to_dict


@dataclass(frozen=True)
class MoCoConfig(TrainingConfig):
    """MoCo v2 with the MoCo-CXR recipe. From ``TrainingConfig`` unchanged: Adam (MoCo-CXR) lr 1e-4 and
    weight decay 1e-4, rotation 10 degrees, ``steps``, ``log_every``, ``amp``, seed 0; and brightness and
    contrast 0.1, a harness addition that ``paper`` turns off (MoCo-CXR has no photometric change)."""

    image_size: int = 96
    batch_size: int = 32  # global, over all processes (as MoCo's --batch-size); MoCo-CXR: 16
    epochs: float = 20.0
    checkpoint_every: int = 200
    backbone: str = "efficientnet_lite0"
    init: str = "imagenet"  # imagenet: start from supervised ImageNet weights (MoCo-CXR --from-imagenet) | random
    weights: str | None = None  # ImageNet weights file for init=imagenet; None: the default source
    dim: int = 128  # MoCo feature dimension (output of the MLP head)
    K: int = 24576  # queue size; capped at the largest multiple of the global batch <= #images (recorded)
    m: float = 0.999  # key-encoder momentum
    T: float = 0.2  # InfoNCE temperature (MoCo-CXR scripts; MoCo's default 0.07)
    mlp: bool = True  # 2-layer MLP head (MoCo v2)
    # one process: the keys' BatchNorm sees this many shuffled sub-batches, as it would on that many GPUs
    # with MoCo's shuffle BN (same permutation as rank 0 draws, so 1 and N processes agree closely)
    shuffle_bn_splits: int = 2
    # train: BatchNorm statistics follow the training batches (MoCo) | frozen: keep the initial (ImageNet)
    # statistics; with frozen statistics no batch statistics are shared, so shuffle BN has nothing to hide
    bn_stats: str = "train"
    lr_decay_epochs: tuple[float, ...] = (12.0, 18.0, 24.0)  # x0.1 at each (MoCo-CXR); 24 is past 20 epochs
    scale: tuple[float, float] = (0.6, 1.0)  # random resized crop area: conservative, the thorax stays in view
    hflip: bool = True

    def __post_init__(self) -> None:
        if self.bn_stats not in ("train", "frozen"):
            raise ValueError(f"moco: bn_stats must be 'train' or 'frozen', got {self.bn_stats!r}")
        if self.bn_stats == "frozen" and self.init == "random":
            raise ValueError("moco: bn_stats='frozen' keeps the initial statistics, which init='random' does not have")
        if self.init not in ("imagenet", "random"):
            raise ValueError(f"moco: init must be 'imagenet' or 'random', got {self.init!r}")
        if self.K <= 0 or self.batch_size <= 0 or not 0 <= self.m <= 1 or self.T <= 0:
            raise ValueError(f"moco: bad K / batch_size / m / T in {self}")


PROFILES = {
    "smoke": to_dict(MoCoConfig(backbone="resnet18", image_size=32, init="random", K=64, batch_size=8, steps=4,
                                checkpoint_every=2, log_every=1, lr=1e-3)),
    # small: chosen on VALIDATION AUROC (mimic-cls and nih14-cls, 10 %, 3 seeds). First among four variants
    # (paper augmentations with K<=N, m 0.999 or 0.99, K 128): the synthetic patients differ less than two
    # paper-strength views of one image, so instance discrimination stayed at chance until the views were
    # made weaker (crop area >= 0.85, 3 degrees, no flip) and the momentum faster (0.99). Then BatchNorm:
    # with lr 0 (30 steps: only the running statistics move) validation AUROC fell from ImageNet's 0.66 to
    # 0.56 on mimic-cls, and every trained variant sat below ImageNet; with the ImageNet statistics frozen
    # (bn_stats=frozen; the affine weights still train) MoCo reached top-1 0.27 instead of 0.08 and the
    # best validation AUROC of all (mimic-cls 0.728 vs ImageNet 0.702; nih14-cls 0.740 vs 0.711). 128 px,
    # as the small profiles of imagenet and random, so the three compare at one resolution.
    "small": to_dict(MoCoConfig(backbone="efficientnet_lite0", image_size=128, init="imagenet", K=4096, m=0.99,
                                batch_size=32, steps=200, checkpoint_every=50, scale=(0.85, 1.0), rotation=3.0,
                                hflip=False, brightness=0.05, contrast=0.05, bn_stats="frozen")),
    # paper: MoCo-CXR's scripts (docs/methods.md section 5.1): flip, rotation 10 and a crop, no photometric change
    "paper": to_dict(MoCoConfig(backbone="resnet50", image_size=224, init="imagenet", K=24576, batch_size=16,
                                epochs=20.0, checkpoint_every=1000, log_every=50, brightness=0.0, contrast=0.0)),
}
