"""``torchxrayvision:NAME --weights FILE`` (or ``xrv:NAME``): torchxrayvision's models with local weights.

NAME is any of torchxrayvision's weight names (``densenet121-res224-all``, ``-nih``, ``-pc``,
``-chex``, ``-rsna``, ``-mimic_nb``, ``-mimic_ch``, their short forms ``all``, ``nih``, ...,
``resnet50-res512-all``) or an architecture (``densenet121``, ``resnet50``, ``resnet101``).
The architecture is built without weights (``xrv.models.DenseNet(weights=None)``: nothing is
downloaded; the ResNets as torchxrayvision builds them, a torchvision ResNet with a 1-channel
stem), and the user's file is loaded into it:

- a state dict in any of the layouts users have: the DenseNet's own keys, the ResNet's
  ``model.``-prefixed module keys or the bare torchvision keys of the released ResNet file,
  with or without ``op_threshs`` (torchxrayvision's calibration buffer, not a weight of the
  feature) and the classifier (dropped: the feature is ``features2`` / the pooled ResNet map);
- a released weights file, which is a whole pickled model: read with the restricted
  unpickler (``harness.encoders.unpickle``), accepted only when every class it names is in
  ``ALLOWLIST`` (exactly the torchxrayvision and torch.nn classes a DenseNet file holds);
  then its tensors come from the module tree and none of its code runs. Anything else
  names the classes and how to convert the file (``harness convert-weights``).

Preprocessing is torchxrayvision's own: 1 channel, pixels in [-1024, 1024]
(``xrv.datasets.normalize``), bilinear resize to the model's resolution (224 px, 512 for
``resnet50-res512-all``). torchxrayvision's ``XRayCenterCrop`` crops the non-square film to
a square; the harness's image store has already made it square (whole film), so that crop is
not reproduced (identical on square films such as NIH-14's).
"""

from __future__ import annotations

import importlib.util
from typing import Any

from harness.encoders.checkpoints import auto_prefix, fit_state, read_weights
from harness.encoders.errors import SubmissionError
from harness.encoders.public.encoder import PublicEncoder, card_for, finish, size_source
from harness.encoders.public.options import RouteOptions
from harness.encoders.public.preprocessing import apply_overrides, describe, make

# Every class a whole pickled torchxrayvision DenseNet names (torch.save(model)), and nothing more.
ALLOWLIST = frozenset({
    "torchxrayvision.models.DenseNet", "torchxrayvision.models._DenseBlock", "torchxrayvision.models._DenseLayer",
    "torchxrayvision.models._Transition", "torch.nn.modules.container.Sequential", "torch.nn.modules.conv.Conv2d",
    "torch.nn.modules.batchnorm.BatchNorm2d", "torch.nn.modules.activation.ReLU",
    "torch.nn.modules.pooling.MaxPool2d", "torch.nn.modules.pooling.AvgPool2d", "torch.nn.modules.linear.Linear",
})
ARCHITECTURES = ("densenet121", "resnet50", "resnet101")
NOT_FEATURE = ("classifier.", "fc.", "op_threshs")  # the pathology head and its calibration


class XrvDenseNet(PublicEncoder):
    """torchxrayvision's DenseNet feature, ``features2``: ReLU + global average pool of ``features``."""

    def encode_image(self, images: Any) -> Any:
        return self.net.features2(images)


class XrvResNet(PublicEncoder):
    """torchxrayvision's ResNet feature (its ``features``): the torchvision ResNet without its ``fc``."""

    def encode_image(self, images: Any) -> Any:
        return self.net(images)


def names() -> list[str]:
    """Every NAME the route takes: torchxrayvision's weight names and the architectures."""
    import torchxrayvision as xrv

    # model_urls holds the DenseNet and ResNet classifiers (the autoencoders and baseline models live elsewhere)
    return sorted(set(xrv.models.model_urls) | set(ARCHITECTURES))


def _architecture(name: str) -> tuple[str, int]:
    """(``densenet121`` | ``resnet50`` | ``resnet101``, input resolution) of a NAME."""
    import torchxrayvision as xrv

    from harness.registry import did_you_mean

    known = names()
    if name not in known:
        hint = did_you_mean(name, known) or f"; known: {known}"
        raise SubmissionError(f"torchxrayvision has no model {name!r}{hint}")
    if name in ARCHITECTURES:
        return name, 512 if name.startswith("resnet") else 224
    entry = xrv.models.model_urls[name]
    arch = "resnet50" if name.startswith("resnet50") else "resnet101" if name.startswith("resnet101") else \
        "densenet121"
    return arch, int(entry.get("input_resolution", 224))


def _net(arch: str) -> Any:
    import torch
    import torchvision
    import torchxrayvision as xrv
    from torch import nn

    if arch == "densenet121":
        net = xrv.models.DenseNet(weights=None, **xrv.models.get_densenet_params(arch))
        net.classifier = nn.Identity()  # features2 is the feature; the head is not used
        return net
    net = getattr(torchvision.models, arch)(weights=None, num_classes=18)
    net.conv1 = torch.nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)  # as xrv patches it
    net.fc = nn.Identity()
    return net


def build(name: str, options: RouteOptions) -> PublicEncoder:
    """The encoder of ``torchxrayvision:NAME`` (see the module docstring).

    Raises:
        SubmissionError: torchxrayvision is not installed, NAME is unknown, or the file does not fit.
    """
    if importlib.util.find_spec("torchxrayvision") is None:
        raise SubmissionError("torchxrayvision is not installed here (pip install torchxrayvision); its models "
                              "cannot be scored without it")
    what = f"torchxrayvision:{name}"
    arch, resolution = _architecture(name)
    loaded = read_weights(options.weights, options.checkpoint_key, options.key_prefix, model_classes=ALLOWLIST)
    net = _net(arch)
    state = auto_prefix(loaded.tensors, list(net.state_dict()), loaded.notes)
    fit_state(net, state, str(options.weights), what, drop=NOT_FEATURE, notes=loaded.notes)
    base = make(what, resolution, 1, 0.0, 1.0, resize_mode="bilinear", pixel_range=(-1024.0, 1024.0))
    preprocess = apply_overrides(base, options.preprocess)
    notes = [*loaded.notes, f"preprocessing: torchxrayvision's ({describe(base)})"
             + (f", overridden by {sorted(options.preprocess)}" if options.preprocess else "")]
    card = card_for("torchxrayvision", name, preprocess, options.pretraining_data, options.weights, notes)
    encoder = (XrvDenseNet if arch == "densenet121" else XrvResNet)(card, net)
    return finish(encoder, what, size_source(options.preprocess, "torchxrayvision's resolution"))
