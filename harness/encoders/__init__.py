"""Encoders: the seam between a method and the harness, and every way an encoder gets in.

Step 3 of the data flow (records -> cohort -> **encoder** -> features -> protocol). A method
turns pretraining data into a checkpoint and a checkpoint into an encoder; an encoder says
what it can do by the methods it has and carries a card saying how to feed it.

============================  ============================================================
``capabilities``              the capability protocols (image, regions, text, regeneration,
                              trainable, localization) and ``capabilities(encoder)``
``card``                      ``MethodCard``: paper, preprocessing, pretraining data
``preprocess``                ``Preprocess`` and uint8 images -> the tensors a card asks for
``method``                    ``Method`` (``pretrain`` / ``load``) and ``PretrainRequest``
``check``                     ``check_encoder``: shapes, NaN, determinism, one shared space
``submission``                a user's encoder as a registered method (``harness submit``)
``public``                    public encoders from local files, one module per family:
                              timm, torchvision, torchxrayvision, Hugging Face, open_clip
``weights``                   what a weights file is, read from its bytes
``checkpoints``               a checkpoint's weights: sections, prefixes, fitting a model,
                              ``convert-weights``
``unpickle``                  reading torch pickles with every foreign global inert
``fingerprint``               the embedding fingerprint on the shipped reference batch
``provenance``                ``--pretraining-data`` values (the leakage flag's input)
``manifest``                  ``--pretraining-manifest``: patient overlap with a task, counted
============================  ============================================================

The names below are the seam's public face; the heavier modules (submission, public,
weights) are imported where they are used, so ``harness ls`` stays free of torch.
"""

from harness.encoders.capabilities import (
    CAPABILITIES,
    ImageEncoder,
    Regenerator,
    RegionEncoder,
    TextEncoder,
    capabilities,
    missing_capabilities,
)
from harness.encoders.card import MethodCard
from harness.encoders.method import Method, PretrainRequest
from harness.encoders.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess

__all__ = ["CAPABILITIES", "IMAGENET_MEAN", "IMAGENET_STD", "ImageEncoder", "Method", "MethodCard", "PretrainRequest",
           "Preprocess", "Regenerator", "RegionEncoder", "TextEncoder", "capabilities", "missing_capabilities"]
