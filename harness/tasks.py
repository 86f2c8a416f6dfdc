"""Task specs: small YAML files validated into a frozen dataclass.

Unknown keys, missing keys and wrong types are errors naming the file and the
key. Every cohort choice is visible in the file; ``version`` is bumped on any
change that moves numbers.

``load_task`` refuses everything a run would refuse later, so ``harness validate``,
``run``, ``sweep`` and ``submit`` (all of which load tasks through it) stop before any
work with one line ``<file>: <key>: <what>``:

- the file itself: unreadable, not UTF-8, not YAML, empty, a key repeated in a mapping
  (YAML would silently keep the last);
- the keys and their types; repeated entries in ``labels``, ``metrics``, ``views``,
  ``fractions``, ``seeds`` and ``requires``; fractions in (0, 1], seeds >= 0, the
  split's fractions, profile names in ``profile_args``;
- against the datasets (their adapters' ``label_names``, ``views`` and official
  ``splits``): labels, views, ``split.method`` and ``split.test_split``, for the
  ``eval_dataset`` too;
- against the protocol's declaration (``harness.protocols.args``): ``protocol_args``
  and every profile's overrides (names, types, ranges), the metrics and main metric
  it produces with them, the capabilities it needs in ``requires``, a fraction of 1
  for zero-shot protocols.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.storage import REPOSITORY

TASKS_DIR = REPOSITORY / "tasks"


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


SPLIT_NAMES = ("train", "val", "test")
SPLIT_METHODS = ("official", "patient-hash")
ON_LEAK = ("error", "drop")


def _check_semantics(spec: TaskSpec, where: str) -> None:
    """What the file says on its own: values, ranges, repeated entries, label policy, split, profiles."""
    from harness.protocols.args import suggest

    policies = {"zero", "one", "ignore"}
    lp = spec.label_policy
    for key, value in [("uncertain", lp.uncertain), ("blank", lp.blank), *lp.per_label.items()]:
        if value not in policies:
            raise TaskSpecError(f"{where}: label_policy.{key}: {value!r} is not one of {sorted(policies)}")
    unknown_labels = sorted(set(lp.per_label) - set(spec.labels))
    if unknown_labels:
        raise TaskSpecError(f"{where}: label_policy.per_label: unknown label(s) {unknown_labels}"
                            f"{suggest(unknown_labels[0], spec.labels)} (it may name only the task's labels)")
    for key in ("labels", "metrics", "views", "fractions", "seeds", "requires"):
        values = getattr(spec, key) or ()
        for i, value in enumerate(values):
            if value in values[:i]:
                raise TaskSpecError(f"{where}: {key}: {value!r} is repeated")
    for fr in spec.fractions:
        if not 0 < fr <= 1:
            raise TaskSpecError(f"{where}: fractions: {fr} is not in (0, 1]")
    for seed in spec.seeds:
        if seed < 0:
            raise TaskSpecError(f"{where}: seeds: {seed} is negative (seeds are non-negative integers)")
    if spec.views is not None and not spec.views:
        raise TaskSpecError(f"{where}: views: an empty list selects no image; write null for every view")
    _check_split(spec, where)
    if spec.main_metric not in spec.metrics:
        raise TaskSpecError(f"{where}: main_metric {spec.main_metric!r} is not listed in metrics")
    if spec.version < 1:
        raise TaskSpecError(f"{where}: version must be >= 1")
    from harness.encoders import CAPABILITIES

    bad = [c for c in spec.requires if c not in CAPABILITIES]
    if bad:
        raise TaskSpecError(f"{where}: requires: unknown capability {bad}; known: {list(CAPABILITIES)}")
    from harness.config import PROFILES

    for profile, overrides in spec.profile_args.items():
        if profile not in PROFILES:
            raise TaskSpecError(f"{where}: profile_args: unknown profile {profile!r}{suggest(str(profile), PROFILES)};"
                                f" profiles: {list(PROFILES)}")
        if not isinstance(overrides, dict):  # "smoke:" with nothing after it is null
            raise TaskSpecError(f"{where}: profile_args.{profile}: expected a mapping of protocol arguments, got "
                                f"{'null' if overrides is None else type(overrides).__name__}")


def _check_split(spec: TaskSpec, where: str) -> None:
    from harness.protocols.args import suggest

    split = spec.split
    if split.method not in SPLIT_METHODS:
        raise TaskSpecError(f"{where}: split.method: {split.method!r} is not 'official' or 'patient-hash'"
                            f"{suggest(split.method, SPLIT_METHODS)}")
    if split.test_split not in SPLIT_NAMES:
        raise TaskSpecError(f"{where}: split.test_split: {split.test_split!r} is not one of {list(SPLIT_NAMES)}"
                            f"{suggest(split.test_split, SPLIT_NAMES)}")
    if split.on_leak not in ON_LEAK:
        raise TaskSpecError(f"{where}: split.on_leak: {split.on_leak!r} is not 'error' or 'drop'"
                            f"{suggest(split.on_leak, ON_LEAK)}")
    if not 0 < split.val_fraction < 1:
        raise TaskSpecError(f"{where}: split.val_fraction: {split.val_fraction} is not in (0, 1)")
    if not 0 <= split.test_fraction < 1:
        raise TaskSpecError(f"{where}: split.test_fraction: {split.test_fraction} is not in [0, 1)")
    if split.method == "patient-hash" and spec.eval_dataset is None:
        if split.test_fraction == 0:
            raise TaskSpecError(f"{where}: split.test_fraction: 0 leaves the patient-hash test split empty")
        if split.val_fraction + split.test_fraction >= 1:
            raise TaskSpecError(f"{where}: split: val_fraction {split.val_fraction} + test_fraction "
                                f"{split.test_fraction} leave no training patients")


def _label_hint(label: str, dataset: str, known: tuple[str, ...]) -> str:
    """"; nih14 calls it 'Effusion'" where the schema's harmonisation maps the name, else a close name."""
    from harness.data.schema import HARMONISE
    from harness.protocols.args import suggest

    other = HARMONISE.get(label) or {v: k for k, v in HARMONISE.items()}.get(label)
    if other in known:
        return f"; {dataset} calls it {other!r}"
    return suggest(label, known)


def _check_datasets(spec: TaskSpec, where: str) -> None:
    """Dataset names, and labels, views and splits against what each dataset's adapter declares.

    An adapter that declares no ``label_names`` / ``views`` / ``splits`` is not checked for them.
    """
    from harness.catalog import DATASETS
    from harness.protocols.args import suggest
    from harness.registry import UnknownNameError

    adapters: dict[str, Any] = {}  # dataset name -> adapter, the training dataset first
    roles = {spec.dataset: "dataset", spec.eval_dataset: "eval_dataset"}
    for key in ("dataset", "eval_dataset"):
        name = getattr(spec, key)
        if name is None:
            continue
        try:
            adapters[name] = DATASETS.get(name)
        except UnknownNameError as exc:
            raise TaskSpecError(f"{where}: {key}: {exc}") from None
    for name, adapter in adapters.items():
        known = getattr(adapter, "label_names", None)
        for label in spec.labels if known is not None else ():
            if label not in known:
                raise TaskSpecError(f"{where}: labels: {label!r} is not a label of {name} ({roles[name]})"
                                    f"{_label_hint(label, name, tuple(known))}")
    declared_views = {name: getattr(a, "views", None) for name, a in adapters.items()}
    if spec.views and all(v is not None for v in declared_views.values()):
        every = list(dict.fromkeys(v for views in declared_views.values() for v in views))
        for view in spec.views:
            if view not in every:
                raise TaskSpecError(f"{where}: views: {view!r} is not a view of {' or '.join(adapters)} "
                                    f"(views: {every}){suggest(view, [v for v in every if v])}")
        for name, views in declared_views.items():
            if not set(spec.views) & set(views):
                raise TaskSpecError(f"{where}: views: {list(spec.views)} select no image of {name} "
                                    f"({roles[name]}; its views: {list(views)})")
    _check_official_splits(spec, where, {name: getattr(a, "splits", None) for name, a in adapters.items()})


def _check_official_splits(spec: TaskSpec, where: str, splits: dict[str, tuple[str, ...] | None]) -> None:
    split, own = spec.split, splits[spec.dataset]
    if split.method == "official" and own is not None and not own:
        raise TaskSpecError(f"{where}: split.method: 'official': {spec.dataset} has no official split; use "
                            "patient-hash")
    if spec.eval_dataset is not None:
        theirs = splits[spec.eval_dataset]
        if theirs is not None and split.test_split not in theirs:
            raise TaskSpecError(f"{where}: split.test_split: {split.test_split!r} is not an official split of "
                                f"{spec.eval_dataset} (eval_dataset); it has {list(theirs) or 'none'}")
    elif split.method == "official":
        tests = [s for s in own or SPLIT_NAMES if s != "train"]
        if split.test_split not in tests:
            raise TaskSpecError(f"{where}: split.test_split: {split.test_split!r} is not an official test split of "
                                f"{spec.dataset}; it has {tests}")
    elif split.test_split != "test":
        raise TaskSpecError(f"{where}: split.test_split: {split.test_split!r} has no effect with split.method "
                            "'patient-hash' (test patients are drawn by hash: test_fraction); remove it")


def _check_protocol(spec: TaskSpec, where: str) -> None:
    """``protocol_args`` and each profile's overrides, metrics, requires and fractions against the protocol."""
    from harness.catalog import PROTOCOLS
    from harness.protocols.args import ArgError, declared
    from harness.registry import did_you_mean

    if spec.protocol not in PROTOCOLS:
        raise TaskSpecError(f"{where}: protocol: unknown protocol {spec.protocol!r}"
                            f"{did_you_mean(spec.protocol, PROTOCOLS.names())}")
    decl = declared(spec.protocol)
    if decl is None:  # a registered protocol that declares nothing: nothing to check against
        return
    cases = [("", "protocol_args", spec.protocol_args)]
    cases += [(f" (with profile_args.{p})", f"profile_args.{p}", spec.args_for(p)) for p in spec.profile_args]
    for suffix, prefix, given in cases:
        try:
            args = decl.resolve(given)
        except ArgError as exc:
            raise TaskSpecError(f"{where}: {prefix}.{exc.key}: {exc.what}") from None
        try:
            decl.check_task(spec, args)
        except ArgError as exc:
            raise TaskSpecError(f"{where}: {exc.key}: {exc.what}{suffix}") from None
        missing = [c for c in decl.requires(args) if c not in spec.requires]
        if missing:
            raise TaskSpecError(f"{where}: requires: {spec.protocol} needs capability {missing}{suffix}; the task "
                                f"lists {list(spec.requires)}")
    if decl.zero_shot and any(fr != 1 for fr in spec.fractions):
        raise TaskSpecError(f"{where}: fractions: {spec.protocol} is zero-shot (nothing is trained): only 1.0 has "
                            f"a meaning, got {list(spec.fractions)}")


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """One line: where and what (PyYAML's own message spans several lines)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    context = getattr(exc, "context", None)
    return " ".join(f"not valid YAML{at}: {problem}{f' ({context})' if context else ''}".split())


def _repeated_key(text: str) -> str | None:
    """``"<key path>: <what>"`` for the first key repeated in one mapping, or None.

    ``yaml.safe_load`` keeps the last of two equal keys without a word; the composed node
    tree (nothing is constructed from it) still has both.
    """
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    found: list[tuple[int, str]] = []
    todo = [(root, "")] if root is not None else []
    while todo:
        node, where = todo.pop()
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key, value in node.value:
                name = str(key.value) if isinstance(key, yaml.ScalarNode) else ""
                line = key.start_mark.line + 1
                if name and name != "<<" and name in seen:
                    found.append((line, f"{where}{name}: repeated key (lines {seen[name]} and {line}); YAML "
                                        "would keep only the last"))
                seen.setdefault(name, line)
                todo.append((value, f"{where}{name}."))
        elif isinstance(node, yaml.SequenceNode):
            todo.extend((item, where) for item in node.value)
    return min(found)[1] if found else None


def _read(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise TaskSpecError(f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}); "
                            "save the file as UTF-8") from None
    except OSError as exc:
        raise TaskSpecError(f"{path}: cannot read the task file: {exc.strerror or exc}") from None
    try:
        raw = yaml.safe_load(text)
        repeated = _repeated_key(text)
    except yaml.YAMLError as exc:
        raise TaskSpecError(f"{path}: {_yaml_problem(exc)}") from None
    if repeated:
        raise TaskSpecError(f"{path}: {repeated}")
    if raw is None:
        raise TaskSpecError(f"{path}: the file is empty")
    return raw


def load_task(path: str | Path) -> TaskSpec:
    """Read and validate one task file (everything the module docstring lists).

    Args:
        path: the task's YAML file; its stem must be the task's ``name``.

    Returns:
        The frozen spec, with ``path`` set.

    Raises:
        TaskSpecError: one line, ``"<file>: <key>: <what>"``.
    """
    path = Path(path)
    raw = _read(path)
    spec = _build(TaskSpec, raw, str(path))
    if spec.name != path.stem:
        raise TaskSpecError(f"{path}: name {spec.name!r} must equal the file name {path.stem!r}")
    _check_semantics(spec, str(path))
    _check_datasets(spec, str(path))
    _check_protocol(spec, str(path))
    return dataclasses.replace(spec, path=str(path))


def task_files(tasks_dir: Path = TASKS_DIR) -> list[Path]:
    return sorted(tasks_dir.glob("*.yaml"))


def get_task(name: str, tasks_dir: str | Path | None = None) -> TaskSpec:
    """The task ``name`` from ``tasks_dir`` (default: the repository's ``tasks/``), loaded and validated.

    Raises:
        UnknownNameError: no ``<name>.yaml`` there (the message suggests close names).
        TaskSpecError: the file does not validate (the message names the file and the key).
    """
    from harness.registry import UnknownNameError, did_you_mean

    directory = Path(tasks_dir) if tasks_dir else TASKS_DIR
    path = directory / f"{name}.yaml"
    if not path.exists():
        names = sorted(p.stem for p in directory.glob("*.yaml"))
        raise UnknownNameError(f"unknown task {name!r}{did_you_mean(name, names)}")
    return load_task(path)
