"""``supervised``: the config and its three profiles (a ResNet trained on a task's training labels).

``paper`` follows the recipe the CheXpert paper reports for its supervised classifiers (Irvin et al.,
AAAI 2019: ImageNet-initialised network, Adam with lr 1e-4 held constant, batch 16, 3 epochs, the
checkpoint chosen on validation), with the harness's ResNet-50 at 224 px in place of their DenseNet-121
at 320 px (harness choice, as for the other baselines). ``small`` (the CPU default on the synthetic
world) fine-tunes the ImageNet EfficientNet-Lite0 of the ``imagenet`` row (the only ImageNet weights that
ship offline) for 200 steps, so the ceiling starts where that row's features are; ``smoke`` trains a
ResNet-18 from a seeded random initialisation for 4 steps, with a higher lr (seconds, for tests).

Model selection never touches the task's validation or test patients: ``val_fraction`` of the TRAINING
patients (by a hash of the patient id) are held out of the gradient steps, the BCE loss on them is
measured every ``eval_every`` steps, and the checkpoint with the lowest one is the encoder. The task's
own validation split then chooses the probe's L2 and thresholds, exactly as for every other row.
"""

from __future__ import annotations

from dataclasses import dataclass

from baselines.common.config import TrainingConfig, to_dict


@dataclass(frozen=True)
class SupervisedConfig(TrainingConfig):
    """A backbone and a linear multi-label head trained with BCE on the task's training labels.

    From ``TrainingConfig``: batch, lr, weight decay, budget (``epochs`` or ``steps``), checkpoints, logs,
    autocast, and the rotation / brightness / contrast of the one augmented view.
    """

    image_size: int = 224
    batch_size: int = 16  # CheXpert: 16
    lr: float = 1e-4  # CheXpert: Adam, 1e-4, constant
    weight_decay: float = 0.0  # CheXpert reports none
    epochs: float = 3.0  # CheXpert: 3
    checkpoint_every: int = 1000
    backbone: str = "resnet50"
    init: str = "imagenet"  # imagenet: start from supervised ImageNet weights | random: seeded default init
    weights: str | None = None  # ImageNet weights file for init=imagenet; None: the default source
    val_fraction: float = 0.1  # of the TRAINING patients, held out of the gradient steps to choose the checkpoint
    eval_every: int = 1000  # steps between the held-out loss measurements (and at the last step)
    scale: tuple[float, float] = (0.85, 1.0)  # random resized crop area: mild, the thorax stays in view
    rotation: float = 5.0
    hflip: bool = False  # laterality is part of a finding's look (the heart's side): not flipped

    def __post_init__(self) -> None:
        if self.init not in ("imagenet", "random"):
            raise ValueError(f"supervised: init must be 'imagenet' or 'random', got {self.init!r}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"supervised: val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.eval_every <= 0 or self.batch_size <= 0:
            raise ValueError(f"supervised: eval_every and batch_size must be positive, got {self.eval_every}, "
                             f"{self.batch_size}")


PROFILES = {
    "smoke": to_dict(SupervisedConfig(backbone="resnet18", image_size=32, init="random", batch_size=8, steps=4,
                                      lr=1e-3, eval_every=2, checkpoint_every=2, log_every=1, val_fraction=0.2)),
    # small: the ImageNet EfficientNet-Lite0 of the `imagenet` row (offline), fine-tuned on the labels: a ResNet-18
    # from scratch reached AUROC-macro 0.58 after 60 steps on a scale-0.3 world, below `random` (0.65): no ceiling
    "small": to_dict(SupervisedConfig(backbone="efficientnet_lite0", image_size=128, init="imagenet", batch_size=32,
                                      steps=200, lr=1e-4, eval_every=50, checkpoint_every=50, log_every=10)),
    "paper": to_dict(SupervisedConfig(backbone="resnet50", image_size=224, init="imagenet", batch_size=16,
                                      epochs=3.0, eval_every=4800, checkpoint_every=1200, log_every=50)),
}
