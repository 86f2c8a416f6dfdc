"""``RouteOptions``: what ``harness submit`` passes to a public-encoder route besides its SPEC.

The weights file and how to read it (``--weights``, ``--checkpoint-key``, ``--key-prefix``),
the preprocessing overrides (``--image-size``, ``--crop-size``, ``--channels``, ``--mean``,
``--std``, ``--pixel-range``, ``--resize-mode``; ``PREPROCESS_OPTIONS``) and what the weights
saw (``--pretraining-data``). They travel to other processes inside the submission spec
(``to_json`` / ``from_json``) and, without the weights file's location, into the
submission's identity (``identity``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PREPROCESS_OPTIONS = ("image_size", "crop_size", "channels", "mean", "std", "pixel_range", "resize_mode")


@dataclass(frozen=True)
class RouteOptions:
    """A route's options (see the module docstring); ``preprocess`` holds only what the user set."""

    weights: str | None = None
    pretraining_data: tuple[str, ...] = ("unknown",)
    checkpoint_key: str | None = None
    key_prefix: str | None = None
    preprocess: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"weights": str(Path(self.weights).resolve()) if self.weights else None,
                "pretraining_data": list(self.pretraining_data), "checkpoint_key": self.checkpoint_key,
                "key_prefix": self.key_prefix, "preprocess": dict(self.preprocess)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RouteOptions:
        return cls(weights=data.get("weights"), pretraining_data=tuple(data.get("pretraining_data") or ("unknown",)),
                   checkpoint_key=data.get("checkpoint_key"), key_prefix=data.get("key_prefix"),
                   preprocess=dict(data.get("preprocess") or {}))

    def identity(self) -> dict[str, Any]:
        """What identifies the submission besides the weights' content (no file location).

        Options left at their defaults are left out, so an earlier submission's identity
        (``arch`` and ``pretraining_data`` only) still matches the same submission now.
        """
        out: dict[str, Any] = {"pretraining_data": list(self.pretraining_data)}
        if self.checkpoint_key:
            out["checkpoint_key"] = self.checkpoint_key
        if self.key_prefix:
            out["key_prefix"] = self.key_prefix
        if self.preprocess:
            out["preprocess"] = dict(sorted(self.preprocess.items()))
        return out
