"""``random``: the config and its three profiles (the same backbones and sizes as the ImageNet baseline)."""

from __future__ import annotations

from dataclasses import dataclass

from baselines.common.config import MethodConfig, to_dict


@dataclass(frozen=True)
class RandomConfig(MethodConfig):
    """An untrained backbone; ``seed`` is the initialisation seed."""

    image_size: int = 128
    backbone: str = "resnet18"
    in_chans: int = 3  # 3: grey repeated, as for the ImageNet baselines it is compared with


PROFILES = {
    "smoke": to_dict(RandomConfig(backbone="resnet18", image_size=32)),
    "small": to_dict(RandomConfig(backbone="resnet18", image_size=128)),
    "paper": to_dict(RandomConfig(backbone="resnet50", image_size=224)),
}
