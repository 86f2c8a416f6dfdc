"""``torchvision:NAME --weights FILE`` (and ``--arch resnet50``): torchvision architectures with local weights.

Built with ``weights=None``; the classifier's final ``Linear`` becomes ``Identity``
(``remove_classifier``), and only it: ConvNeXt's ``classifier`` is ``LayerNorm2d, Flatten,
Linear``, and its LayerNorm stays, because it belongs to the feature. The file's tensors
under the removed layer (``fc.*``, ``classifier.2.*``, a MoCo MLP head ``fc.0.*`` / ``fc.2.*``)
are dropped; everything else must fit exactly. Preprocessing: the eval transform of the
architecture's first torchvision weights entry (``preprocessing.from_torchvision``), then
the user's overrides.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from harness.encoders.checkpoints import auto_prefix, fit_state, read_weights
from harness.encoders.errors import SubmissionError
from harness.encoders.preprocess import Preprocess
from harness.encoders.public.encoder import PublicEncoder, card_for, finish, size_source
from harness.encoders.public.options import RouteOptions
from harness.encoders.public.preprocessing import apply_overrides, describe, from_torchvision

HEADS = ("fc", "classifier", "heads", "head")


class TorchvisionEncoder(PublicEncoder):
    """The model's output with its final classifier layer removed: the pooled (and normed) feature."""

    def encode_image(self, images: Any) -> Any:
        return self.net(images)


def remove_classifier(net: nn.Module) -> str | None:
    """Replace the last ``Linear`` of the classifier head with ``Identity``; returns its path, or None."""
    for head in HEADS:
        module = getattr(net, head, None)
        if isinstance(module, nn.Linear):
            setattr(net, head, nn.Identity())
            return head
        if isinstance(module, nn.Sequential):
            for i in reversed(range(len(module))):
                if isinstance(module[i], nn.Linear):
                    module[i] = nn.Identity()
                    return f"{head}.{i}"
    return None


def build(name: str, options: RouteOptions) -> TorchvisionEncoder:
    """The encoder of ``torchvision:NAME`` (see the module docstring).

    Raises:
        SubmissionError: torchvision has no such model, or the weights do not fit it.
    """
    import torchvision

    what = f"torchvision:{name}"
    if name not in torchvision.models.list_models():
        raise SubmissionError(f"torchvision has no model {name!r} (see torchvision.models.list_models())")
    loaded = read_weights(options.weights, options.checkpoint_key, options.key_prefix)
    net = torchvision.models.get_model(name, weights=None)
    removed = remove_classifier(net)
    # the whole head goes where a file has a bigger one (MoCo v2's MLP): every tensor under its name
    drop = (f"{removed.split('.')[0]}.",) if removed else ()
    state = auto_prefix(loaded.tensors, list(net.state_dict()), loaded.notes)
    fit_state(net, state, str(options.weights), what, drop=drop, notes=loaded.notes)
    try:
        entry = next(iter(torchvision.models.get_model_weights(name)))
        base, source = from_torchvision(entry.transforms(), what), f"torchvision's {entry} eval transform"
    except (ValueError, KeyError, StopIteration):
        if not {"image_size", "mean", "std"} <= set(options.preprocess):
            raise SubmissionError(f"{what}: torchvision declares no preprocessing for it; pass --image-size, --mean "
                                  "and --std") from None
        base, source = Preprocess(), "the options given"  # every field the options set replaces it below
    preprocess = apply_overrides(base, options.preprocess)
    notes = [*loaded.notes, f"preprocessing: {source} ({describe(base)})"
             + (f", overridden by {sorted(options.preprocess)}" if options.preprocess else "")]
    card = card_for("torchvision", name, preprocess, options.pretraining_data, options.weights, notes)
    return finish(TorchvisionEncoder(card, net), what, size_source(options.preprocess, source))
