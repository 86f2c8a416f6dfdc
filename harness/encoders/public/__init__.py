"""Encoders a user already has on disk: timm, torchvision, torchxrayvision, Hugging Face and open_clip models.

``python -m harness submit SPEC --name N`` reaches these routes, one module per family::

    python -m harness submit hf:~/models/rad-dino --name rad-dino                       # hf.py
    python -m harness submit open_clip:~/models/biomedclip --name biomedclip           # open_clip.py
    python -m harness submit open_clip:ViT-B-32-quickgelu --weights chexzero.pt --name chexzero
    python -m harness submit xrv:densenet121-res224-all --weights xrv.pt --name xrv-all  # xrv.py
    python -m harness submit torchvision:resnet50 --weights moco.pth.tar --key-prefix module.encoder_q. --name moco
    python -m harness submit timm:convnext_tiny --weights convnext.safetensors --name my-convnext   # timm.py
    python -m harness submit --arch resnet50 --weights r50.safetensors --name my-r50

=================  ==================================================================
``options``        ``RouteOptions``: weights, checkpoint key, key prefix, preprocessing
                   overrides, pretraining data
``preprocessing``  the architecture's own preprocessing (timm, torchvision, HF processor,
                   open_clip) and the ``--image-size`` ... ``--pixel-range`` overrides
``encoder``        ``PublicEncoder``, the card, the first forward pass (``finish``)
``timm``           ``timm:NAME``
``torchvision``    ``torchvision:NAME`` and the ``--arch`` short names
``xrv``            ``torchxrayvision:NAME`` / ``xrv:NAME``
``hf``             ``hf:DIR``: image towers, dual encoders; text-only models refused
``open_clip``      ``open_clip:DIR`` / ``open_clip:ARCH``
=================  ==================================================================

Shared rules: nothing is downloaded (``pretrained=False``, ``weights=None``,
``local_files_only=True``); weights load without executing code (safetensors, weights-only
torch, ``harness.encoders.checkpoints``); no weights means a ``SubmissionError`` naming what to
pass, never a score of random weights; the classifier head is removed, and only it; the
card says where the preprocessing came from and what was read from the file.
"""

from __future__ import annotations

from typing import Any

from harness.encoders.errors import SubmissionError
from harness.encoders.public.options import RouteOptions

# short --arch name -> (library, model name in that library)
ARCHS = {
    "resnet18": ("torchvision", "resnet18"),
    "resnet50": ("torchvision", "resnet50"),
    "vit_tiny": ("timm", "vit_tiny_patch16_224"),
    "efficientnet_lite0": ("timm", "efficientnet_lite0"),
}
LIBRARIES = ("timm", "torchvision", "torchxrayvision", "hf", "open_clip")
ALIASES = {"xrv": "torchxrayvision", "huggingface": "hf", "transformers": "hf", "open-clip": "open_clip",
           "openclip": "open_clip"}
WEIGHTS_ROUTES = ("timm", "torchvision", "torchxrayvision")  # always need --weights
DIRECTORY_ROUTES = ("hf",)  # never take --weights, --checkpoint-key or --key-prefix


def library_of(spec: str | None) -> str | None:
    """The family of a ``LIBRARY:NAME`` spec (``xrv:...`` -> ``torchxrayvision``), or None."""
    if not spec or ":" not in spec:
        return None
    library = spec.split(":", 1)[0]
    library = ALIASES.get(library, library)
    return library if library in LIBRARIES else None


def is_adapter_spec(spec: str | None) -> bool:
    """``timm:NAME``, ``torchvision:NAME``, ``torchxrayvision:NAME`` (``xrv:``), ``hf:DIR``, ``open_clip:...``."""
    return library_of(spec) is not None


def resolve_arch(arch: str) -> tuple[str, str]:
    """``resnet50`` -> ``("torchvision", "resnet50")``; ``timm:NAME`` -> ``("timm", NAME)``.

    Raises:
        SubmissionError: neither a short name nor ``LIBRARY:NAME``.
    """
    if arch in ARCHS:
        return ARCHS[arch]
    library = library_of(arch)
    if library is not None:
        return library, arch.split(":", 1)[1]
    raise SubmissionError(f"unknown --arch {arch!r}; known: {sorted(ARCHS)}, or timm:NAME / torchvision:NAME / "
                          "torchxrayvision:NAME / hf:DIR / open_clip:ARCH")


def public_encoder(arch: str, options: RouteOptions) -> Any:
    """The harness encoder of a public model (see the module docstring).

    Args:
        arch: a short name from ``ARCHS`` or ``LIBRARY:NAME``.
        options: the weights file and the other ``RouteOptions``.

    Raises:
        SubmissionError: one line saying what to fix (no weights, unknown name, a file that
            does not fit, a preprocessing value out of range, ...).
    """
    library, name = resolve_arch(arch)
    if not name:
        raise SubmissionError(f"{arch!r}: name the model after {library}:")
    if library in WEIGHTS_ROUTES and not options.weights:
        raise SubmissionError(f"{library}:{name} is unavailable without local weights: pass --weights FILE "
                              "(.safetensors or a torch state dict). The harness never downloads weights and "
                              "never scores a randomly initialised model in their place")
    if library in DIRECTORY_ROUTES and (options.checkpoint_key or options.key_prefix):
        raise SubmissionError(f"{library}:{name}: --checkpoint-key and --key-prefix are for weights files; a model "
                              "directory is loaded as it was saved")
    if library == "timm":
        from harness.encoders.public import timm as route
    elif library == "torchvision":
        from harness.encoders.public import torchvision as route
    elif library == "torchxrayvision":
        from harness.encoders.public import xrv as route
    elif library == "hf":
        from harness.encoders.public import hf as route
    else:
        from harness.encoders.public import open_clip as route
    return route.build(name, options).eval()


def adapter_encoder(arch: str, weights: str | None, pretraining_data: tuple[str, ...] = ("unknown",)) -> Any:
    """``public_encoder`` with only a weights file and pretraining data (the earlier call)."""
    return public_encoder(arch, RouteOptions(weights=weights, pretraining_data=tuple(pretraining_data)))
