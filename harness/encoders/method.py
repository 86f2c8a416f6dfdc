"""The method seam: ``Method`` (``pretrain`` + ``load``) and what ``pretrain`` receives.

A *method* (baseline or submission) turns pretraining data into a checkpoint and
a checkpoint into an *encoder* (``harness.encoders.capabilities``). ``harness/``
reaches the baselines only through this seam and the registry names in
``harness.catalog``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from harness.encoders.capabilities import ImageEncoder
from harness.encoders.card import MethodCard


@dataclass
class PretrainRequest:
    """Everything a method's ``pretrain`` may use. Training split only, by construction.

    ``data.records.frame`` holds only ``split == "train"`` rows of the task's
    dataset; ``load_source(name)`` returns another dataset's training data for
    methods that mix sources (e.g. ``mlm-mvm`` cross-source unpaired).
    """

    data: Any  # harness.cohort.TrainingData
    config: dict[str, Any]  # the resolved profile config (+ --set overrides)
    workdir: Path  # checkpoints and logs for this pretraining run live here
    seed: int
    device: str
    load_source: Any = None  # Callable[[str], TrainingData]
    progress: bool = True


class Method(Protocol):
    """A registered method. ``harness`` reaches baselines only through this seam.

    ``profiles`` maps ``smoke`` / ``small`` / ``paper`` to config dicts.
    ``pretrain`` returns the path of a final checkpoint, or None for methods that
    do not pretrain (``random``, ``imagenet``). ``load`` builds the encoder
    from that checkpoint (or from nothing) with the same config.
    """

    card: MethodCard
    profiles: dict[str, dict[str, Any]]

    def pretrain(self, request: PretrainRequest) -> Path | None: ...

    def load(self, checkpoint: Path | None, config: dict[str, Any]) -> ImageEncoder: ...
