"""Method configs: the fields every baseline shares, and plain dicts to dataclasses strictly.

Every method's config is a frozen ``@dataclass`` that extends one of two bases, so
its ``config.py`` lists only its own fields (and re-declares a shared field only to
give it the method's default):

- ``MethodConfig``: what the harness reads of every profile (``image_size``, ``seed``);
  the configs of ``random`` and ``imagenet``, which do not train, extend it;
- ``TrainingConfig``: adds what every pretraining loop runs with (batch, optimiser,
  budget, checkpoints, logs, autocast, the augmentation shared by every view).

A profile (``smoke`` / ``small`` / ``paper``) is a plain dict so the runner can
hash it, dump it and apply ``--set key=value`` overrides; the method turns it
into its dataclass with ``from_dict``, where an unknown key is an error with a
suggestion (never silently ignored) and lists become tuples.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from harness.registry import did_you_mean

T = TypeVar("T")


@dataclass(frozen=True)
class MethodConfig:
    """The fields of every method's config: every profile names its input size and its seed."""

    image_size: int = 224  # side of the square model input in px: the papers' 224; the CPU profiles go lower
    seed: int = 0  # of the initialisation and of every per-step draw (a run is a function of it)


@dataclass(frozen=True)
class TrainingConfig(MethodConfig):
    """The fields every pretraining loop runs with (``baselines.common.train``), on top of ``MethodConfig``.

    The defaults are the values most of the papers' recipes share; a method re-declares a field
    with its own default where its recipe differs (``docs/methods.md`` section 7 lists them).
    """

    batch_size: int = 128  # global, over all processes (the image-text recipes' 128)
    lr: float = 1e-4  # peak learning rate (MoCo-CXR, MSN+EHR and JoImTeRNet all use 1e-4)
    weight_decay: float = 1e-4
    epochs: float = 100.0  # the training budget in passes over the pretraining data ...
    steps: int | None = None  # ... unless a fixed number of steps is set (the CPU profiles)
    checkpoint_every: int = 1000  # steps between resumable checkpoints (0: only at the end)
    log_every: int = 10  # steps between log.jsonl lines
    amp: str = "auto"  # 16-bit autocast on CUDA (bf16 where supported), float32 on CPU; or off / bf16 / fp16
    # The photometric and rotation part of every view (baselines.common.data.AugmentConfig). Rotation is
    # MoCo-CXR's; brightness / contrast are a harness addition (MoCo-CXR has no photometric change, so its
    # paper profile sets both to 0). Crop and flip differ by method and live with it.
    rotation: float = 10.0  # max degrees either way
    brightness: float = 0.1  # additive, +- this on [0, 1] intensities
    contrast: float = 0.1  # multiplicative, 1 +- this about each image's mean

    def total_steps(self, num_items: int) -> int:
        """``steps`` when set, else ``epochs`` passes over ``num_items`` in global batches (rounded up)."""
        return self.steps if self.steps is not None else math.ceil(self.epochs * num_items / self.batch_size)

    def rank_batch(self, world_size: int, what: str) -> int:
        """This process's share of the global ``batch_size``.

        Args:
            world_size: the number of processes (1 without DDP).
            what: the method, for the error.

        Raises:
            ValueError: when the processes cannot share the batch evenly.
        """
        if self.batch_size % world_size:
            raise ValueError(f"{what}: batch_size {self.batch_size} is not divisible by the {world_size} processes")
        return self.batch_size // world_size


def from_dict(cls: type[T], values: Mapping[str, Any], *, what: str = "config") -> T:
    """Build dataclass ``cls`` from ``values``; unknown keys raise ``ValueError`` naming them.

    Args:
        cls: the config dataclass.
        values: a profile dict (lists allowed where the field is a tuple).
        what: how the error names the config (``"moco config"``).

    Returns:
        The config, with every list value turned into a tuple.

    Raises:
        ValueError: a key that is not a field of ``cls`` (with the closest field name).
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key in values:
        if key not in fields:
            hint = did_you_mean(key, list(fields)) or f" (known: {', '.join(sorted(fields))})"
            raise ValueError(f"{what}: unknown key {key!r}{hint}")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return cls(**kwargs)


def to_dict(config: Any) -> dict[str, Any]:
    """The plain-dict form of a config dataclass (tuples become lists, JSON friendly)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}
