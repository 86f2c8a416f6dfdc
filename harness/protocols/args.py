"""Protocol arguments: each protocol declares them once, and one helper checks values against that.

Every protocol module declares ``ARGS = ProtocolArgs(...)``: each argument it reads from
``ctx.args`` (name, type, default, allowed values or range, and when it applies), the metric
names it produces for given arguments, and what it needs from a task (labels, capabilities,
a label fraction of 1). The one declaration serves twice:

- at load time ``harness.tasks.load_task`` checks a task's ``protocol_args`` and every
  ``profile_args`` override against it (``harness validate``, ``run``, ``sweep``, ``submit``
  all load tasks through it), so a bad argument is one line naming the file and key before
  any work is done;
- at run time the protocol reads its arguments through ``ProtocolArgs.read`` (or
  ``resolve``): it never meets an unvalidated argument, and defaults live only here.

Problems are ``ArgError`` (a ``ValueError``) carrying the offending ``key`` and ``what`` is
wrong; callers put the file (``TaskSpecError``) or the protocol (``ProtocolError``) in front.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from harness.protocols.errors import ProtocolError
from harness.registry import did_you_mean

REQUIRED: Any = type("Required", (), {"__repr__": lambda self: "REQUIRED"})()  # an argument without a default
_KIND_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}

Rule = Callable[[dict[str, Any]], "tuple[str, str] | None"]  # resolved args -> (key, what is wrong) or None


class ArgError(ValueError):
    """A protocol argument (or a task key checked against the protocol) that is not acceptable."""

    def __init__(self, key: str, what: str) -> None:
        super().__init__(f"{key}: {what}")
        self.key, self.what = key, what


@dataclass(frozen=True)
class Arg:
    """One protocol argument.

    ``kind`` is the type of the value (or of every entry when ``many``): ``int``, ``float``,
    ``str`` or ``bool``. ``many`` arguments are non-empty lists of distinct entries (a repeated
    patch size, K or split means nothing). Bounds (``ge``, ``gt``, ``le``, ``lt``) and
    ``choices`` apply to each entry; ``check`` returns a complaint about an entry, or None.
    ``when`` says for which (resolved) arguments this one has an effect; given where it has
    none, it is an error (it would be silently ignored), ``when_doc`` says when it applies.
    """

    kind: type
    default: Any = REQUIRED
    help: str = ""
    many: bool = False
    optional: bool = False  # null (None) is allowed
    choices: tuple[Any, ...] = ()
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    check: Callable[[Any], str | None] | None = None
    when: Callable[[dict[str, Any]], bool] | None = None
    when_doc: str = ""

    def describe(self) -> str:
        """The accepted values in words, e.g. ``"a list of integers >= 1"``."""
        kind = _KIND_NAMES[self.kind]
        if self.many:
            kind = "a list of " + {int: "integers", float: "numbers", str: "strings", bool: "booleans"}[self.kind]
        bounds = [f"{op} {v:g}" for op, v in ((">=", self.ge), (">", self.gt), ("<=", self.le), ("<", self.lt))
                  if v is not None]
        text = " ".join([kind, *bounds]) if not self.choices else f"one of {list(self.choices)}"
        return text + (" or null" if self.optional else "")

    def validate(self, value: Any, key: str) -> Any:
        """``value`` checked and normalised (ints of a float argument become floats, lists stay lists).

        Raises:
            ArgError: the value does not fit the declaration.
        """
        if value is None:
            if self.optional:
                return None
            raise ArgError(key, f"expected {self.describe()}, got null")
        if not self.many:
            return self._entry(value, key)
        if not isinstance(value, list | tuple):
            raise ArgError(key, f"expected {self.describe()}, got {value!r}")
        if not value:
            raise ArgError(key, "expected a non-empty list")
        out = [self._entry(v, f"{key}[{i}]") for i, v in enumerate(value)]
        for i, v in enumerate(out):
            if v in out[:i]:
                raise ArgError(key, f"{v!r} is repeated")
        return out

    def _entry(self, value: Any, key: str) -> Any:
        value = self._typed(value, key)
        if self.choices and value not in self.choices:
            hint = did_you_mean(value, self.choices) if isinstance(value, str) else ""
            raise ArgError(key, f"{value!r} is not one of {list(self.choices)}{hint}")
        for op, bound, ok in ((">=", self.ge, lambda v, b: v >= b), (">", self.gt, lambda v, b: v > b),
                              ("<=", self.le, lambda v, b: v <= b), ("<", self.lt, lambda v, b: v < b)):
            if bound is not None and not ok(value, bound):
                raise ArgError(key, f"must be {op} {bound:g}, got {value!r}")
        problem = self.check(value) if self.check else None
        if problem:
            raise ArgError(key, problem)
        return value

    def _typed(self, value: Any, key: str) -> Any:
        wrong = ArgError(key, f"expected {_KIND_NAMES[self.kind]}, got {value!r}")
        if self.kind is bool:
            if not isinstance(value, bool):
                raise wrong
            return value
        if self.kind is str:
            if not isinstance(value, str):
                raise wrong
            return value
        if isinstance(value, bool):
            raise wrong
        if self.kind is int:
            if not isinstance(value, int):
                raise wrong
            return value
        if isinstance(value, str):
            try:
                float(value)
            except ValueError:
                raise wrong from None
            # YAML 1.1 reads 1e-4 (no dot) as a string: say so instead of a bare "got '1e-4'"
            raise ArgError(key, f"expected a number, got the string {value!r} (YAML reads exponents without a "
                                "dot as text: write 1.0e-4, not 1e-4)")
        if not isinstance(value, int | float):
            raise wrong
        if not math.isfinite(value):
            raise ArgError(key, f"must be a finite number, got {value!r}")
        return float(value)


@dataclass(frozen=True)
class ProtocolArgs:
    """What one protocol accepts and produces (see the module docstring).

    Args:
        protocol: the protocol's registry name (messages start with it).
        args: name -> ``Arg``, every argument the protocol reads.
        metrics: resolved args -> the metric names the protocol produces with them.
        rules: checks across arguments: resolved args -> ``(key, what)`` or None.
        needs_labels: the task must list labels.
        zero_shot: nothing is trained, so a label fraction other than 1 has no meaning.
        requires: resolved args -> the capabilities an encoder needs (a task's ``requires``
            must name them).
        task_rules: checks against the task: ``(task, resolved args) -> (key, what)`` or None.
    """

    protocol: str
    args: dict[str, Arg]
    metrics: Callable[[dict[str, Any]], Iterable[str]]
    rules: tuple[Rule, ...] = ()
    needs_labels: bool = False
    zero_shot: bool = False
    requires: Callable[[dict[str, Any]], Iterable[str]] = field(default=lambda args: ("image",))
    task_rules: tuple[Callable[[Any, dict[str, Any]], tuple[str, str] | None], ...] = ()

    def default(self, name: str) -> Any:
        """The declared default of ``name`` (a copy: list defaults are never shared)."""
        return copy.deepcopy(self.args[name].default)

    def resolve(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Every argument: ``given``'s checked values, else the defaults.

        Args:
            given: a task's ``protocol_args`` (with a profile's overrides applied).

        Returns:
            name -> value for every declared argument.

        Raises:
            ArgError: an unknown name (with "did you mean"), a missing required one, a wrong
                type or value, an argument given where it has no effect, or a broken rule.
        """
        if not isinstance(given, Mapping):
            raise ArgError("protocol_args", f"expected a mapping, got {type(given).__name__}")
        for name in given:
            if name not in self.args:
                hint = did_you_mean(str(name), self.args)
                raise ArgError(str(name), f"unknown protocol argument of {self.protocol}{hint}; "
                                          f"known: {', '.join(sorted(self.args))}")
        out: dict[str, Any] = {}
        for name, arg in self.args.items():
            if name in given:
                out[name] = arg.validate(given[name], name)
            elif arg.default is REQUIRED:
                raise ArgError(name, f"missing required protocol argument of {self.protocol} ({arg.describe()})")
            else:
                out[name] = self.default(name)
        for name, arg in self.args.items():
            if name in given and arg.when is not None and not arg.when(out):
                raise ArgError(name, f"has no effect here: it applies only with {arg.when_doc}")
        for rule in self.rules:
            problem = rule(out)
            if problem:
                raise ArgError(*problem)
        return out

    def produced(self, args: dict[str, Any]) -> list[str]:
        """The metric names the protocol produces with resolved ``args``."""
        return list(self.metrics(args))

    def check_task(self, task: Any, args: dict[str, Any]) -> None:
        """The task's metrics, main metric and labels against what the protocol does with ``args``.

        Args:
            task: a ``harness.tasks.TaskSpec``.
            args: resolved arguments (``resolve``).

        Raises:
            ArgError: keyed by the task key (``metrics``, ``main_metric``, ``labels``, ...).
        """
        produced = self.produced(args)
        bad = [m for m in task.metrics if m not in produced]
        if bad:
            raise ArgError("metrics", f"cannot compute metric(s) {bad}{did_you_mean(bad[0], produced)}; "
                                      f"{self.protocol} gives {sorted(produced)} with these arguments")
        if task.main_metric not in produced:
            raise ArgError("main_metric", f"{task.main_metric!r} is not produced by {self.protocol}")
        if self.needs_labels and not task.labels:
            raise ArgError("labels", f"task {task.name!r} lists no labels; {self.protocol} needs some")
        for rule in self.task_rules:
            problem = rule(task, args)
            if problem:
                raise ArgError(*problem)

    def check_fraction(self, fraction: float) -> None:
        """A zero-shot protocol takes only fraction 1.

        Raises:
            ArgError: keyed ``fraction``.
        """
        if self.zero_shot and fraction != 1:
            raise ArgError("fraction", f"{self.protocol} is zero-shot (nothing is trained): fraction {fraction:g} "
                                       "has no meaning")

    def read(self, ctx: Any) -> dict[str, Any]:
        """The protocol's arguments of a run, resolved, with the task and the fraction checked.

        Args:
            ctx: the ``harness.protocols.base.EvalContext`` of the run.

        Returns:
            ``resolve(ctx.args)``.

        Raises:
            ProtocolError: ``"<protocol>: <key>: <what>"``.
        """
        args = self.resolve_or_raise(ctx.args)
        self.check_run(ctx, args)
        return args

    def resolve_or_raise(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """``resolve``, problems raised as ``ProtocolError`` (for protocols that check more before ``check_run``)."""
        try:
            return self.resolve(given)
        except ArgError as exc:
            raise self.error(exc) from None

    def check_run(self, ctx: Any, args: dict[str, Any]) -> None:
        """``check_fraction`` and ``check_task`` for a run, problems raised as ``ProtocolError``."""
        try:
            self.check_fraction(ctx.fraction)
            self.check_task(ctx.task, args)
        except ArgError as exc:
            raise self.error(exc) from None

    def error(self, exc: ArgError) -> Exception:
        return ProtocolError(f"{self.protocol}: {exc}")


def declared(protocol: str) -> ProtocolArgs | None:
    """The declaration of a registered protocol (``harness.catalog.PROTOCOL_ARGS``), or None."""
    from harness.catalog import PROTOCOL_ARGS

    return PROTOCOL_ARGS.get(protocol) if protocol in PROTOCOL_ARGS else None
