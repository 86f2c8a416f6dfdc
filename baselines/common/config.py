"""Method configs: ``@dataclass`` defaults next to the code, built from plain dicts strictly.

A profile (``smoke`` / ``small`` / ``paper``) is a plain dict so the runner can
hash it, dump it and apply ``--set key=value`` overrides; the method turns it
into its dataclass with ``from_dict``, where an unknown key is an error with a
suggestion (never silently ignored) and lists become tuples.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


def from_dict(cls: type[T], values: Mapping[str, Any], *, what: str = "config") -> T:
    """Build dataclass ``cls`` from ``values``; unknown keys raise ``ValueError`` naming them."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key in values:
        if key not in fields:
            close = ([f for f in fields if f.lower() == key.lower()]
                     or difflib.get_close_matches(key, list(fields), n=1))
            hint = f"; did you mean {close[0]!r}?" if close else f" (known: {', '.join(sorted(fields))})"
            raise ValueError(f"{what}: unknown key {key!r}{hint}")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return cls(**kwargs)


def to_dict(config: Any) -> dict[str, Any]:
    """The plain-dict form of a config dataclass (tuples become lists, JSON friendly)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}
