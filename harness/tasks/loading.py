"""Task files: reading one (YAML, strictly) into a ``TaskSpec``, finding them by name.

The file itself is refused when it is unreadable, not UTF-8, not YAML, empty, or repeats
a key in a mapping (YAML would silently keep the last); unknown keys, missing keys and
wrong types are refused naming the key. ``load_task`` then runs every other check
(``harness.tasks.checks``).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from harness.storage import REPOSITORY
from harness.tasks.checks import check_task
from harness.tasks.spec import LabelPolicy, SplitSpec, TaskSpec, TaskSpecError

TASKS_DIR = REPOSITORY / "tasks"

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
    """Read and validate one task file (everything the ``harness.tasks`` docstring lists).

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
    check_task(spec, str(path))
    return dataclasses.replace(spec, path=str(path))


def task_files(tasks_dir: Path = TASKS_DIR) -> list[Path]:
    """The task files (``*.yaml``) of ``tasks_dir`` (default: the repository's ``tasks/``), sorted by name."""
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
