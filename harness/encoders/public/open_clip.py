"""``open_clip:DIR`` and ``open_clip:ARCH --weights FILE``: open_clip dual encoders from local files.

- ``open_clip:DIR``: a model saved the way BiomedCLIP's repository holds it:
  ``open_clip_config.json`` (``model_cfg`` and ``preprocess_cfg``) and the weights
  (``open_clip_model.safetensors``, ``open_clip_pytorch_model.safetensors`` or
  ``open_clip_pytorch_model.bin``; ``--weights FILE`` overrides them);
- ``open_clip:ARCH --weights FILE``: one of open_clip's built-in architectures
  (``open_clip.list_models()``) with a state dict in open_clip's (= OpenAI CLIP's) key
  names: a CheXzero checkpoint is ``open_clip:ViT-B-32-quickgelu --weights FILE`` (OpenAI's
  ViT-B/32 uses QuickGELU; plain ``ViT-B-32`` would silently compute another function).

The model class is built from its config with nothing pretrained (``timm_model_pretrained``
and ``hf_model_pretrained`` off) and the weights are loaded with the harness's reader
(safetensors or weights-only torch), after open_clip's own state-dict fixes (old text-tower
layout, ``logit_scale`` shape, ``position_ids``). A Hugging Face text tower
(``text_cfg.hf_model_name``, e.g. BiomedCLIP's PubMedBERT) must be local: a directory inside
DIR named like the model (its last path part, e.g.
``DIR/BiomedNLP-BiomedBERT-base-uncased-abstract/`` with ``config.json`` and the tokenizer
files), or one named ``text`` / ``tokenizer``. open_clip's own text towers use its bundled
BPE tokenizer. Nothing is downloaded.

Image features: ``encode_image``; regions: the patch tokens taken into the joint space
(open_clip ViT: ``ln_post`` + ``proj``; a timm trunk: its normed tokens through the head);
text: ``encode_text`` on the tokenizer's ids. Preprocessing: the config's ``preprocess_cfg``
over open_clip's defaults (OpenAI's mean / std, bicubic), then the user's overrides.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

from harness.encoders.checkpoints import fit_state, read_weights
from harness.encoders.errors import SubmissionError
from harness.encoders.public.encoder import PublicEncoder, card_for, finish, size_source
from harness.encoders.public.options import RouteOptions
from harness.encoders.public.preprocessing import apply_overrides, describe, from_open_clip

CONFIG_FILE = "open_clip_config.json"
WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors", "open_clip_pytorch_model.bin",
                "open_clip_pytorch_model.pth")
TEXT_DIRS = ("text", "tokenizer")


class OpenClipText(PublicEncoder):
    """open_clip's image and text features, in one space."""

    joint_space = True

    def __init__(self, card: Any, net: Any, tokenizer: Any) -> None:
        super().__init__(card, net)
        self.tokenizer = tokenizer

    def encode_image(self, images: Any) -> Any:
        return self.net.encode_image(images)

    def encode_text(self, texts: list[str]) -> Any:
        device = next(self.net.parameters()).device
        return self.net.encode_text(self.tokenizer(list(texts)).to(device))


class OpenClip(OpenClipText):
    """With the visual tower's patch tokens in the joint space as region features."""

    region_grid = (1, 1)

    def encode_image_regions(self, images: Any) -> Any:
        visual = self.net.visual
        if hasattr(visual, "trunk"):  # a timm trunk (BiomedCLIP): normed tokens, then open_clip's head
            tokens = visual.trunk.forward_features(images)[:, int(getattr(visual.trunk, "num_prefix_tokens", 0)):]
            return visual.head(tokens)
        visual.output_tokens = True
        try:
            _, tokens = visual(images)
        finally:
            visual.output_tokens = False
        if getattr(visual, "final_ln_after_pool", False):
            tokens = visual.ln_post(tokens)
        return tokens @ visual.proj if visual.proj is not None else tokens


def _config(spec: str) -> tuple[dict[str, Any], dict[str, Any], Path | None, str]:
    """(model_cfg, preprocess_cfg, the directory or None, where the config came from) of ``spec``."""
    import open_clip

    path = Path(spec).expanduser()
    if path.is_dir():
        file = path / CONFIG_FILE
        if not file.is_file():
            raise SubmissionError(f"open_clip:{spec}: no {CONFIG_FILE} there (open_clip's local model layout: "
                                  f"{CONFIG_FILE} + {WEIGHT_FILES[2]})")
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise SubmissionError(f"{file}: not readable JSON ({type(exc).__name__}: {exc})") from None
        if not isinstance(data, dict) or not isinstance(data.get("model_cfg", data), dict):
            raise SubmissionError(f"{file}: expected a JSON object with model_cfg")
        model_cfg = data.get("model_cfg", data)
        for part in ("vision_cfg", "text_cfg", "embed_dim"):
            if part not in model_cfg:
                raise SubmissionError(f"{file}: model_cfg has no {part!r}")
        return copy.deepcopy(model_cfg), dict(data.get("preprocess_cfg") or {}), path, file.name
    if path.suffix or os.sep in spec:
        raise SubmissionError(f"open_clip:{spec}: no such directory (nor an open_clip architecture)")
    cfg = open_clip.get_model_config(spec)
    if cfg is None:
        from harness.registry import did_you_mean

        hint = did_you_mean(spec, open_clip.list_models()) or " (see open_clip.list_models())"
        raise SubmissionError(f"open_clip has no architecture {spec!r}{hint}")
    return copy.deepcopy(cfg), {}, None, f"open_clip's {spec} config"


def _local_text_dir(directory: Path | None, name: str, spec: str) -> Path:
    """The local copy of a Hugging Face text tower named ``name`` (see the module docstring)."""
    candidates = [] if directory is None else [directory / name.rstrip("/").split("/")[-1], directory / name,
                                                *(directory / d for d in TEXT_DIRS)]
    if Path(name).expanduser().is_dir():
        candidates.insert(0, Path(name).expanduser())
    from harness.encoders.public.hf import TOKENIZER_FILES

    for c in candidates:
        if (c / "config.json").is_file():
            if not any((c / name).is_file() for name in TOKENIZER_FILES):
                raise SubmissionError(f"open_clip:{spec}: the local text tower {c} has no tokenizer (none of "
                                      f"{', '.join(TOKENIZER_FILES)}); save it there with tokenizer.save_pretrained")
            return c
    where = f"{directory}/{name.rstrip('/').split('/')[-1]}" if directory else "a local directory"
    raise SubmissionError(f"open_clip:{spec}: its text tower is the Hugging Face model {name!r}, which must be local: "
                          f"put its config.json and tokenizer files in {where} (nothing is downloaded)")


def _weights_file(directory: Path | None, options: RouteOptions, spec: str) -> str:
    if options.weights:
        return options.weights
    if directory is not None:
        for name in WEIGHT_FILES:
            if (directory / name).is_file():
                return str(directory / name)
        raise SubmissionError(f"open_clip:{spec}: no weights file there ({', '.join(WEIGHT_FILES)}); pass --weights "
                              "FILE")
    raise SubmissionError(f"open_clip:{spec} is unavailable without local weights: pass --weights FILE (.safetensors "
                          "or a torch state dict). The harness never downloads weights and never scores a randomly "
                          "initialised model in their place")


def _model(model_cfg: dict[str, Any]) -> Any:
    from open_clip.model import CLIP, CustomTextCLIP

    cfg = copy.deepcopy(model_cfg)
    if "timm_model_name" in cfg.get("vision_cfg", {}):
        cfg["vision_cfg"]["timm_model_pretrained"] = False
    hf_text = "hf_model_name" in cfg.get("text_cfg", {})
    if hf_text:
        cfg["text_cfg"]["hf_model_pretrained"] = False
    if "multimodal_cfg" in cfg:
        raise SubmissionError("open_clip: CoCa models (multimodal_cfg) are not supported; their image and text "
                              "towers would need the captioning decoder's conventions")
    custom = cfg.pop("custom_text", False) or hf_text
    return (CustomTextCLIP if custom else CLIP)(**cfg)


def _tokenizer(model_cfg: dict[str, Any], text_dir: Path | None) -> Any:
    from open_clip.tokenizer import HFTokenizer, SimpleTokenizer

    text_cfg = model_cfg.get("text_cfg", {})
    context = int(text_cfg.get("context_length", 77))
    if text_dir is not None:
        return HFTokenizer(str(text_dir), context_length=context, **dict(text_cfg.get("tokenizer_kwargs") or {}))
    return SimpleTokenizer(context_length=context)


def _fixed(model: Any, state: dict[str, Any]) -> dict[str, Any]:
    """open_clip's own fixes of older state dicts (its ``load_checkpoint`` steps), before the exact fit."""
    import torch
    from open_clip.model import convert_to_custom_text_state_dict

    state = {k: v for k, v in state.items() if k not in ("input_resolution", "context_length", "vocab_size")}
    if "positional_embedding" in state and not hasattr(model, "positional_embedding"):
        state = convert_to_custom_text_state_dict(state)
    for key in ("logit_scale", "logit_bias"):
        target = getattr(model, key, None)
        if key in state and isinstance(target, torch.Tensor) and state[key].ndim != target.ndim:
            state[key] = state[key].reshape(target.shape)
    if "logit_bias" not in state and getattr(model, "logit_bias", None) is not None:
        state["logit_bias"] = torch.zeros_like(model.logit_bias)
    position_ids = "text.transformer.embeddings.position_ids"
    if position_ids in state and position_ids not in model.state_dict():
        del state[position_ids]
    return state


def _grid(model: Any, size: int) -> tuple[int, int] | None:
    import torch

    visual = model.visual
    try:
        with torch.no_grad():
            if hasattr(visual, "trunk"):
                trunk = visual.trunk
                n = trunk.forward_features(torch.zeros(1, 3, size, size)).shape[1] - int(trunk.num_prefix_tokens)
            elif hasattr(visual, "proj") and hasattr(visual, "output_tokens"):
                visual.output_tokens = True
                try:
                    n = visual(torch.zeros(1, 3, size, size))[1].shape[1]
                finally:
                    visual.output_tokens = False
            else:
                return None
    except Exception:  # noqa: BLE001 - finish() reports the input the model refuses
        return None
    side = int(round(n ** 0.5))
    return (side, side) if side * side == n else None


def build(spec: str, options: RouteOptions) -> PublicEncoder:
    """The encoder of ``open_clip:DIR`` or ``open_clip:ARCH`` (see the module docstring).

    Raises:
        SubmissionError: no config or weights, a Hugging Face text tower that is not local,
            weights that do not fit the architecture.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    what = f"open_clip:{spec}"
    model_cfg, preprocess_cfg, directory, source = _config(spec)
    weights = _weights_file(directory, options, spec)
    text_dir = None
    hf_name = model_cfg.get("text_cfg", {}).get("hf_model_name")
    if hf_name:
        text_dir = _local_text_dir(directory, str(hf_name), spec)
        model_cfg["text_cfg"]["hf_model_name"] = str(text_dir)
        model_cfg["text_cfg"]["hf_tokenizer_name"] = str(text_dir)
    loaded = read_weights(weights, options.checkpoint_key, options.key_prefix)
    try:
        model = _model(model_cfg)
    except SubmissionError:
        raise
    except Exception as exc:  # noqa: BLE001 - open_clip / timm / transformers refusing the config
        from harness.encoders.weights import one_line

        raise SubmissionError(f"{what}: open_clip cannot build the model of {source}: {one_line(exc)[:240]}") from None
    state = _fixed(model, loaded.tensors)
    fit_state(model, state, weights, what, notes=loaded.notes)
    size = model.visual.image_size
    size = int(size[0] if isinstance(size, list | tuple) else size)
    base = from_open_clip(preprocess_cfg, size, f"{what} ({source})")
    preprocess = apply_overrides(base, options.preprocess, what)
    notes = [*loaded.notes, f"model {type(model).__name__}", f"preprocessing: {source} ({describe(base)})"
             + (f", overridden by {sorted(options.preprocess)}" if options.preprocess else ""),
             f"tokenizer: {'the local ' + text_dir.name if text_dir else 'open_clip bundled BPE'}"]
    card = card_for("open_clip", Path(spec).name, preprocess, options.pretraining_data, weights, notes)
    grid = _grid(model.eval(), preprocess.image_size)
    enc = OpenClip(card, model, _tokenizer(model_cfg, text_dir)) if grid else \
        OpenClipText(card, model, _tokenizer(model_cfg, text_dir))
    if grid:
        enc.region_grid = grid
    return finish(enc, what, size_source(options.preprocess, source))
