"""The protocol seam: what a protocol receives, what it returns, and the one guard around it.

A protocol is a function ``(EvalContext) -> ProtocolResult`` (registered in
``harness.catalog.PROTOCOLS``). It receives prepared inputs: the task's splits with the
label fraction already applied to the training split (``harness.cohort.label_fraction``),
the encoder on its device and the hash of its weights. It never recomputes that hash and
never checks the weights itself: ``evaluate`` runs every protocol under the frozen-weights
guard (MoCo's ``sanity_check``): after the protocol, the encoder must hash to the same
weights, bit for bit, or the run fails (``EncoderChangedError``). Protocols that train
(fine-tuning, the multimodal classifier) train a copy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # annotations only: the seam imports nothing of the layers it joins
    from harness.cohort import TaskData
    from harness.encoders import Preprocess
    from harness.tasks import TaskSpec


@dataclass
class EvalContext:
    task: TaskSpec
    data: TaskData
    encoder: Any  # see harness.encoders.capabilities
    preprocess: Preprocess
    args: dict[str, Any]  # task.args_for(profile): the protocol's arguments
    fraction: float  # label fraction of the TRAINING split, already applied to data.train (cohort.label_fraction)
    seed: int
    profile: str  # smoke | small | paper
    device: str
    workdir: Path  # scratch space for this run (resumable state); the feature cache lives elsewhere
    weights_sha256: str  # the encoder's weights hash: the feature cache key and the frozen guard's reference
    progress: bool = True


@dataclass
class ProtocolResult:
    metrics: dict[str, float]
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)  # 95 % bootstrap CIs
    # Written as .npz next to the record: always the arrays the paired bootstrap of the main metric
    # needs (harness.metrics.paired.KEPT); with --save-predictions everything (embeddings, a few
    # reconstructions). Arrays only: never text, never patient or study identifiers.
    predictions: dict[str, np.ndarray] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)  # chosen hyperparameters, skipped labels, ...


def evaluate(protocol: Callable[[EvalContext], ProtocolResult], ctx: EvalContext) -> ProtocolResult:
    """``protocol(ctx)`` under the frozen-weights guard (see the module docstring).

    Raises:
        EncoderChangedError: the protocol changed a bit of the encoder's weights or buffers.
    """
    from harness.features import assert_unchanged

    result = protocol(ctx)
    assert_unchanged(ctx.encoder, ctx.weights_sha256)
    result.details["encoder_unchanged"] = True
    return result
