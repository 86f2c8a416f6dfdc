"""``check_encoder``: everything that would make a run fail later, found before any job.

Runs every capability the encoder has on a fixed random batch of 4 shaped as its card's
preprocess says, in eval mode: what it declares (``num_features``, ``region_grid``, a
``Preprocess``), output shape and dtype, NaN/inf, two identical calls equal (bitwise), the
first 2 of a batch of 4 equal to a batch of 2 (within ``BATCH_TOLERANCE``), hashable
weights, and image, region and text features in one space where the tasks need it.
"""

from __future__ import annotations

from typing import Any

from harness.encoders import MethodCard, Preprocess, capabilities
from harness.encoders.errors import SubmissionError
from harness.encoders.provenance import check_pretraining_data
from harness.encoders.weights import one_line

BATCH_TOLERANCE = 1e-4  # float32 kernels may pick different algorithms per batch size


def _check_tensor(name: str, out: Any, shape: tuple[int, ...]) -> list[str]:
    import torch

    if not isinstance(out, torch.Tensor):
        return [f"{name} must return a torch.Tensor; got {type(out).__name__}"]
    if tuple(out.shape) != shape:
        return [f"{name} must return {shape}; got {tuple(out.shape)}"]
    if not out.is_floating_point():
        return [f"{name} returned {out.dtype}; expected a floating-point tensor"]
    if not torch.isfinite(out).all():
        return [f"{name} returned NaN or inf"]
    return []


def _input(x: Any, p: Preprocess) -> str:
    return f"on a {tuple(x.shape)} batch: card.preprocess says {p.image_size} px, {p.channels} channel(s)"


def _consistent(name: str, call: Any, x: Any, shape_of: Any, p: Preprocess) -> list[str]:
    """Shape/dtype/finiteness, then two identical calls equal, then batch-size independence."""
    import torch

    try:
        with torch.no_grad():
            a, b, half = call(x), call(x), call(x[:2])
    except Exception as exc:  # noqa: BLE001 - the user's code: report whatever it raised
        # the input is named: the usual cause is a size or channel count the model refuses
        return [f"{name} raised {one_line(exc)} ({_input(x, p)})"]
    problems = _check_tensor(name, a, shape_of(len(x)))
    if problems:
        return problems
    if not torch.equal(a, b):
        return [f"{name} is not deterministic in eval mode (two identical calls differ)"]
    if not torch.allclose(half, a[:2], atol=BATCH_TOLERANCE, rtol=BATCH_TOLERANCE):
        return [f"{name} depends on the other images of the batch (batch of 2 != first 2 of 4)"]
    return []


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _declared(encoder: Any, caps: set[str]) -> list[str]:
    """What the encoder declares (card, sizes, grid, pretraining data) before any of it is called."""
    card = encoder.card
    if not isinstance(card.preprocess, Preprocess):
        return [f"card.preprocess must be a harness.encoders.Preprocess; got {type(card.preprocess).__name__}"]
    problems = []
    if not _positive_int(encoder.num_features):
        problems.append(f"num_features must be a positive int; got {encoder.num_features!r}")
    if "image_regions" in caps:
        grid = encoder.region_grid
        if not (isinstance(grid, tuple | list) and len(grid) == 2 and all(_positive_int(g) for g in grid)):
            problems.append(f"region_grid must be (h, w), two positive ints; got {grid!r}")
    try:
        check_pretraining_data(tuple(card.pretraining_data), "card.pretraining_data")
    except SubmissionError as exc:
        problems.append(str(exc))
    except TypeError:
        problems.append(f"card.pretraining_data must be a tuple of 'dataset:split' strings; got "
                        f"{card.pretraining_data!r}")
    return problems


def _hashable(encoder: Any) -> list[str]:
    from harness.features import weights_sha256

    try:
        weights_sha256(encoder)
    except TypeError as exc:  # records and caches are keyed by this hash; without it nothing can be scored
        return [str(exc)]
    return []


def check_encoder(encoder: Any) -> list[str]:
    """Problems that stop scoring, one readable line each (empty when the encoder is usable).

    First what the encoder declares (a ``card`` with a ``Preprocess``, ``num_features`` and
    ``region_grid`` as positive ints, valid ``pretraining_data``, hashable weights), then every
    capability it has is run on a fixed random batch of 4 shaped as its card's preprocess
    says, in eval mode: output shape and dtype, NaN/inf, two identical calls equal (bitwise),
    and the first 2 of a batch of 4 equal to a batch of 2 (within 1e-4). A call that raises is
    reported with the input it was given (a size or channel count the model refuses).

    Image and text must share one space, exactly as the tasks that use both assume: the text
    features of an encoder with ``encode_text`` have ``num_features`` dimensions (retrieval
    compares them with the global image features), and an encoder with the
    ``localization`` capability (regions and text with ``joint_space = True``) has region
    features of the text's size (phrase grounding compares those).
    """
    import torch

    card = getattr(encoder, "card", None)
    if not isinstance(card, MethodCard):
        return ["the encoder has no `card` (harness.encoders.MethodCard: name, preprocess, pretraining_data)"]
    caps = capabilities(encoder)
    if "image" not in caps:
        return ["the encoder has no encode_image(images) and num_features: every task needs images"]
    problems = _declared(encoder, caps) + _hashable(encoder)
    if problems:
        return problems
    if hasattr(encoder, "eval"):
        encoder.eval()
    p = card.preprocess
    x = torch.randn(4, p.channels, p.image_size, p.image_size, generator=torch.Generator().manual_seed(0))
    problems = _consistent("encode_image", encoder.encode_image, x, lambda b: (b, int(encoder.num_features)), p)
    region_dim = None
    if "image_regions" in caps and not problems:
        h, w = encoder.region_grid
        with torch.no_grad():
            try:
                out = encoder.encode_image_regions(x[:1])
                region_dim = int(out.shape[-1])
            except Exception as exc:  # noqa: BLE001
                return [f"encode_image_regions raised {one_line(exc)} ({_input(x[:1], p)})"]
        problems += _consistent("encode_image_regions", encoder.encode_image_regions, x,
                                lambda b: (b, h * w, region_dim), p)
    if "regeneration" in caps and not problems:
        mask = torch.zeros(4, 1, p.image_size, p.image_size, dtype=torch.bool)
        mask[..., : p.image_size // 2, :] = True
        problems += _consistent("regenerate", lambda im: encoder.regenerate(im, mask[: len(im)]), x,
                                lambda b: (b, p.channels, p.image_size, p.image_size), p)
    if "text" in caps:
        problems += _check_text(encoder, caps, region_dim)
    return problems


def _check_text(encoder: Any, caps: set[str], region_dim: int | None) -> list[str]:
    import torch

    texts = ["no acute cardiopulmonary process", "small left effusion", "clear lungs", "cardiomegaly"]
    try:
        with torch.no_grad():
            t, t2 = encoder.encode_text(texts), encoder.encode_text(texts)
    except Exception as exc:  # noqa: BLE001
        return [f"encode_text raised {one_line(exc)}"]
    if (not isinstance(t, torch.Tensor) or t.ndim != 2 or t.shape[0] != 4 or not t.is_floating_point()
            or not torch.isfinite(t).all()):
        return ["encode_text must return a finite (B, D) float tensor"]
    if not torch.equal(t, t2):
        return ["encode_text is not deterministic in eval mode (two identical calls differ)"]
    dim = int(t.shape[1])
    if dim != int(encoder.num_features):  # retrieval's cosine of image and text features needs one size
        return [f"encode_text returns {dim} features but encode_image {encoder.num_features} (num_features): "
                "image and text must share one space for retrieval and zero-shot tasks"]
    if "localization" in caps and region_dim is not None and region_dim != dim:
        return [f"joint_space is claimed but encode_image_regions returns {region_dim} features and encode_text "
                f"{dim}: phrase grounding compares regions with text in one space"]
    return []
