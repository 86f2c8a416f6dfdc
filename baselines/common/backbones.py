"""Image backbones with one uniform interface: pooled features and a region map.

Reused from torchvision and timm, never vendored (STYLE 3.6). Every backbone is a
``Backbone`` with

- ``num_features``: the width D of pooled and region features;
- ``forward(x) -> (B, D)``: the global pooled feature (CNNs: global average pool
  of the last stage; ViTs: the CLS token after the final norm);
- ``feature_map(x) -> (B, D, h, w)``: spatial features of the last stage;
- ``regions(x) -> (B, R, D)`` with ``R = h * w``, row-major over ``grid(image_size) = (h, w)``;
- ``logits(x) -> (B, num_classes)`` when built with a classifier (ImageNet checks).

Grey input. CXRs are one channel; each backbone takes ``in_chans``:

=====================  ==========================================================
``resnet18/50``        torchvision. ``in_chans=3``: the unchanged ImageNet stem,
                       fed the grey channel repeated 3x (what ImageNet weights
                       need). ``in_chans=1``: ``conv1`` rebuilt with 1 input
                       channel (random init only).
``efficientnet_lite0`` timm ``efficientnet_lite0`` (ReLU6, no SE: the TFLite-friendly
                       variant), ``in_chans`` passed to timm (3: repeated grey).
``vit_tiny/vit_small`` timm ``vit_{tiny,small}_patch16_224``, ``img_size`` set to the
                       run's image size and ``dynamic_img_size=True`` so smaller
                       views (MSN focal crops) also work; ``in_chans`` passed to timm.
=====================  ==========================================================

The harness preprocessing (``harness.encoders.preprocess.to_model_input``) produces
exactly ``card.preprocess.channels`` channels, so the encoder card must say the
backbone's ``in_chans``.
"""

from __future__ import annotations

import math

import timm
import torch
import torchvision
from torch import nn

BACKBONES = ("resnet18", "resnet50", "efficientnet_lite0", "vit_tiny", "vit_small")


class Backbone(nn.Module):
    """Base: subclasses implement ``feature_map``, ``forward`` and ``grid``."""

    name: str
    num_features: int
    in_chans: int

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def grid(self, image_size: int) -> tuple[int, int]:
        raise NotImplementedError

    def regions(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, h*w, D)``: last-stage features, one row per spatial cell."""
        return self.feature_map(x).flatten(2).transpose(1, 2)  # (B, D, h, w) -> (B, R, D)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        if self.classifier is None:
            raise RuntimeError(f"{self.name} was built without a classifier (num_classes=0)")
        return self.classifier(self(x))


class CnnBackbone(Backbone):
    """A convolutional trunk ending in a (B, D, h, w) map; pooled by global average."""

    def __init__(self, name: str, trunk: nn.Module, num_features: int, in_chans: int,
                 classifier: nn.Module | None = None, stride: int = 32) -> None:
        super().__init__()
        self.name, self.num_features, self.in_chans, self.stride = name, num_features, in_chans, stride
        self.trunk, self.classifier = trunk, classifier

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x)  # (B, D, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_map(x).mean(dim=(2, 3))  # (B, D)

    def grid(self, image_size: int) -> tuple[int, int]:
        # every stride-2 layer has padding k // 2, so each halves with ceil: 224 -> 7, 96 -> 3, 32 -> 1
        side = image_size
        for _ in range(int(math.log2(self.stride))):
            side = math.ceil(side / 2)
        return side, side


class _TorchvisionResNetTrunk(nn.Module):
    """torchvision ResNet without avgpool / fc; keeps torchvision's parameter names."""

    def __init__(self, resnet: torchvision.models.ResNet) -> None:
        super().__init__()
        self.conv1, self.bn1, self.relu, self.maxpool = resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, 64, H/4, W/4)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (B, D, H/32, W/32)


class _TimmCnnTrunk(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)  # (B, D, h, w)


class VitBackbone(Backbone):
    """timm ViT: pooled = CLS token, regions = patch tokens (after the final norm)."""

    def __init__(self, name: str, vit: nn.Module, in_chans: int, classifier: nn.Module | None = None) -> None:
        super().__init__()
        self.name, self.vit, self.in_chans, self.classifier = name, vit, in_chans, classifier
        self.num_features = vit.num_features
        self.patch_size = vit.patch_embed.patch_size[0]

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        return self.vit.forward_features(x)  # (B, prefix + N, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vit.forward_head(self.tokens(x), pre_logits=True)  # (B, D), CLS

    def regions(self, x: torch.Tensor) -> torch.Tensor:
        return self.tokens(x)[:, self.vit.num_prefix_tokens:]  # (B, N, D)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        return self.regions(x).transpose(1, 2).reshape(x.shape[0], self.num_features, h, w)  # (B, D, h, w)

    def grid(self, image_size: int) -> tuple[int, int]:
        return image_size // self.patch_size, image_size // self.patch_size


def _resnet(name: str, in_chans: int, num_classes: int) -> Backbone:
    resnet = getattr(torchvision.models, name)(weights=None)
    if in_chans == 1:
        resnet.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    elif in_chans != 3:
        raise ValueError(f"in_chans must be 1 or 3, got {in_chans}")
    num_features = resnet.fc.in_features
    classifier = nn.Linear(num_features, num_classes) if num_classes else None
    return CnnBackbone(name, _TorchvisionResNetTrunk(resnet), num_features, in_chans, classifier)


def _efficientnet_lite0(in_chans: int, num_classes: int) -> Backbone:
    model = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=0, in_chans=in_chans)
    classifier = nn.Linear(model.num_features, num_classes) if num_classes else None
    return CnnBackbone("efficientnet_lite0", _TimmCnnTrunk(model), model.num_features, in_chans, classifier)


def _vit(name: str, in_chans: int, num_classes: int, image_size: int) -> Backbone:
    timm_name = {"vit_tiny": "vit_tiny_patch16_224", "vit_small": "vit_small_patch16_224"}[name]
    vit = timm.create_model(timm_name, pretrained=False, num_classes=0, in_chans=in_chans, img_size=image_size,
                            dynamic_img_size=True)
    classifier = nn.Linear(vit.num_features, num_classes) if num_classes else None
    return VitBackbone(name, vit, in_chans, classifier)


def build_backbone(name: str, *, in_chans: int = 3, image_size: int = 224, num_classes: int = 0) -> Backbone:
    """A randomly initialised backbone (seed the global torch RNG first for a reproducible init).

    Args:
        name: one of ``BACKBONES``.
        in_chans: 1 (grey stem) or 3 (grey repeated); see the module docstring.
        image_size: the training/eval image size (ViTs size their position embedding with it).
        num_classes: >0 adds a linear ``classifier`` (used to check ImageNet weights).
    """
    if in_chans not in (1, 3):
        raise ValueError(f"in_chans must be 1 or 3, got {in_chans}")
    if name in ("resnet18", "resnet50"):
        return _resnet(name, in_chans, num_classes)
    if name == "efficientnet_lite0":
        return _efficientnet_lite0(in_chans, num_classes)
    if name in ("vit_tiny", "vit_small"):
        return _vit(name, in_chans, num_classes, image_size)
    raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
