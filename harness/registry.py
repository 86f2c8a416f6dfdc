"""One small generic registry: name -> object, with lazy "module:attr" targets.

Duplicate names are an error (lm-eval), unknown names get "did you mean"
suggestions, and heavy entries (baselines importing torch) are registered as
strings so that listing names imports nothing.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """An unknown registry name; the message carries suggestions."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'X'?"`` for the choice that differs only in case, else up to three close ones, else ``""``.

    The one suggestion helper of the repository: registries, task keys, protocol arguments, configs.
    """
    choices = [str(c) for c in choices]
    same = [c for c in choices if c.lower() == str(name).lower()]
    close = same[:1] or difflib.get_close_matches(str(name), choices, n=3, cutoff=0.5)
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def resolve_target(target: str) -> object:
    """Import "package.module:attr" (attr may be dotted) and return the object."""
    module_name, _, attr = target.partition(":")
    if not attr:
        raise ValueError(f"lazy target {target!r} must look like 'package.module:attr'")
    obj: object = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


class Registry(Generic[T]):
    """Name -> object. Raises on duplicates; unknown names get suggestions."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._objects: dict[str, T] = {}
        self._lazy: dict[str, str] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form: ``@REGISTRY.register("name")``."""

        def decorator(obj: T) -> T:
            self.add(name, obj)
            return obj

        return decorator

    def add(self, name: str, obj: T) -> None:
        self._check_new(name)
        self._objects[name] = obj

    def add_lazy(self, name: str, target: str) -> None:
        """Register ``"package.module:attr"``; imported on first ``get``."""
        self._check_new(name)
        self._lazy[name] = target

    def _check_new(self, name: str) -> None:
        if name in self._objects or name in self._lazy:
            raise ValueError(f"duplicate {self.kind} name {name!r}")

    def get(self, name: str) -> T:
        if name in self._objects:
            return self._objects[name]
        if name in self._lazy:
            obj = resolve_target(self._lazy[name])  # a failed import keeps the name registered
            del self._lazy[name]
            self._objects[name] = obj  # type: ignore[assignment]
            return obj  # type: ignore[return-value]
        raise UnknownNameError(f"unknown {self.kind} {name!r}{did_you_mean(name, self.names())}")

    def __contains__(self, name: object) -> bool:
        return name in self._objects or name in self._lazy

    def names(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in {*self._objects, *self._lazy} if fnmatch.fnmatch(n, pattern))
