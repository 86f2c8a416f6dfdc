"""``imagenet``: the config and its three profiles (EfficientNet-Lite0 on CPU, ResNet-50 for ``paper``)."""

from __future__ import annotations

from dataclasses import dataclass

from baselines.common.config import MethodConfig, to_dict


@dataclass(frozen=True)
class ImageNetConfig(MethodConfig):
    """Which ImageNet backbone, at which size, from which file; ``seed`` is unused by the weights but kept
    so every profile names its seed."""

    image_size: int = 128
    backbone: str = "efficientnet_lite0"  # efficientnet_lite0 | resnet18 | resnet50
    weights: str | None = None  # a file; None: the package file (Lite0) or the torch cache (ResNets)


PROFILES = {
    "smoke": to_dict(ImageNetConfig(image_size=32)),
    "small": to_dict(ImageNetConfig(image_size=128)),
    "paper": to_dict(ImageNetConfig(backbone="resnet50", image_size=224)),
}
