"""Scoring your own encoder exactly like the baselines: ``python -m harness submit``.

An encoder is any object with the capability methods it has (``encode_image``,
optionally ``encode_image_regions`` + ``region_grid``, ``encode_text``,
``regenerate``; see ``harness.methods``) and a ``card`` (``MethodCard``: name,
preprocessing, pretraining data). It reaches the harness in one of three ways:

- ``package.module:factory``: a callable returning the encoder;
- an installed plugin: an entry point in the ``harness.encoders`` group (listed by
  ``harness ls methods``);
- ``--arch ARCH --weights FILE``: weights for an architecture the harness can build
  without any baseline code (``resnet18``, ``resnet50`` from torchvision;
  ``vit_tiny``, ``efficientnet_lite0`` from timm).

Weights never execute code: ``.safetensors`` files, or ``torch.load(weights_only=True)``
for ``.pt``/``.pth``; a pickle that would run code is refused with the file named.
Before any scoring the encoder is checked (shapes, dtype, NaN/inf, determinism and
batch independence in eval mode), then it becomes an ordinary registered method with
no pretraining, so the runner scores it through the same path as every baseline.
"""

from __future__ import annotations

import hashlib
from importlib import metadata
from pathlib import Path
from typing import Any

from harness.catalog import METHODS
from harness.methods import MethodCard, Preprocess, capabilities
from harness.registry import resolve_target

ENTRY_POINT_GROUP = "harness.encoders"
ARCHS = ("resnet18", "resnet50", "vit_tiny", "efficientnet_lite0")


class SubmissionError(ValueError):
    """A submission that cannot be scored; the message says what to fix."""


# ------------------------------------------------------------------------------------------ weights


def load_state_dict(path: str | Path) -> dict[str, Any]:
    """Tensors from a safetensors file, or a torch file loaded with ``weights_only=True``."""
    import pickle

    import torch

    path = Path(path)
    if not path.exists():
        raise SubmissionError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError) as exc:
        raise SubmissionError(f"{path}: refused: not a plain tensor file; loading it would execute code "
                              f"({type(exc).__name__}). Save the weights with safetensors or torch.save(state_dict)"
                              ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise SubmissionError(f"{path}: expected a state dict, got {type(state).__name__}")
    return state


def arch_encoder(arch: str, weights: str | Path, image_size: int = 224) -> Any:
    """A torchvision/timm architecture with the user's weights, as a harness image encoder."""
    import timm
    import torch
    import torchvision
    from torch import nn

    from harness.methods import IMAGENET_MEAN, IMAGENET_STD

    if arch not in ARCHS:
        raise SubmissionError(f"unknown --arch {arch!r}; known: {list(ARCHS)}")
    if arch.startswith("resnet"):
        net = getattr(torchvision.models, arch)(weights=None)
        net.fc = nn.Identity()
    else:
        name = {"vit_tiny": "vit_tiny_patch16_224"}.get(arch, arch)
        net = timm.create_model(name, pretrained=False, num_classes=0, img_size=image_size) if arch == "vit_tiny" \
            else timm.create_model(name, pretrained=False, num_classes=0)
    state = load_state_dict(weights)
    state = {k: v for k, v in state.items() if not k.startswith(("fc.", "head.", "classifier."))}
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise SubmissionError(f"{weights}: does not fit {arch}: missing {missing[:3]}, unexpected "
                              f"{unexpected[:3]} (of {len(missing)} / {len(unexpected)})")
    digest = hashlib.sha256(Path(weights).read_bytes()).hexdigest()[:12]

    class _Encoder(nn.Module):
        card = MethodCard(name=f"{arch}-{digest}", paper=f"user weights {Path(weights).name} for {arch}",
                          preprocess=Preprocess(image_size, 3, IMAGENET_MEAN, IMAGENET_STD),
                          pretraining_data=("unknown",), capabilities=("image", "trainable"))

        def __init__(self) -> None:
            super().__init__()
            self.net = net.eval()
            with torch.no_grad():
                self.num_features = int(net(torch.zeros(1, 3, image_size, image_size)).shape[1])

        def encode_image(self, images: torch.Tensor) -> torch.Tensor:
            return self.net(images)

    return _Encoder().eval()


# ------------------------------------------------------------------------------------------ checks


def check_encoder(encoder: Any) -> list[str]:
    """Problems that stop scoring (empty when the encoder is usable)."""
    import torch

    card = getattr(encoder, "card", None)
    if not isinstance(card, MethodCard):
        return ["the encoder has no `card` (harness.methods.MethodCard: name, preprocess, pretraining_data)"]
    if "image" not in capabilities(encoder):
        return ["the encoder has no encode_image(images) and no num_features: every task needs images"]
    if hasattr(encoder, "eval"):
        encoder.eval()
    p = card.preprocess
    x = torch.randn(4, p.channels, p.image_size, p.image_size, generator=torch.Generator().manual_seed(0))
    problems = []
    try:
        with torch.no_grad():
            a, b, half = encoder.encode_image(x), encoder.encode_image(x), encoder.encode_image(x[:2])
    except Exception as exc:  # noqa: BLE001 - the user's code: report whatever it raised
        return [f"encode_image raised {type(exc).__name__}: {exc}"]
    if not isinstance(a, torch.Tensor) or a.shape != (4, encoder.num_features):
        got = tuple(a.shape) if isinstance(a, torch.Tensor) else type(a).__name__
        return [f"encode_image must return (B, num_features) = (4, {encoder.num_features}); got {got}"]
    if not a.is_floating_point():
        problems.append(f"encode_image returned {a.dtype}; expected a floating-point tensor")
    if not torch.isfinite(a).all():
        problems.append("encode_image returned NaN or inf")
    elif not torch.equal(a, b):
        problems.append("encode_image is not deterministic in eval mode (two identical calls differ)")
    elif not torch.allclose(half, a[:2], atol=1e-4, rtol=1e-4):
        problems.append("encode_image depends on the other images of the batch (batch of 2 != first 2 of 4)")
    if "text" in capabilities(encoder):
        try:
            with torch.no_grad():
                t = encoder.encode_text(["no acute cardiopulmonary process", "small left effusion"])
            if not isinstance(t, torch.Tensor) or t.ndim != 2 or t.shape[0] != 2 or not torch.isfinite(t).all():
                problems.append("encode_text must return a finite (B, D) tensor")
        except Exception as exc:  # noqa: BLE001
            problems.append(f"encode_text raised {type(exc).__name__}: {exc}")
    return problems


# ------------------------------------------------------------------------------------------ registration


class SubmissionMethod:
    """A submitted encoder as a ``harness.methods.Method``: no pretraining, ``load`` returns the encoder."""

    def __init__(self, name: str, build: Any) -> None:
        self._build, self._encoder = build, None
        encoder = self._get()
        self.card = MethodCard(name=name, paper=encoder.card.paper, preprocess=encoder.card.preprocess,
                               pretraining_data=tuple(encoder.card.pretraining_data),
                               capabilities=tuple(sorted(capabilities(encoder))), notes=encoder.card.notes)
        config = {"image_size": encoder.card.preprocess.image_size}
        self.profiles = {"smoke": config, "small": config, "paper": config}

    def _get(self) -> Any:
        if self._encoder is None:
            encoder = self._build()
            problems = check_encoder(encoder)
            if problems:
                raise SubmissionError("the submitted encoder failed its checks:\n  - " + "\n  - ".join(problems))
            self._encoder = encoder
        return self._encoder

    def pretrain(self, request: Any) -> None:
        return None

    def load(self, checkpoint: Path | None, config: dict[str, Any]) -> Any:
        return self._get()


def factory_for(spec: str | None, arch: str | None = None, weights: str | None = None) -> Any:
    """A zero-argument callable building the encoder from one of the three SPEC forms."""
    if arch or weights:
        if not (arch and weights):
            raise SubmissionError("--arch and --weights go together")
        return lambda: arch_encoder(arch, weights)
    if not spec or ":" not in spec:
        raise SubmissionError(f"SPEC must be 'package.module:factory' (or use --arch/--weights); got {spec!r}")
    try:
        target = resolve_target(spec)
    except (ImportError, AttributeError) as exc:
        raise SubmissionError(f"cannot import {spec!r}: {exc}") from None
    if not callable(target):
        raise SubmissionError(f"{spec!r} is not callable")
    return target


def submission_spec(spec: str | None, arch: str | None, weights: str | None) -> str:
    """A string that rebuilds the same factory in another process (RunRequest.submission)."""
    return f"arch={arch};weights={Path(weights).resolve()}" if arch else str(spec)


def ensure_registered(name: str, submission: str) -> None:
    """Register ``name`` from a ``submission_spec`` string unless it is registered already."""
    if name in METHODS:
        return
    if submission.startswith("arch="):
        parts = dict(p.split("=", 1) for p in submission.split(";"))
        build = factory_for(None, parts["arch"], parts["weights"])
    else:
        build = factory_for(submission)
    METHODS.add(name, lambda: SubmissionMethod(name, build))


def register_plugins() -> list[str]:
    """Add every ``harness.encoders`` entry point to METHODS (idempotent); returns the names added."""
    added = []
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in METHODS:
            METHODS.add(ep.name, (lambda ep=ep: SubmissionMethod(ep.name, ep.load())))
            added.append(ep.name)
    return added
