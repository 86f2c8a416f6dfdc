"""Encoders a user may already have on disk: timm, torchvision and torchxrayvision models with local weights.

``python -m harness submit`` reaches these through one of two spellings::

    python -m harness submit --arch resnet50 --weights r50.safetensors --name my-r50
    python -m harness submit timm:convnext_tiny --weights convnext.safetensors --name my-convnext
    python -m harness submit torchvision:densenet121 --weights d121.pth --name my-d121
    python -m harness submit torchxrayvision:densenet121-res224-all --weights xrv.pth --name xrv-all

The short ``--arch`` names (``ARCHS``) are the architectures the harness knows
without any baseline code; ``timm:NAME`` and ``torchvision:NAME`` take any model
those libraries can build. Every adapter builds the architecture with random
initialisation and then loads the user's file, so:

- nothing is ever downloaded (``pretrained=False``, ``weights=None``);
- no weights file means a ``SubmissionError`` naming what to pass, never a score of
  random weights;
- weights load without executing code (``load_state_dict``): ``.safetensors``, or
  ``torch.load(weights_only=True)``; a pickle that would run code is refused.

The classifier head is removed (``num_classes=0`` / ``Identity``): the encoder's
global feature is what the harness scores. Preprocessing is each library's own:
ImageNet statistics at 224 px for timm/torchvision, torchxrayvision's
``[-1024, 1024]`` grey range at 224 px (expressed as mean 0.5, std 1/2048 on
``[0, 1]`` pixels).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from harness.encoders import IMAGENET_MEAN, IMAGENET_STD, MethodCard, Preprocess
from harness.encoders.errors import SubmissionError
from harness.encoders.weights import describe_mismatches, load_state_dict, one_line, shape_mismatches
from harness.storage import file_sha256

# short --arch name -> (library, model name in that library)
ARCHS = {
    "resnet18": ("torchvision", "resnet18"),
    "resnet50": ("torchvision", "resnet50"),
    "vit_tiny": ("timm", "vit_tiny_patch16_224"),
    "efficientnet_lite0": ("timm", "efficientnet_lite0"),
}
LIBRARIES = ("timm", "torchvision", "torchxrayvision")
ALIASES = {"xrv": "torchxrayvision"}
_HEAD_PREFIXES = ("fc.", "head.", "classifier.", "heads.")


def is_adapter_spec(spec: str | None) -> bool:
    """``timm:NAME``, ``torchvision:NAME``, ``torchxrayvision:NAME`` (or ``xrv:NAME``)."""
    if not spec or ":" not in spec:
        return False
    return ALIASES.get(spec.split(":", 1)[0], spec.split(":", 1)[0]) in LIBRARIES


def resolve_arch(arch: str) -> tuple[str, str]:
    """``resnet50`` -> ``("torchvision", "resnet50")``; ``timm:NAME`` -> ``("timm", NAME)``."""
    if arch in ARCHS:
        return ARCHS[arch]
    if is_adapter_spec(arch):
        library, name = arch.split(":", 1)
        return ALIASES.get(library, library), name
    raise SubmissionError(f"unknown --arch {arch!r}; known: {sorted(ARCHS)}, or timm:NAME / torchvision:NAME / "
                          "torchxrayvision:NAME")


# ------------------------------------------------------------------------------------------ builders


def _build(library: str, name: str) -> tuple[Any, Preprocess, str]:
    """(architecture, preprocess, the method giving global features); random init, headless.

    The weights come from the user's file afterwards.
    """
    from torch import nn

    imagenet = Preprocess(224, 3, IMAGENET_MEAN, IMAGENET_STD)
    if library == "timm":
        import timm

        if not timm.is_model(name):
            raise SubmissionError(f"timm has no model {name!r} (see timm.list_models())")
        return timm.create_model(name, pretrained=False, num_classes=0), imagenet, "forward"
    if library == "torchvision":
        import torchvision

        if name not in torchvision.models.list_models():
            raise SubmissionError(f"torchvision has no model {name!r} (see torchvision.models.list_models())")
        net = torchvision.models.get_model(name, weights=None)
        for head in ("fc", "classifier", "heads", "head"):
            if isinstance(getattr(net, head, None), nn.Module):
                setattr(net, head, nn.Identity())
                break
        return net, imagenet, "forward"
    if library == "torchxrayvision":
        if importlib.util.find_spec("torchxrayvision") is None:
            raise SubmissionError("torchxrayvision is not installed here (pip install torchxrayvision); its models "
                                  "cannot be scored without it")
        import torchxrayvision as xrv  # pragma: no cover - not installed in the harness environment

        # weights=None: the architecture only; xrv would otherwise download its files
        net = xrv.models.DenseNet(weights=None)  # pragma: no cover
        return net, Preprocess(224, 1, (0.5,), (0.5 / 1024,)), "features2"  # pragma: no cover
    raise SubmissionError(f"unknown library {library!r}; known: {LIBRARIES}")


def adapter_encoder(arch: str, weights: str | Path | None, pretraining_data: tuple[str, ...] = ("unknown",)) -> Any:
    """A timm / torchvision / torchxrayvision model with the user's local weights, as a harness encoder.

    Args:
        arch: a short name from ``ARCHS`` or ``library:NAME``.
        weights: the local weights file; required (no download, no random fallback).
        pretraining_data: what the weights were pretrained on, for the leaderboard's leakage flag.
    """
    import torch
    from torch import nn

    library, name = resolve_arch(arch)
    if not weights:
        raise SubmissionError(f"{library}:{name} is unavailable without local weights: pass --weights FILE "
                              "(.safetensors or a torch state dict). The harness never downloads weights and "
                              "never scores a randomly initialised model in their place")
    net, preprocess, feature_method = _build(library, name)
    state = load_state_dict(weights)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith(_HEAD_PREFIXES)}
    mismatched = shape_mismatches(state, net.state_dict())
    if mismatched:
        raise SubmissionError(f"{weights}: does not fit {library}:{name}: {describe_mismatches(mismatched)}")
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise SubmissionError(f"{weights}: does not fit {library}:{name}: missing {list(missing)[:3]}, unexpected "
                              f"{list(unexpected)[:3]} (of {len(missing)} / {len(unexpected)})")
    card = MethodCard(name=f"{library}-{name}", paper=f"user weights {Path(weights).name} for {library}:{name}",
                      preprocess=preprocess, pretraining_data=tuple(pretraining_data),
                      capabilities=("image", "trainable"), notes=f"weights file sha256 {file_sha256(weights)}")

    class AdapterEncoder(nn.Module):
        """The library model's global feature as ``encode_image``."""

        def __init__(self) -> None:
            super().__init__()
            self.card = card
            self.net = net.eval()
            size = preprocess.image_size
            probe = torch.zeros(1, preprocess.channels, size, size)
            try:
                with torch.no_grad():
                    out = self.encode_image(probe)
            except Exception as exc:  # noqa: BLE001 - the library's own refusal (e.g. timm's fixed ViT size)
                raise SubmissionError(f"{library}:{name} refuses a {tuple(probe.shape)} input, {size} px as the "
                                      f"harness preprocesses for {library} models: {one_line(exc)}") from None
            if out.ndim != 2:
                raise SubmissionError(f"{library}:{name} returns {tuple(out.shape)} features for a "
                                      f"{tuple(probe.shape)} input, not (1, D): its head is not a global feature")
            self.num_features = int(out.shape[1])

        def encode_image(self, images: torch.Tensor) -> torch.Tensor:
            return getattr(self.net, feature_method)(images)  # (B, num_features)

    return AdapterEncoder().eval()
