"""Helpers shared by the protocol tests (one copy, instead of one per test file)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from harness.cohort import TaskData, label_fraction
from harness.features import weights_sha256
from harness.protocols.base import EvalContext


def eval_context(data: TaskData, encoder: Any, tmp_path: Path, args: dict | None = None, fraction: float = 1.0,
                 seed: int = 0) -> EvalContext:
    """What the runner hands a protocol: the label fraction applied, the encoder's weights hashed."""
    return EvalContext(task=data.task, data=label_fraction(data, fraction, seed), encoder=encoder,
                       preprocess=encoder.card.preprocess, args=args or {}, fraction=fraction, seed=seed,
                       profile="smoke", device="cpu", workdir=tmp_path, weights_sha256=weights_sha256(encoder),
                       progress=False)


class ArrayStore:
    """The image-store interface (``size``, ``bad``, ``__getitem__``) over an in-memory uint8 array."""

    def __init__(self, images: np.ndarray, bad: np.ndarray | None = None) -> None:
        self.images = images
        self.size = images.shape[-1]
        self.bad = np.zeros(len(images), bool) if bad is None else bad

    def __getitem__(self, idx):
        return self.images[idx]
