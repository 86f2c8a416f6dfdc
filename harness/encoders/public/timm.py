"""``timm:NAME --weights FILE``: any timm architecture with the user's local weights.

The model is built with ``pretrained=False`` and ``num_classes=0`` (timm removes only the
final classifier: a ConvNeXt keeps ``head.norm``, whose LayerNorm belongs to the pooled
feature) and ``in_chans`` taken from the file's first convolution (grey-trained weights
get a 1-channel stem). The file's classifier tensors (``pretrained_cfg["classifier"]``,
e.g. ``head.fc``) are dropped; everything else must fit exactly.

Global feature: ``net(x)`` (timm's pooled, normed feature). Regions: ``forward_features``
as patch tokens (prefix tokens removed, on the patch grid) or as the final feature map.
Preprocessing: the architecture's ``pretrained_cfg`` (``preprocessing.from_timm``), then
the user's overrides.
"""

from __future__ import annotations

from typing import Any

from harness.encoders.checkpoints import auto_prefix, fit_state, read_weights
from harness.encoders.errors import SubmissionError
from harness.encoders.public.encoder import PublicEncoder, card_for, finish, map_to_regions, size_source
from harness.encoders.public.options import RouteOptions
from harness.encoders.public.preprocessing import apply_overrides, describe, from_timm


class TimmEncoder(PublicEncoder):
    """timm's pooled feature (``net(x)``) and its last feature map or patch tokens as regions."""

    region_grid = (1, 1)

    def encode_image(self, images: Any) -> Any:
        return self.net(images)

    def encode_image_regions(self, images: Any) -> Any:
        out = self.net.forward_features(images)
        if out.ndim == 4:
            return map_to_regions(out)
        return out[:, int(getattr(self.net, "num_prefix_tokens", 0)):]


def _in_chans(net_cfg: dict[str, Any], state: dict[str, Any]) -> int | None:
    """The input channels of the file's first convolution (``pretrained_cfg["first_conv"]``), if it has one."""
    first = net_cfg.get("first_conv")
    firsts = [first] if isinstance(first, str) else list(first or [])
    for name in firsts:
        weight = state.get(f"{name}.weight")
        if weight is not None and weight.ndim == 4:
            return int(weight.shape[1])
    return None


def build(name: str, options: RouteOptions) -> TimmEncoder:
    """The encoder of ``timm:NAME`` (see the module docstring).

    Raises:
        SubmissionError: timm has no such model, no weights were given, or they do not fit.
    """
    import timm

    what = f"timm:{name}"
    if not timm.is_model(name):
        raise SubmissionError(f"timm has no model {name!r} (see timm.list_models())")
    loaded = read_weights(options.weights, options.checkpoint_key, options.key_prefix)
    cfg = dict(timm.models.get_pretrained_cfg(name).to_dict()) if timm.models.get_pretrained_cfg(name) else {}
    in_chans = int(options.preprocess.get("channels") or _in_chans(cfg, loaded.tensors) or cfg.get("input_size",
                                                                                                   (3,))[0])
    net = timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_chans)
    cfg = dict(net.pretrained_cfg)
    classifier = cfg.get("classifier") or "head"
    heads = tuple(f"{c}." for c in ([classifier] if isinstance(classifier, str) else classifier))
    state = auto_prefix(loaded.tensors, list(net.state_dict()), loaded.notes)
    fit_state(net, state, str(options.weights), what, drop=heads, notes=loaded.notes)
    base = from_timm(cfg, in_chans, f"{what} (timm's pretrained_cfg)")
    preprocess = apply_overrides(base, options.preprocess)
    notes = [*loaded.notes, f"preprocessing: timm's pretrained_cfg ({describe(base)})"
             + (f", overridden by {sorted(options.preprocess)}" if options.preprocess else "")]
    card = card_for("timm", name, preprocess, options.pretraining_data, options.weights, notes)
    enc = TimmEncoder(card, net)
    probe_grid = _grid(net, preprocess)
    if probe_grid is None:  # no patch grid the harness can read: the global feature only
        enc = _GlobalOnly(card, net)
    else:
        enc.region_grid = probe_grid
    return finish(enc, what, size_source(options.preprocess, "timm's pretrained_cfg"))


class _GlobalOnly(PublicEncoder):
    def encode_image(self, images: Any) -> Any:
        return self.net(images)


def _grid(net: Any, preprocess: Any) -> tuple[int, int] | None:
    """The region grid of ``forward_features`` at the card's input size, or None when it is not one."""
    import torch

    x = torch.zeros(1, preprocess.channels, preprocess.image_size, preprocess.image_size)
    try:
        with torch.no_grad():
            out = net.eval().forward_features(x)
    except Exception:  # noqa: BLE001 - finish() reports the input the model refuses
        return (1, 1)
    if out.ndim == 4:
        return int(out.shape[2]), int(out.shape[3])
    if out.ndim == 3:
        n = out.shape[1] - int(getattr(net, "num_prefix_tokens", 0))
        side = int(round(n ** 0.5))
        return (side, side) if side * side == n else None
    return None
