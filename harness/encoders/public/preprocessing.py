"""The preprocessing of a public encoder: the architecture's own configuration, then the user's overrides.

Every route starts from what its library declares for the architecture, never from a
silent ImageNet default:

- timm: the model's ``pretrained_cfg`` (``from_timm``): ``input_size``, ``crop_pct`` (resize
  to ``floor(size / crop_pct)``, then centre crop, as timm's eval transform does),
  ``interpolation``, ``mean`` / ``std``;
- torchvision: the eval transform of the architecture's first weights entry
  (``from_torchvision``; e.g. ResNet-50's ``IMAGENET1K_V1``: resize 256, crop 224, bilinear);
- Hugging Face: the directory's image processor (``from_hf_processor``: ``preprocessor_config.json``,
  or the ``image_processor`` part of ``processor_config.json``), mapped field by field;
- open_clip: the config's ``preprocess_cfg`` over open_clip's defaults (``from_open_clip``);
- torchxrayvision: 1 channel, pixels in [-1024, 1024], its resolution (in its route).

``apply_overrides`` then applies ``--image-size``, ``--crop-size``, ``--channels``,
``--mean``, ``--std``, ``--pixel-range`` and ``--resize-mode``. ``--image-size N`` is the side
images are resized to; ``--crop-size C`` centre-crops C of it (the tensor the model gets is
C px); ``--image-size`` alone means no crop. Each result is a ``Preprocess`` plus a one-line
``source`` saying where it came from, which the card (and so every record) carries.

The image store (``harness.data.images``) keeps every film resized whole to a square, so
processors that resize the shortest edge and crop see a square: their resize and crop are
applied to it exactly, but an aspect ratio the store has already removed is not restored.
"""

from __future__ import annotations

import math
from typing import Any

from harness.encoders.errors import SubmissionError
from harness.encoders.preprocess import RESIZE_MODES, Preprocess

# PIL's resampling codes, as image processors store them (``resample``)
PIL_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}
PIL_UNSUPPORTED = {1: "lanczos", 4: "box", 5: "hamming"}


def _per_channel(values: Any, channels: int, what: str, where: str) -> tuple[float, ...]:
    vals = [float(v) for v in (values if isinstance(values, list | tuple) else [values])]
    if len(vals) == channels:
        return tuple(vals)
    if len(vals) == 1:
        return tuple(vals * channels)
    if channels == 1 and len(set(vals)) == 1:  # (0.5, 0.5, 0.5) for a grey model: one value
        return (vals[0],)
    raise SubmissionError(f"{where}: {what} {vals} has {len(vals)} values for a {channels}-channel model; pass "
                          f"--{what} with {channels} value(s)")


def make(where: str, image_size: int, channels: int, mean: Any, std: Any, resize_to: int | None = None,
         resize_mode: str = "bilinear", pixel_range: tuple[float, float] = (0.0, 1.0)) -> Preprocess:
    """A ``Preprocess``, its values checked, or a SubmissionError naming ``where`` and the value."""
    mean, std = _per_channel(mean, channels, "mean", where), _per_channel(std, channels, "std", where)
    if resize_to == image_size:
        resize_to = None
    try:
        return Preprocess(image_size=int(image_size), channels=int(channels), mean=mean, std=std,
                          resize_to=None if resize_to is None else int(resize_to), resize_mode=resize_mode,
                          pixel_range=(float(pixel_range[0]), float(pixel_range[1])))
    except ValueError as exc:
        raise SubmissionError(f"{where}: {exc}") from None


def apply_overrides(base: Preprocess, overrides: dict[str, Any], where: str = "submit") -> Preprocess:
    """``base`` with the user's ``--image-size`` ... ``--resize-mode`` (see the module docstring).

    Raises:
        SubmissionError: a value out of range (a crop larger than the image, a std of 0, ...)
            or of the wrong length for the channels.
    """
    if not overrides:
        return base
    o = dict(overrides)
    size = o.get("image_size") or base.stored_size
    crop = o.get("crop_size")
    if crop is None and "image_size" not in o and base.resize_to is not None:
        crop = base.image_size  # only other values changed: the architecture's own crop stays
    if crop is not None and crop > size:
        raise SubmissionError(f"{where}: --crop-size {crop} is larger than the image size {size} it is cut from "
                              "(--image-size)")
    channels = int(o.get("channels", base.channels))
    mean = o.get("mean", base.mean if channels == base.channels or len(set(base.mean)) == 1 else None)
    std = o.get("std", base.std if channels == base.channels or len(set(base.std)) == 1 else None)
    if mean is None or std is None:
        raise SubmissionError(f"{where}: --channels {channels}: the architecture's mean {list(base.mean)} and std "
                              f"{list(base.std)} are per colour channel; pass --mean and --std for "
                              f"{channels} channel(s)")
    return make(where, crop if crop is not None else size, channels, mean, std,
                resize_to=size if crop is not None else None, resize_mode=o.get("resize_mode", base.resize_mode),
                pixel_range=tuple(o.get("pixel_range", base.pixel_range)))


def describe(p: Preprocess) -> str:
    """``resize 256 bicubic, crop 224, 3 ch, pixels [0, 1], mean (...), std (...)``: for notes and messages."""
    resize = f"resize {p.stored_size} {p.resize_mode}" + (f", crop {p.image_size}" if p.resize_to else "")
    return (f"{resize}, {p.channels} ch, pixels [{p.pixel_range[0]:g}, {p.pixel_range[1]:g}], "
            f"mean {tuple(round(v, 5) for v in p.mean)}, std {tuple(round(v, 5) for v in p.std)}")


# ------------------------------------------------------------------------------------------ timm, torchvision


def from_timm(cfg: dict[str, Any], in_chans: int, where: str) -> Preprocess:
    """timm's ``pretrained_cfg`` as timm's eval transform applies it (see the module docstring)."""
    _, h, w = cfg.get("input_size", (3, 224, 224))
    if h != w:
        raise SubmissionError(f"{where}: timm's input_size {h}x{w} is not square; the harness feeds square images: "
                              "pass --image-size")
    crop_pct = float(cfg.get("crop_pct") or 1.0)
    resize_to = math.floor(h / crop_pct) if crop_pct < 1 and cfg.get("crop_mode", "center") == "center" else None
    mode = str(cfg.get("interpolation") or "bilinear")
    return make(where, h, in_chans, cfg.get("mean", (0.485, 0.456, 0.406)), cfg.get("std", (0.229, 0.224, 0.225)),
                resize_to=resize_to, resize_mode=mode if mode in RESIZE_MODES else "bicubic")


def from_torchvision(transforms: Any, where: str) -> Preprocess:
    """torchvision's ``ImageClassification`` eval transform: resize, centre crop, mean / std."""
    crop = int(transforms.crop_size[0])
    resize = int(transforms.resize_size[0]) if transforms.resize_size else crop
    mode = str(getattr(transforms.interpolation, "value", transforms.interpolation)).lower()
    return make(where, crop, 3, transforms.mean, transforms.std, resize_to=resize if resize > crop else None,
                resize_mode=mode if mode in RESIZE_MODES else "bilinear")


# ------------------------------------------------------------------------------------------ Hugging Face


def _side(value: Any, field_name: str, where: str) -> int | None:
    """The side of a square ``size`` / ``crop_size`` (int or dict), or None when it has none."""
    if value is None:
        return None
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, list | tuple) and len(value) == 2:
        value = {"height": value[0], "width": value[1]}
    if not isinstance(value, dict):
        raise SubmissionError(f"{where}: {field_name} {value!r} is not a size")
    if "height" in value or "width" in value:
        h, w = value.get("height"), value.get("width")
        if h != w:
            raise SubmissionError(f"{where}: {field_name} {h}x{w} is not square; the harness feeds square images "
                                  "(pass --image-size / --crop-size)")
        return int(h)
    if "shortest_edge" in value:  # on a square image the shortest edge is the side
        return int(value["shortest_edge"])
    if "longest_edge" in value:
        return int(value["longest_edge"])
    raise SubmissionError(f"{where}: {field_name} {value!r}: none of height/width, shortest_edge, longest_edge")


def _resample(value: Any, where: str) -> str:
    if value is None:
        return "bilinear"
    if isinstance(value, str):
        name = value.lower().rsplit(".", 1)[-1]
        if name in RESIZE_MODES:
            return name
        raise SubmissionError(f"{where}: resample {value!r} is not supported (bilinear, bicubic, nearest); pass "
                              "--resize-mode")
    code = int(value)
    if code in PIL_RESAMPLE:
        return PIL_RESAMPLE[code]
    name = PIL_UNSUPPORTED.get(code, f"code {code}")
    raise SubmissionError(f"{where}: resample {code} ({name}) is not supported (0 nearest, 2 bilinear, 3 bicubic); "
                          "pass --resize-mode bilinear|bicubic|nearest to choose one")


def from_hf_processor(cfg: dict[str, Any], channels: int, model_size: int | None, where: str,
                      overrides: dict[str, Any] | None = None) -> Preprocess:
    """A Hugging Face image processor's config as a ``Preprocess``, field by field.

    ``do_resize`` + ``size`` (height/width, shortest_edge, longest_edge) + ``resample``;
    ``do_center_crop`` + ``crop_size``; ConvNeXt's ``crop_pct`` (below 384 px: resize to
    ``shortest_edge / crop_pct``, crop ``shortest_edge``); ``do_rescale`` + ``rescale_factor``
    (the pixel range); ``do_normalize`` + ``image_mean`` / ``image_std``.

    A field the user overrides (``overrides``: ``--resize-mode``, ``--image-size`` + ``--crop-size``,
    ``--mean`` + ``--std``) is not read, so an unsupported value there can be replaced.

    Raises:
        SubmissionError: a field the harness cannot reproduce (non-square sizes, a resampling
            filter other than nearest / bilinear / bicubic, padding), naming the field.
    """
    o = dict(overrides or {})
    sized = "image_size" in o
    if cfg.get("do_pad") and not sized:
        raise SubmissionError(f"{where}: do_pad is true: padding is not reproduced by the harness; pass "
                              "--image-size / --crop-size to choose the input")
    resize_mode = o.get("resize_mode") or _resample(cfg.get("resample"), where)
    if sized:
        return make(where, int(o["image_size"]), channels, *_stats(cfg, channels, o, where), resize_mode=resize_mode,
                    pixel_range=_pixel_range(cfg))
    size = _side(cfg.get("size"), "size", where) if cfg.get("do_resize", True) else None
    crop = _side(cfg.get("crop_size"), "crop_size", where) if cfg.get("do_center_crop", False) else None
    if cfg.get("crop_pct") is not None and size is not None and crop is None:
        if size < 384:  # ConvNextImageProcessor: resize to size / crop_pct, crop size; from 384 px: warp to size
            crop, size = size, int(size / float(cfg["crop_pct"]))
    if size is None:
        size = crop or model_size
    if size is None:
        raise SubmissionError(f"{where}: neither size nor crop_size is set, and the model config has no image_size; "
                              "pass --image-size")
    if crop is not None and crop > size:
        raise SubmissionError(f"{where}: crop_size {crop} is larger than size {size}")
    mean, std = _stats(cfg, channels, o, where)
    return make(where, crop or size, channels, mean, std, resize_to=size if crop else None, resize_mode=resize_mode,
                pixel_range=_pixel_range(cfg))


def _pixel_range(cfg: dict[str, Any]) -> tuple[float, float]:
    """``do_rescale`` + ``rescale_factor``: what 255 becomes (1/255 -> [0, 1]; no rescale -> [0, 255])."""
    scale = float(cfg.get("rescale_factor", 1 / 255)) if cfg.get("do_rescale", True) else 1.0
    return 0.0, 255.0 * scale


def _stats(cfg: dict[str, Any], channels: int, o: dict[str, Any], where: str) -> tuple[Any, Any]:
    """``do_normalize`` + ``image_mean`` / ``image_std`` (or the user's ``--mean`` / ``--std``)."""
    if "mean" in o and "std" in o:
        return o["mean"], o["std"]
    if not cfg.get("do_normalize", True):
        return 0.0, 1.0
    mean, std = cfg.get("image_mean"), cfg.get("image_std")
    if mean is None or std is None:
        raise SubmissionError(f"{where}: do_normalize is true but image_mean / image_std are not set; pass --mean "
                              "and --std")
    return mean, std


# ------------------------------------------------------------------------------------------ open_clip


def from_open_clip(cfg: dict[str, Any], image_size: int, where: str) -> Preprocess:
    """open_clip's ``preprocess_cfg`` (mean, std, interpolation, resize_mode) for a ``image_size`` model."""
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    mode = str(cfg.get("interpolation") or "bicubic")
    if mode not in RESIZE_MODES:
        raise SubmissionError(f"{where}: interpolation {mode!r} is not supported (bilinear, bicubic, nearest); pass "
                              "--resize-mode")
    if str(cfg.get("resize_mode") or "shortest") not in ("shortest", "squash", "longest"):
        raise SubmissionError(f"{where}: resize_mode {cfg.get('resize_mode')!r} is not supported")
    size = cfg.get("size", image_size)
    size = int(size[0] if isinstance(size, list | tuple) else size)
    # on the store's square images, 'shortest' (resize + centre crop), 'squash' and 'longest' are one resize
    return make(where, size, 3, cfg.get("mean", OPENAI_DATASET_MEAN), cfg.get("std", OPENAI_DATASET_STD),
                resize_mode=mode)
