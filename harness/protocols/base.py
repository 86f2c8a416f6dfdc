"""The protocol seam: what a protocol receives and what it returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.cohort import TaskData
from harness.encoders import Preprocess
from harness.tasks import TaskSpec


class ProtocolError(RuntimeError):
    """A protocol that cannot run on this input; the message says why."""


@dataclass
class EvalContext:
    task: TaskSpec
    data: TaskData
    encoder: Any  # see harness.encoders.capabilities
    preprocess: Preprocess
    args: dict[str, Any]  # task.args_for(profile): the protocol's arguments
    fraction: float  # label fraction of the TRAINING split (nested by patient, see cohort.fraction_mask)
    seed: int
    profile: str  # smoke | small | paper
    device: str
    workdir: Path  # scratch space for this run (resumable state); the feature cache lives elsewhere
    weights_sha256: str  # identifies the encoder weights (feature cache key)
    progress: bool = True


@dataclass
class ProtocolResult:
    metrics: dict[str, float]
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)  # 95 % bootstrap CIs
    # Saved with --save-predictions as .npz next to the record: scores, targets, embeddings,
    # a few reconstructions. Arrays only: never text, never patient or study identifiers.
    predictions: dict[str, np.ndarray] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)  # chosen hyperparameters, skipped labels, ...
