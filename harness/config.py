"""Method configs: a profile's dict plus ``--set key=value`` overrides (dotted keys, YAML values)."""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

import yaml

PROFILES = ("smoke", "small", "paper")


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["ehr.groups=[demographics]", "lr=0.1"]`` -> nested dict with YAML-parsed values."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects key=value, got {item!r}")
        value = yaml.safe_load(raw) if raw else ""
        if isinstance(value, str):  # YAML 1.1 reads 3e-5 as a string; a number is what anyone means
            try:
                value = float(value)
            except ValueError:
                pass
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"--set {item!r}: {p!r} is both a value and a section")
        node[leaf] = value
    return out


def merge(base: dict[str, Any], overrides: dict[str, Any], *, where: str = "config") -> dict[str, Any]:
    """Deep-merge overrides into a copy of base; unknown keys are an error (typos must not pass)."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if key not in out:
            from harness.registry import did_you_mean

            raise KeyError(f"unknown {where} key {key!r}{did_you_mean(key, list(out))}")
        if isinstance(value, dict) and isinstance(out[key], dict):
            out[key] = merge(out[key], value, where=f"{where}.{key}")
        else:
            out[key] = _same_kind(out[key], value, f"{where} key {key!r}")
    return out


def _same_kind(default: Any, value: Any, where: str) -> Any:
    """``value`` in the type of the default it replaces (ints for ints, lists for lists, ...).

    A wrong type is an error here, naming the key, rather than a traceback deep inside training.
    ``None`` defaults take anything; an int is a fine float and an integral float a fine int.
    """
    if default is None or value is None:
        return value
    if isinstance(default, bool) or isinstance(value, bool):
        ok = isinstance(default, bool) and isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        value = int(value) if ok else value
    elif isinstance(default, float):
        ok = isinstance(value, int | float)
        value = float(value) if ok else value
    elif isinstance(default, list | tuple):
        ok = isinstance(value, list | tuple)
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ValueError(f"{where}: expected {type(default).__name__} like the default {default!r}, got {value!r}")
    return value


def config_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()
