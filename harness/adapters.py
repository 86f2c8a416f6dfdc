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

import hashlib
import importlib.util
import pickle
import re
from pathlib import Path
from typing import Any

from harness.methods import IMAGENET_MEAN, IMAGENET_STD, MethodCard, Preprocess

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


class SubmissionError(ValueError):
    """A submission that cannot be scored; the message says what to fix."""


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


# ------------------------------------------------------------------------------------------ weights


TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


def _refuse(path: Path, what: str, hint: str = "") -> SubmissionError:
    return SubmissionError(f"weights file {path} is {what}" + (f"; {hint}" if hint else ""))


def _check_format(path: Path) -> str:
    """The loadable kind of ``path`` (``harness.weights_format``), or a SubmissionError saying what it is."""
    from harness.weights_format import sniff

    try:
        found = sniff(path)
    except OSError as exc:
        raise SubmissionError(f"weights file {path} cannot be read: {exc.strerror or exc}") from None
    suffix = path.suffix.lower()
    if suffix == ".safetensors" and not found.kind.startswith("safetensors"):
        hint = "rename it to .pt (torch files load with weights_only=True)" if found.loadable else ""
        raise _refuse(path, f"not a safetensors file: it is {found.what}", hint)
    if suffix in TORCH_SUFFIXES and found.kind == "safetensors":
        raise _refuse(path, f"a safetensors file, not the torch file its {suffix} name says",
                      f"rename it to {path.with_suffix('.safetensors').name}")
    if not found.loadable:
        other_format = found.kind in ("torchscript", "npz", "npy", "zip", "hdf5")
        raise _refuse(path, found.what, "save model.state_dict() with safetensors or torch.save" if other_format
                      else "")
    return found.kind


def _torch_load(path: Path, kind: str) -> Any:
    import warnings

    import torch

    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols: noise next to our one line
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except (EOFError, RuntimeError) as exc:
        if isinstance(exc, RuntimeError) and "EOF" not in str(exc):  # torch words a cut file "unexpected EOF"
            what = "pickle" if kind == "pickle" else "torch.save archive"
            raise SubmissionError(f"weights file {path} is a damaged {what} ({one_line(exc)[:160]}); save it again"
                                  ) from None
        raise _refuse(path, f"{'a truncated pickle' if kind == 'pickle' else 'truncated'} (cut off in a copy or "
                            "download?)") from None
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f"it pickles {found.group(1)}, so loading it would execute code" if found else \
            "loading it would execute code"
        raise SubmissionError(f"{path}: refused: not a plain tensor file: {what}. Save the weights with safetensors "
                              "or torch.save(model.state_dict())") from None
    except (AttributeError, TypeError, ValueError) as exc:
        raise SubmissionError(f"{path}: refused: not a plain tensor file ({one_line(exc)[:160]}). Save the weights "
                              "with safetensors or torch.save(model.state_dict())") from None


def _tensors_only(path: Path, state: Any) -> dict[str, Any]:
    """``state`` (or its ``state_dict`` section) when every value is a tensor, else a SubmissionError."""
    import torch

    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise SubmissionError(f"{path}: expected a state dict of tensors, got {type(state).__name__}")
    bad = next(((k, v) for k, v in state.items() if not isinstance(v, torch.Tensor)), None)
    if bad is not None:
        sections = [str(k) for k, v in state.items() if isinstance(v, dict)]
        hint = (f"; it looks like a training checkpoint with sections {sections[:4]}: save only the model's "
                "state_dict()") if sections else ""
        raise SubmissionError(f"{path}: expected a state dict of tensors; entry {str(bad[0])!r} is "
                              f"{type(bad[1]).__name__}{hint}")
    return state


def load_state_dict(path: str | Path) -> dict[str, Any]:
    """Tensors from a safetensors file, or a torch file loaded with ``weights_only=True``.

    The format is read from the content (``harness.weights_format.sniff``), and must agree
    with the extension: ``.safetensors`` holds safetensors, ``.pt``/``.pth``/``.bin``/``.ckpt``
    torch (other names load by content).

    Raises:
        SubmissionError: one line naming the file and what it is: missing, a folder, empty,
            truncated, another format than its name says (a torch zip named ``.safetensors``,
            safetensors named ``.pt``), not weights at all (text, an HTML page, a Git LFS
            pointer, TorchScript, NumPy, HDF5, gzip), a pickle that would execute code
            (refused before any of it runs), or not a mapping of tensors.
    """
    path = Path(path)
    if path.is_dir():
        raise SubmissionError(f"weights file {path} is a folder; pass the weights file inside it (.safetensors, "
                              ".pt, .pth or .bin)")
    if not path.is_file():
        raise SubmissionError(f"weights file {path} does not exist")
    kind = _check_format(path)
    if kind == "safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types; say it in one line
            raise _refuse(path, f"a damaged safetensors file ({' '.join(str(exc).split())[:160]})") from None
    return _tensors_only(path, _torch_load(path, kind))


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def one_line(exc: BaseException) -> str:
    """``Type: message`` on one line (messages of libraries can span several)."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def shape_mismatches(state: dict[str, Any], model_state: dict[str, Any]) -> list[tuple[str, tuple, tuple]]:
    """(key, shape in the file, shape in the model) of every tensor both have, in other shapes, in model order."""
    return [(k, tuple(state[k].shape), tuple(v.shape)) for k, v in model_state.items()
            if k in state and tuple(state[k].shape) != tuple(v.shape)]


def describe_mismatches(mismatched: list[tuple[str, tuple, tuple]], show: int = 3) -> str:
    """One line listing the first mismatched keys with both shapes, and the channel count when that is why."""
    parts = [f"{k} is {f} in the file, {m} in the model" for k, f, m in mismatched[:show]]
    more = f" (and {len(mismatched) - show} more)" if len(mismatched) > show else ""
    text = f"{len(mismatched)} tensor(s) of another shape: " + "; ".join(parts) + more
    channels = next(((f[1], m[1]) for _, f, m in mismatched if len(f) == 4 and len(m) == 4 and f[0] == m[0]
                     and f[2:] == m[2:] and f[1] != m[1] and {f[1], m[1]} <= {1, 3}), None)
    if channels is not None:  # the classic: grey (1-channel) weights for a 3-channel model, or the reverse
        text += f"; the weights take {channels[0]}-channel images, the model {channels[1]}-channel"
    return text


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
