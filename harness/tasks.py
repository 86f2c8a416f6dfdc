"""Task specs: small YAML files validated into a frozen dataclass.

Unknown keys, missing keys and wrong types are errors naming the file and the
key. Every cohort choice is visible in the file; ``version`` is bumped on any
change that moves numbers.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

TASKS_DIR = Path(__file__).resolve().parent.parent / "tasks"


class TaskSpecError(ValueError):
    """A task file that does not validate; the message names file and key."""


@dataclass(frozen=True)
class LabelPolicy:
    """How 1 / 0 / -1 (uncertain) / NaN (blank) become training targets.

    ``uncertain`` and ``blank`` are ``zero``, ``one`` or ``ignore`` (masked out of
    the loss and the metrics for that label); ``per_label`` overrides
    ``uncertain`` for named labels (GLoRIA's U-Ones / U-Zeros per label).
    """

    uncertain: str = "zero"
    blank: str = "zero"
    per_label: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SplitSpec:
    """``official`` uses the dataset's split; ``patient-hash`` assigns by a hash of
    the patient id where no (or no validation) split exists.

    ``on_leak`` says what a patient in two of the task's train / val / test splits does
    (an official split that is not patient-disjoint: a damaged or edited split file):
    ``error`` (the default) refuses the run with one line naming the split file(s), the
    patient and the splits; ``drop`` keeps that patient's rows only in its most held-out
    split (test > val > train) and counts the removed rows in the record's ``skipped``.
    Set ``drop`` only in a task whose source says the official split is to be used as is.
    """

    method: str = "official"
    # which official split serves as the test set ("val" for CheXpert's valid.csv); with
    # eval_dataset set, the split of THAT dataset used as test
    test_split: str = "test"
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    salt: str = "harness-v1"
    on_leak: str = "error"  # error | drop (see the docstring)


@dataclass(frozen=True)
class TaskSpec:
    name: str
    version: int
    description: str
    source: str  # where the protocol comes from (paper, section), and harness choices
    dataset: str  # train / validation data
    protocol: str
    main_metric: str
    metrics: tuple[str, ...]
    requires: tuple[str, ...] = ("image",)
    eval_dataset: str | None = None  # test data from another dataset (e.g. chexpert-ext)
    views: tuple[str, ...] | None = None  # None: every view
    labels: tuple[str, ...] = ()
    label_policy: LabelPolicy = field(default_factory=LabelPolicy)
    split: SplitSpec = field(default_factory=SplitSpec)
    fractions: tuple[float, ...] = (1.0,)
    seeds: tuple[int, ...] = (0,)
    protocol_args: dict[str, Any] = field(default_factory=dict)
    profile_args: dict[str, dict[str, Any]] = field(default_factory=dict)  # profile -> arg overrides
    path: str = ""  # the file it was loaded from (set by the loader)

    def args_for(self, profile: str) -> dict[str, Any]:
        """Protocol arguments with the profile's overrides applied."""
        return {**self.protocol_args, **self.profile_args.get(profile, {})}

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("path")
        return d


_NESTED = {"label_policy": LabelPolicy, "split": SplitSpec}


def _check_type(value: Any, annotation: Any, where: str) -> Any:
    """Validate ``value`` against a (simple) type annotation; return it normalised."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _check_type(value, inner[0], where)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise TaskSpecError(f"{where}: expected a list, got {type(value).__name__}")
        return tuple(_check_type(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise TaskSpecError(f"{where}: expected a mapping, got {type(value).__name__}")
        return dict(value)
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TaskSpecError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TaskSpecError(f"{where}: expected an integer, got {value!r}")
        return value
    if annotation is str:
        if not isinstance(value, str):
            raise TaskSpecError(f"{where}: expected a string, got {value!r}")
        return value
    if annotation is Any:
        return value
    raise TypeError(f"unsupported annotation {annotation!r} at {where}")  # pragma: no cover


def _build(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise TaskSpecError(f"{where}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "path"}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        from harness.registry import did_you_mean

        hint = did_you_mean(unknown[0], list(fields))
        raise TaskSpecError(f"{where}: unknown key(s) {unknown}{hint}")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        key = f"{where}: {name}" if ":" not in where else f"{where}.{name}"
        if name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise TaskSpecError(f"{where}: missing required key {name!r}")
            continue
        if name in _NESTED:
            kwargs[name] = _build(_NESTED[name], raw[name], key)
        else:
            kwargs[name] = _check_type(raw[name], hints[name], key)
    return cls(**kwargs)


def _check_semantics(spec: TaskSpec, where: str) -> None:
    policies = {"zero", "one", "ignore"}
    lp = spec.label_policy
    for key, value in [("uncertain", lp.uncertain), ("blank", lp.blank), *lp.per_label.items()]:
        if value not in policies:
            raise TaskSpecError(f"{where}: label_policy.{key}: {value!r} is not one of {sorted(policies)}")
    unknown_labels = sorted(set(lp.per_label) - set(spec.labels))
    if unknown_labels:
        raise TaskSpecError(f"{where}: label_policy.per_label names unknown label(s) {unknown_labels}")
    if spec.split.method not in ("official", "patient-hash"):
        raise TaskSpecError(f"{where}: split.method: {spec.split.method!r} is not 'official' or 'patient-hash'")
    if spec.split.on_leak not in ("error", "drop"):
        raise TaskSpecError(f"{where}: split.on_leak: {spec.split.on_leak!r} is not 'error' or 'drop'")
    for fr in spec.fractions:
        if not 0 < fr <= 1:
            raise TaskSpecError(f"{where}: fractions: {fr} is not in (0, 1]")
    if spec.main_metric not in spec.metrics:
        raise TaskSpecError(f"{where}: main_metric {spec.main_metric!r} is not listed in metrics")
    if spec.version < 1:
        raise TaskSpecError(f"{where}: version must be >= 1")
    from harness.methods import CAPABILITIES

    bad = [c for c in spec.requires if c not in CAPABILITIES]
    if bad:
        raise TaskSpecError(f"{where}: requires: unknown capability {bad}; known: {list(CAPABILITIES)}")


def load_task(path: str | Path) -> TaskSpec:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise TaskSpecError(f"{path}: not valid YAML: {exc}") from None
    spec = _build(TaskSpec, raw, str(path))
    if spec.name != path.stem:
        raise TaskSpecError(f"{path}: name {spec.name!r} must equal the file name {path.stem!r}")
    _check_semantics(spec, str(path))
    return dataclasses.replace(spec, path=str(path))


def task_files(tasks_dir: Path = TASKS_DIR) -> list[Path]:
    return sorted(tasks_dir.glob("*.yaml"))
