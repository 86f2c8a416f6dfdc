"""``hf:DIR``: any local Hugging Face ``transformers`` model directory, offline.

The directory is what ``save_pretrained`` writes (and what the hub's repositories hold):
``config.json``, the weights (``model.safetensors`` or ``pytorch_model.bin``, possibly
sharded), the image processor's config (``preprocessor_config.json``, or
``processor_config.json`` with an ``image_processor`` part) and, for text towers, the
tokenizer. It is loaded with ``local_files_only=True`` and ``trust_remote_code=False``
(a config asking for custom code is refused), ``HF_HUB_OFFLINE=1``; every weights file is
first read by its content (an LFS pointer or an HTML page is named as such).

What the model is decides what the encoder can do:

- **image towers** (ViT, DINOv2 = RAD-DINO's format, DINOv2 with registers, Swin,
  ConvNeXt, any ``AutoModel`` with ``pixel_values``): global = ``pooler_output`` where the
  model defines one (DINOv2: the normed CLS token; Swin / ConvNeXt: the normed average;
  ViT's dense + tanh pooler only when its weights are in the file, else the CLS token);
  regions = the patch tokens (prefix and register tokens removed) on their grid, or the
  final feature map;
- **dual encoders** (``CLIPModel``, ``SiglipModel``, anything with ``get_image_features``
  and ``get_text_features``): image and text in one space (``joint_space``: retrieval,
  zero-shot and localization become available); regions are the patch tokens taken into
  that space (CLIP: ``post_layernorm`` + ``visual_projection``; SigLIP: the attention-pooling
  head's value path for each token, i.e. the pooled output had all attention gone to it);
  text is tokenized with the directory's tokenizer (SigLIP pads to ``max_length``, as it
  was trained);
- **text-only encoders** (BERT-style): not an image encoder; refused with how to use one:
  as the text side of the image+indication task (``submit IMAGE_SPEC --text-model DIR``).

Weights the file lacks are never left random: a model that would be partly initialised
is refused with the missing and unexpected keys (a ViT pooler missing is the one exception:
the CLS token is used instead). Preprocessing: the image processor's config, mapped
exactly (``preprocessing.from_hf_processor``), then the user's overrides; without a
processor config, ``--image-size``, ``--mean`` and ``--std`` are required.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from harness.encoders.errors import SubmissionError
from harness.encoders.public.encoder import PublicEncoder, card_for, finish, map_to_regions, size_source
from harness.encoders.public.options import RouteOptions
from harness.encoders.public.preprocessing import apply_overrides, describe, from_hf_processor

PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
# a tokenizer's vocabulary as save_pretrained writes it (fast, BPE, WordPiece, SentencePiece); without one,
# transformers builds an empty tokenizer instead of failing
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "vocab.txt", "spiece.model", "sentencepiece.bpe.model",
                   "tokenizer.model")
WEIGHT_PATTERNS = ("model*.safetensors", "pytorch_model*.bin")
TEXT_ONLY_HINT = ("use it as the text side of the image+indication task: `harness submit IMAGE_SPEC --text-model "
                  "{dir} --tasks mimic-mm-cls`")


def _pooled(out: Any) -> Any:
    """``get_*_features`` return a tensor (transformers 4) or an output with ``pooler_output`` (5)."""
    return out if hasattr(out, "ndim") else out.pooler_output


class HFImage(PublicEncoder):
    """An image tower's global feature (pooler or CLS token; see the module docstring)."""

    use_pooler = True

    def encode_image(self, images: Any) -> Any:
        out = self.net(pixel_values=images)
        pooled = getattr(out, "pooler_output", None) if self.use_pooler else None
        if pooled is not None:
            return pooled.flatten(1)
        hidden = out.last_hidden_state
        return hidden[:, 0] if hidden.ndim == 3 else hidden.mean((2, 3))


class HFImageRegions(HFImage):
    """An image tower with its patch tokens (or final feature map) as region features."""

    region_grid = (1, 1)
    prefix_tokens = 0

    def encode_image_regions(self, images: Any) -> Any:
        hidden = self.net(pixel_values=images).last_hidden_state
        return map_to_regions(hidden) if hidden.ndim == 4 else hidden[:, self.prefix_tokens:]


class HFDualText(PublicEncoder):
    """A dual encoder's image and text features, in one space."""

    joint_space = True
    kind = "clip"  # clip | siglip: how text is padded and patch tokens reach the joint space
    padding = "longest"
    max_length = 77

    def __init__(self, card: Any, net: Any, tokenizer: Any) -> None:
        super().__init__(card, net)
        self.tokenizer = tokenizer

    def encode_image(self, images: Any) -> Any:
        return _pooled(self.net.get_image_features(pixel_values=images))

    def encode_text(self, texts: list[str]) -> Any:
        device = next(self.net.parameters()).device
        tokens = self.tokenizer(list(texts), padding=self.padding, truncation=True, max_length=self.max_length,
                                return_tensors="pt")
        accepted = ("input_ids", "attention_mask") if self.kind == "clip" else ("input_ids",)
        return _pooled(self.net.get_text_features(**{k: v.to(device) for k, v in tokens.items() if k in accepted}))


class HFDual(HFDualText):
    """A dual encoder with its patch tokens taken into the joint space as region features."""

    region_grid = (1, 1)
    prefix_tokens = 1

    def encode_image_regions(self, images: Any) -> Any:
        import torch.nn.functional as F

        vision = self.net.vision_model
        tokens = vision(pixel_values=images).last_hidden_state[:, self.prefix_tokens:]
        if self.kind == "clip":
            return self.net.visual_projection(vision.post_layernorm(tokens))
        head = vision.head  # SigLIP's attention pooling, as if each token drew all the attention
        dim = tokens.shape[-1]
        value = F.linear(tokens, head.attention.in_proj_weight[2 * dim:], head.attention.in_proj_bias[2 * dim:])
        value = head.attention.out_proj(value)
        return value + head.mlp(head.layernorm(value))


def _json(path: Path, where: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise SubmissionError(f"{path}: not readable JSON ({type(exc).__name__}: {exc}); {where}") from None
    if not isinstance(data, dict):
        raise SubmissionError(f"{path}: expected a JSON object; {where}")
    return data


def processor_config(directory: Path) -> tuple[dict[str, Any] | None, Path | None]:
    """The image processor's config in ``directory`` and its file, or (None, None)."""
    for name in PROCESSOR_FILES:
        path = directory / name
        if path.is_file():
            data = _json(path, "the image processor's config")
            if name == "processor_config.json":
                data = data.get("image_processor") if isinstance(data.get("image_processor"), dict) else None
                if data is None:
                    continue
            return data, path
    return None, None


def _check_files(directory: Path) -> None:
    """config.json present, no custom code, every weights file really weights (read by content)."""
    from harness.encoders.weights import _check_format

    if not directory.is_dir():
        raise SubmissionError(f"hf:{directory}: no such directory")
    config = directory / "config.json"
    if not config.is_file():
        raise SubmissionError(f"hf:{directory}: no config.json there: not a transformers model directory (what "
                              "save_pretrained writes)")
    cfg = _json(config, "the model's config")
    if cfg.get("auto_map"):
        raise SubmissionError(f"{config}: asks for custom model code (auto_map {sorted(cfg['auto_map'])}); refused: "
                              "the harness runs no code from model directories")
    files = sorted({f for pattern in WEIGHT_PATTERNS for f in directory.glob(pattern)})
    if not files:
        raise SubmissionError(f"hf:{directory}: no weights file (model.safetensors or pytorch_model.bin); the "
                              "harness never downloads weights")
    for f in files:
        _check_format(f)


def _load(directory: Path) -> tuple[Any, dict[str, list[str]]]:
    """The ``AutoModel`` of ``directory`` and its loading info (missing / unexpected keys)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import transformers
    from transformers import AutoModel

    from harness.encoders.weights import one_line

    transformers.utils.logging.disable_progress_bar()
    verbosity = transformers.utils.logging.get_verbosity()
    transformers.utils.logging.set_verbosity_error()  # its warnings are said here, in our one line, or not at all
    try:
        model, info = AutoModel.from_pretrained(directory, local_files_only=True, trust_remote_code=False,
                                                output_loading_info=True)
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as exc:
        raise SubmissionError(f"hf:{directory}: transformers cannot load it: {one_line(exc)[:300]}") from None
    finally:
        transformers.utils.logging.set_verbosity(verbosity)
    return model.eval(), {k: list(v) for k, v in info.items() if isinstance(v, list | set | tuple)}


def _refuse_partial(directory: Path, model: Any, info: dict[str, list[str]]) -> bool:
    """Refuse weights that would leave the model partly random; returns whether the pooler is usable."""
    missing = list(info.get("missing_keys") or [])
    pooler_missing = [k for k in missing if k.split(".")[0] == "pooler" or ".pooler." in k]
    rest = [k for k in missing if k not in pooler_missing]
    mismatched = list(info.get("mismatched_keys") or [])
    if rest or mismatched:
        unexpected = list(info.get("unexpected_keys") or [])
        shapes = [str(m) for m in mismatched[:2]]
        raise SubmissionError(f"hf:{directory}: the weights do not fit {type(model).__name__}: {len(rest)} key(s) "
                              f"missing {rest[:4]}, {len(mismatched)} of another shape {shapes}, {len(unexpected)} "
                              f"unexpected {unexpected[:4]}; the harness never scores random weights in their place")
    return not pooler_missing


def _is_text_only(model: Any, config: Any) -> bool:
    has_vision = (hasattr(model, "get_image_features") or getattr(config, "vision_config", None) is not None
                  or hasattr(config, "num_channels") or hasattr(config, "image_size"))
    return not has_vision


def _grid(config: Any, size: int, tokens: int) -> tuple[tuple[int, int], int] | None:
    """(grid, prefix tokens) of ``tokens`` patch tokens at ``size`` px, or None when they form no grid."""
    patch = getattr(config, "patch_size", None)
    if isinstance(patch, list | tuple):
        patch = patch[0]
    side = int(round(tokens ** 0.5))
    if getattr(config, "model_type", "") not in ("swin", "swinv2") and isinstance(patch, int) and patch > 0:
        g = size // patch
        if 0 <= tokens - g * g <= 16:
            return (g, g), tokens - g * g
    if side * side == tokens:
        return (side, side), 0
    return None


def _vision_tower(model: Any, card: Any, pooler: bool) -> PublicEncoder:
    import torch

    p = card.preprocess
    x = torch.zeros(1, p.channels, p.image_size, p.image_size)
    try:
        with torch.no_grad():
            hidden = model(pixel_values=x).last_hidden_state
    except Exception:  # noqa: BLE001 - finish() reports the input the model refuses
        return HFImage(card, model)
    if hidden.ndim == 4:
        enc = HFImageRegions(card, model)
        enc.region_grid = (int(hidden.shape[2]), int(hidden.shape[3]))
    else:
        found = _grid(model.config, p.image_size, int(hidden.shape[1]))
        if found is None:
            enc = HFImage(card, model)
        else:
            enc = HFImageRegions(card, model)
            enc.region_grid, enc.prefix_tokens = found
    enc.use_pooler = pooler
    return enc


def _dual(directory: Path, model: Any, card: Any) -> HFDualText:
    import torch

    tokenizer = local_tokenizer(directory, f"hf:{directory}: a dual encoder")
    vocab = int(getattr(getattr(model.config, "text_config", None), "vocab_size", 0) or 0)
    if vocab and len(tokenizer) > vocab:
        raise SubmissionError(f"hf:{directory}: its tokenizer has {len(tokenizer)} tokens, the text model's "
                              f"embeddings {vocab}: not the tokenizer of this model")
    model_type = str(getattr(model.config, "model_type", ""))
    kind = "siglip" if model_type.startswith("siglip") else "clip"
    vision = getattr(model, "vision_model", None)
    regions = vision is not None and (hasattr(vision, "post_layernorm") and hasattr(model, "visual_projection")
                                      if kind == "clip" else hasattr(vision, "head"))
    found = None
    if regions:
        p = card.preprocess
        try:
            with torch.no_grad():
                tokens = vision(pixel_values=torch.zeros(1, p.channels, p.image_size, p.image_size)).last_hidden_state
            found = _grid(model.config.vision_config, p.image_size, int(tokens.shape[1]) - (kind == "clip"))
        except Exception:  # noqa: BLE001 - finish() reports the input the model refuses
            found = None
    enc = HFDual(card, model, tokenizer) if found else HFDualText(card, model, tokenizer)
    if found:
        (enc.region_grid, extra) = found
        enc.prefix_tokens = int(kind == "clip") + extra
    enc.kind = kind
    text_cfg = getattr(model.config, "text_config", None)
    enc.max_length = int(getattr(text_cfg, "max_position_embeddings", 77) or 77)
    enc.padding = "max_length" if kind == "siglip" else "longest"
    return enc


def local_tokenizer(directory: Path, what: str) -> Any:
    """The tokenizer saved in ``directory``, offline; refused when its vocabulary files are not there.

    Raises:
        SubmissionError: no vocabulary file (``TOKENIZER_FILES``), or transformers cannot load it.
    """
    from transformers import AutoTokenizer

    from harness.encoders.weights import one_line

    hint = "its text tower cannot be scored; save the tokenizer into the directory (tokenizer.save_pretrained)"
    if not any((directory / name).is_file() for name in TOKENIZER_FILES):
        raise SubmissionError(f"{what} without a usable tokenizer there (none of {', '.join(TOKENIZER_FILES)}): "
                              f"{hint}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SubmissionError(f"{what} without a usable tokenizer there ({one_line(exc)[:160]}): {hint}") from None
    if len(tokenizer) < 8:
        raise SubmissionError(f"{what} without a usable tokenizer there (it has {len(tokenizer)} tokens): {hint}")
    return tokenizer


def build(directory: str, options: RouteOptions) -> PublicEncoder:
    """The encoder of ``hf:DIR`` (see the module docstring).

    Raises:
        SubmissionError: not a model directory, custom code, weights missing or not fitting, a
            text-only model, a processor config the harness cannot reproduce, no tokenizer.
    """
    path = Path(directory).expanduser()
    what = f"hf:{directory}"
    if options.weights:
        raise SubmissionError(f"{what}: the directory's own weights are loaded; --weights is for timm:, "
                              "torchvision:, torchxrayvision: and open_clip:ARCH")
    _check_files(path)
    model, info = _load(path)
    config = model.config
    if _is_text_only(model, config):
        raise SubmissionError(f"{what} is a text-only model ({type(model).__name__}): it has no image side to "
                              f"score; {TEXT_ONLY_HINT.format(dir=directory)}")
    pooler = _refuse_partial(path, model, info)
    vision_cfg = getattr(config, "vision_config", None) or config
    channels = int(getattr(vision_cfg, "num_channels", 3) or 3)
    model_size = getattr(vision_cfg, "image_size", None)
    model_size = int(model_size[0] if isinstance(model_size, list | tuple) else model_size) if model_size else None
    proc, proc_path = processor_config(path)
    if proc is None:
        if not {"image_size", "mean", "std"} <= set(options.preprocess):
            raise SubmissionError(f"{what}: no image processor config ({' or '.join(PROCESSOR_FILES)}): its "
                                  "preprocessing is unknown; pass --image-size, --mean and --std (the harness never "
                                  "assumes ImageNet's)")
        from harness.encoders.preprocess import Preprocess

        base, source = Preprocess(image_size=int(options.preprocess["image_size"]), channels=channels,
                                  mean=(0.0,) * channels, std=(1.0,) * channels), "the options given"
    else:
        base = from_hf_processor(proc, channels, model_size, str(proc_path), options.preprocess)
        source = proc_path.name
    preprocess = apply_overrides(base, options.preprocess, what)
    notes = [f"model {type(model).__name__}", f"preprocessing: {source} ({describe(base)})"
             + (f", overridden by {sorted(options.preprocess)}" if options.preprocess else "")]
    if not pooler:
        notes.append("no pooler weights in the file: the CLS token is the global feature")
    card = card_for("hf", path.name, preprocess, options.pretraining_data, None, notes)
    dual = hasattr(model, "get_image_features") and hasattr(model, "get_text_features")
    enc = _dual(path, model, card) if dual else _vision_tower(model, card, pooler)
    return finish(enc, what, size_source(options.preprocess, source))
