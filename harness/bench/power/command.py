"""``python -m harness power``: its options, and the run that measures the grid and writes ``docs/power.md``."""

from __future__ import annotations

import argparse
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.bench.power.document import check_target, render
from harness.bench.power.measure import Grid, pair_with_reference, request, run_cell
from harness.bench.power.sizes import TaskSizes, task_sizes

DEFAULT_METHODS = ("random", "pixels", "imagenet")  # no learning at all, raw pixels, an informative encoder


def add_power_arguments(p: argparse.ArgumentParser) -> None:
    """The ``harness power`` options."""
    p.add_argument("--out", default=None, help="write the markdown document here (e.g. docs/power.md)")
    p.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS),
                   help=f"registered methods (default: {' '.join(DEFAULT_METHODS)}); each runs on every task it "
                        "is capable of")
    p.add_argument("--tasks", nargs="+", default=None, help="default: every task file except the unit-test mock")
    p.add_argument("--reference", default="random",
                   help="the row every other method is paired with (default: random)")
    p.add_argument("--profile", choices=("smoke", "small", "paper"), default=None,
                   help="default: small on synthetic data (the profile the CI target is stated for), paper on real")
    p.add_argument("--fraction", type=float, default=1.0, help="label fraction of every run (default 1)")
    p.add_argument("--seed", type=int, default=0, help="evaluation seed of every run (default 0)")
    p.add_argument("--data-root", default=None, help="default: the embedded synthetic world (generated on first use)")
    p.add_argument("--results", default="results", help="where the runs' records go (default: results/)")
    p.add_argument("--tasks-dir", default=None, metavar="DIR", help="folder of task files (default: tasks/)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")


def _methods(names: list[str]) -> dict[str, Any]:
    """name -> loaded method, for every name; an unknown one is the registry's one-line error, before any run."""
    from harness.dispatch.runner import load_method
    from harness.encoders.submission import register_plugins

    register_plugins()
    return {name: load_method(name) for name in dict.fromkeys(names)}


def _tasks(names: list[str] | None, tasks_dir: str | None) -> list[Any]:
    from harness.tasks import get_task, load_task, task_files

    if names:
        return [get_task(n, tasks_dir) for n in dict.fromkeys(names)]
    files = task_files(Path(tasks_dir)) if tasks_dir else task_files()
    return [t for t in (load_task(p) for p in files) if t.dataset != "mock"]


def _sizes(grid: Grid, methods: dict[str, Any], task: Any) -> TaskSizes | str:
    """The task's sizes from its cohort as the first capable method's run builds it, or why there are none."""
    from harness.dispatch.failures import expected_types
    from harness.dispatch.outcomes import capability_refusal
    from harness.dispatch.runner import prepare, protocol_args
    from harness.protocols.args import declared

    capable = [n for n, m in methods.items() if not capability_refusal(m, task)]
    if not capable:
        return "no listed method is capable of it"
    try:
        prepared = prepare(request(grid, capable[0], task.name))
        decl = declared(task.protocol)
        args = protocol_args(prepared)
        return task_sizes(prepared.data, decl.resolve(args) if decl is not None else args)
    except Exception as exc:
        if not isinstance(exc, expected_types()):
            raise
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"


def _about(grid: Grid, command: str) -> dict[str, Any]:
    """Who, where and what: the header of the document (from the records when there are any)."""
    import harness
    from harness.bench.measure import machine
    from harness.data.sources import data_world, task_data_root
    from harness.dispatch.runner import resolve_device
    from harness.results import git_commit, world_label

    done = [c.record for c in grid.cells if c.record is not None]
    if done:
        source, world, profile = done[0]["data_source"], world_label(done[0]), done[0]["profile"]
    else:
        root = task_data_root(grid.tasks[0], grid.data_root)
        source = root.data_source
        world = world_label({"world": data_world(root)})
        profile = grid.profile or ("small" if source == "synthetic" else "paper")
    info = machine()
    return {"command": command, "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "harness": harness.__version__, "commit": git_commit(), "device": resolve_device(grid.device),
            "machine": f"{info['cpu']}, {info['cores']} cores ({info['usable_cores']} usable), torch {info['torch']} "
                       f"with {info['torch_threads']} thread(s)",
            "world": world, "data_source": source, "profile": profile}


def run_power(grid: Grid, command: str, out: str | Path | None = None) -> tuple[str, str]:
    """Measure ``grid`` (sizes, then every cell, then the paired gains) and return ``(document, target line)``.

    Raises:
        UnknownNameError: a method that is not registered (before any run).
    """
    methods = _methods(grid.methods)
    sizes = []
    for task in grid.tasks:
        print(f"power: {task.name}: sizes", file=sys.stderr, flush=True)
        sizes.append(_sizes(grid, methods, task))
        cells = []
        for name, method in methods.items():
            print(f"power: {task.name}: {name}", file=sys.stderr, flush=True)
            cells.append(run_cell(grid, method, name, task))
        pair_with_reference(grid, cells)
        grid.cells.extend(cells)
    about = _about(grid, command)
    _, about["target_line"] = check_target(grid, about["profile"])
    text = render(grid, sizes, about)
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text)
    return text, about["target_line"]


def cmd_power(args: argparse.Namespace) -> int:
    """``harness power``: measure, write ``--out`` (else print the document); 1 when a cell failed, else 0.

    A target that is not met is reported (``FAIL: ...``), not an exit code: this is a measurement.
    """
    from harness.dispatch.runner import RunError, invocation
    from harness.tasks import TaskSpecError

    grid = Grid(methods=list(args.methods), tasks=_tasks(args.tasks, args.tasks_dir), fraction=args.fraction,
                seed=args.seed, profile=args.profile, data_root=args.data_root, results_dir=args.results,
                tasks_dir=args.tasks_dir, progress=not args.quiet, reference=args.reference, device=args.device)
    if not grid.tasks:
        raise TaskSpecError("power: no task to measure")
    if not 0 < args.fraction <= 1:
        raise RunError(f"--fraction must be in (0, 1], got {args.fraction}")
    if args.reference not in grid.methods:  # the paired column needs the reference row's runs
        print(f"power: --reference {args.reference} is not in --methods; it is run too", file=sys.stderr)
        grid.methods.insert(0, args.reference)
    command = shlex.join(invocation() or ["python", "-m", "harness", "power", *sys.argv[2:]])
    text, target = run_power(grid, command, args.out)
    print(target)
    if args.out is None:
        print(text, end="")
    else:
        print(f"wrote {args.out}")
    failed = [c for c in grid.cells if c.status == "failed"]
    for c in failed:
        print(f"FAILED {c.method} on {c.task}: {c.why}", file=sys.stderr)
    return 1 if failed else 0
