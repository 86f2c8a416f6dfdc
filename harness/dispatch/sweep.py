"""Sweeps: methods x tasks x label fractions x seeds, as submitit job arrays.

::

    python -m harness sweep --methods random,moco --tasks mock --profile smoke --executor local
    python -m harness sweep --methods moco --tasks mimic-cls,chexpert-cls --fractions 0.01,1 \\
        --seeds 0,1,2 --executor slurm --slurm-config cluster.yaml --array-parallelism 8

Two stages. First one pretraining job per distinct pretraining (method, resolved config,
the task's training rows: dataset, views, split), as one array; then the evaluations,
which find their pretraining in the cache. On Slurm the evaluations are submitted at once
with ``--dependency=afterok:<pretraining job>`` (an array per pretraining); elsewhere they
start when the pretraining stage has finished. When a pretraining job fails its
evaluations are cancelled and reported failed with its log; any other failure stops
nothing else.

Failures: every failed cell is printed in the summary with its reason (one line for an
expected mistake; an unexpected error's type and message, its traceback in the log) and
gets a JSON failure record under ``<results>/failed/`` (``harness.dispatch.failures``), which the
leaderboard and ``regress`` never read; the exit code is 1. Cells refused while planning
(an unknown method or task, a bad ``--set``) are failed cells too, standing for all their
fractions and seeds. A method that lacks a capability a task requires is different: the
combination can never run, so the whole sweep is refused before any job (one line, exit 2),
as ``harness run`` and ``harness submit`` refuse it.

Skipping (``--skip-existing``, the default): a run's record path needs the encoder's
weights hash, known only after loading, so a cell is skipped when the results directory
already holds a record with the same method, task, task version, fraction, seed, profile,
data source (synthetic or real), resolved method config and protocol arguments, AND the
same data (``harness.results.data_fingerprint``: the dataset fingerprint and the synthetic
world). The data is read (records only, no images) for the tasks that have such a
candidate record, once per task; a record of other data (another world, a changed real
dataset, an older record that does not name its world) never makes a cell skip, and when
the data cannot be read the cell runs (and says why if it fails).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass, field
from typing import Any

from harness.config import config_hash
from harness.dispatch import executors, failures, outcomes
from harness.dispatch.failures import Failure
from harness.dispatch.jobs import RunJob
from harness.dispatch.pretraining import add_pretrain_on_argument, effective_pretrain_on, uses_labels
from harness.dispatch.runner import RunError, RunRequest
from harness.tasks import TaskSpecError, get_task

STATUSES = ("done", "failed", "skipped")


def _list(values: list[str] | None, kind: type, option: str) -> list | None:
    """``["0.1,1", "0.5"]`` -> ``[0.1, 1.0, 0.5]``: spaces or commas both separate items."""
    if values is None:
        return None
    try:
        return [kind(x) for v in values for x in str(v).split(",") if x.strip()]
    except ValueError:
        raise RunError(f"{option}: expected {kind.__name__} values, got {' '.join(map(str, values))!r}") from None


def add_sweep_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``harness sweep`` options; add the executor options with ``executors.add_executor_arguments``."""
    parser.add_argument("--methods", nargs="+", required=True, help="method names (spaces or commas)")
    parser.add_argument("--tasks", nargs="+", required=True, help="task names (spaces or commas)")
    parser.add_argument("--fractions", nargs="+", default=None,
                        help="label fractions, e.g. 0.01 0.1 1 (default: each task's own list)")
    parser.add_argument("--seeds", nargs="+", default=None, help="e.g. 0 1 2 (default: each task's own list)")
    parser.add_argument("--profile", choices=("smoke", "small", "paper"), default=None,
                        help="default: small on synthetic data, paper on real data")
    parser.add_argument("--skip-existing", action=argparse.BooleanOptionalAction, default=True,
                        help="skip runs whose record exists (see `harness.dispatch.sweep` for the criterion)")
    add_pretrain_on_argument(parser)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="set",
                        help="method config override for every run, e.g. --set epochs=5 (repeatable)")
    parser.add_argument("--data-root", default=None, help="datasets in their original layouts "
                        "(default: HARNESS_DATA_ROOT, else the embedded synthetic world)")
    parser.add_argument("--results", default="results", help="results directory")
    parser.add_argument("--tasks-dir", default=None, help="task YAML directory (default: the built-in tasks/)")


@dataclass
class Cell:
    """One run of the grid and what became of it."""

    request: RunRequest
    status: str = "pending"  # pending | done | failed | skipped
    detail: str = ""  # record path, or the existing record that made it skip
    log: str = ""
    error: str = ""  # when failed: the reason (harness.dispatch.failures.Failure.summary)
    group: str = ""  # pretraining group key
    failure: Any = None  # harness.dispatch.failures.Failure, when failed
    stage: str = "run"  # where it failed: plan (refused before expansion), pretrain or run
    failure_record: Any = None  # its JSON record under the results directory (Path), once written
    job_id: str = ""


@dataclass
class Plan:
    cells: list[Cell] = field(default_factory=list)
    groups: dict[str, RunRequest] = field(default_factory=dict)  # pretraining key -> its request


def _identity(req: RunRequest, task: Any, profile: str, config: dict[str, Any], data_source: str) -> dict:
    """What a record must match for its cell to be skipped (see the module docstring); ``req.pretrain_on``
    is already the effective one (``pretraining.effective_pretrain_on``)."""
    return {"method": req.method, "task": task.name, "task_version": task.version, "fraction": req.fraction,
            "seed": req.seed, "profile": profile, "data_source": data_source,
            "config_method": config_hash(config), "protocol_args": config_hash(task.args_for(profile)),
            "pretrain_dataset": req.pretrain_on or task.dataset}


def _record_identity(rec: dict[str, Any]) -> dict:
    cfg = rec.get("config") or {}
    return {"method": rec.get("method"), "task": rec.get("task"), "task_version": rec.get("task_version"),
            "fraction": rec.get("fraction"), "seed": rec.get("seed"), "profile": rec.get("profile"),
            "data_source": rec.get("data_source"), "config_method": config_hash(cfg.get("method")),
            "protocol_args": config_hash(cfg.get("protocol_args")),
            "pretrain_dataset": (rec.get("pretrain") or {}).get("dataset") or rec.get("dataset")}


def _existing(results_dir: str) -> dict[str, dict[str, str]]:
    """config_hash(identity) -> {data fingerprint: a record file}, for every readable record under results_dir."""
    from pathlib import Path

    from harness.results import data_fingerprint, load_records, record_path

    records, _ = load_records(results_dir)
    out: dict[str, dict[str, str]] = {}
    for rec in records:
        try:
            path = str(record_path(Path(results_dir), rec))
            out.setdefault(config_hash(_record_identity(rec)), {})[data_fingerprint(rec)] = path
        except (KeyError, TypeError):
            continue
    return out


def _data_fingerprint(task: Any, data_root: str | None) -> str | None:
    """The ``data_fingerprint`` a run of ``task`` would record now; None when the data cannot be read.

    The run's own computation (``harness.cohort.dataset_fingerprint`` of the task's datasets' records,
    and ``harness.data.sources.data_world``), from the records alone: no image is read.
    """
    from harness.cohort import dataset_fingerprint
    from harness.data.schema import DataError
    from harness.data.sources import data_world, load_records, task_data_root
    from harness.results import data_fingerprint

    try:
        root = task_data_root(task, data_root)
        records = [load_records(d, root) for d in (task.dataset, task.eval_dataset) if d]
        world = data_world(root)
    except (DataError, OSError, KeyError, ValueError):
        return None  # the cell runs, and its run says what is wrong with the data
    return data_fingerprint({"dataset_fingerprint": dataset_fingerprint(*records), "world": world})


def _data_sources(data_root: str | None) -> Any:
    """``task -> "synthetic" | "real"``, resolving the data root once and only for a task that needs one.

    As in ``runner.prepare``, a self-contained dataset (the unit-test ``mock``) needs no data root,
    so a sweep of such tasks neither generates the default synthetic world nor checks ``--data-root``.

    Raises (from the returned function):
        DataError: the data root does not resolve (one line, exit 2 through the CLI: never a cell).
    """
    from harness.data.sources import needs_data_root, task_data_root

    resolved: list[str] = []

    def source_of(task: Any) -> str:
        if not needs_data_root(task):
            return "synthetic"
        if not resolved:
            resolved.append(task_data_root(task, data_root).data_source)
        return resolved[0]

    return source_of


def plan_sweep(args: argparse.Namespace) -> Plan:
    """Expand the grid; mark skipped and unrunnable cells; group the rest by pretraining."""
    from harness.data.schema import DataError
    from harness.dispatch import runner

    source_of = _data_sources(args.data_root)
    existing = _existing(args.results) if args.skip_existing else {}
    plan = Plan()
    fractions = _list(args.fractions, float, "--fractions")
    seeds = _list(args.seeds, int, "--seeds")
    data_now: dict[str, str | None] = {}  # task -> its data fingerprint, read only when a record could match
    incapable = []
    for method_name in _list(args.methods, str, "--methods"):
        for task_name in _list(args.tasks, str, "--tasks"):
            base = RunRequest(method=method_name, task=task_name, profile=args.profile, data_root=args.data_root,
                              results_dir=args.results, overrides=list(args.set or []), progress=False,
                              tasks_dir=args.tasks_dir, pretrain_on=args.pretrain_on)
            try:  # refusals that need no data: unknown names, bad profile, bad --set
                task = get_task(task_name, args.tasks_dir)
                method = runner.load_method(method_name)
                data_source = source_of(task)
                profile = args.profile or ("small" if data_source == "synthetic" else "paper")
                config = runner.method_config(method, profile, base.overrides)
                base = dataclasses.replace(base, pretrain_on=effective_pretrain_on(method, task,
                                                                                          base.pretrain_on))
            except (TaskSpecError, DataError):
                # a malformed task file, or the data root itself: every cell would fail the same way, so the
                # whole sweep stops before any work with one line and exit 2, as `run`
                raise
            except (RunError, KeyError, ValueError) as exc:
                failure = Failure.from_exception(exc)
                plan.cells.append(Cell(base, status="failed", error=failure.summary(), failure=failure, stage="plan"))
                continue
            why = outcomes.capability_refusal(method, task)
            if why:
                incapable.append(why)
                continue
            failures.clear_failure(base, expanded=False)  # a refusal of this (method, task) is over
            # a label-supervised method pretrains once per task's labels, never once for several tasks
            labels = [task.name, list(task.labels), dataclasses.asdict(task.label_policy)] if uses_labels(method) \
                else None
            group = config_hash([method_name, config, base.pretrain_on or task.dataset, task.views,
                                 dataclasses.asdict(task.split), task.eval_dataset is not None, args.data_root,
                                 *([labels] if labels else [])])[:16]
            for fraction in fractions or task.fractions:
                for seed in seeds or task.seeds:
                    req = dataclasses.replace(base, fraction=float(fraction), seed=int(seed))
                    cell = Cell(req, group=group)
                    candidates = existing.get(config_hash(_identity(req, task, profile, config, data_source)), {})
                    if candidates and task.name not in data_now:
                        data_now[task.name] = _data_fingerprint(task, args.data_root)
                    now = data_now.get(task.name)
                    found = candidates.get(now) if now else None
                    if found:
                        cell.status, cell.detail = "skipped", found
                    else:
                        plan.groups.setdefault(group, req)
                    plan.cells.append(cell)
    if incapable:  # known before any job, and never runnable: refuse the grid as asked, like `run` and `submit`
        raise RunError("; ".join(incapable) + " (nothing was submitted: drop those from --methods / --tasks)")
    return plan


def _finish(cell: Cell, outcome: outcomes.JobOutcome) -> None:
    cell.status = outcome.status
    cell.detail = str(outcome.record_path or "")
    cell.log = str(outcome.stderr or "")
    cell.error = outcome.error
    cell.failure = outcome.failure
    cell.job_id = outcome.job_id


def _pretraining_failed(cell: Cell, outcome: outcomes.JobOutcome) -> None:
    cell.status, cell.log, cell.stage, cell.job_id = "failed", str(outcome.stderr or ""), "pretrain", outcome.job_id
    cell.failure = dataclasses.replace(outcome.failure,
                                       reason=f"its pretraining job failed: {outcome.failure.reason}")
    cell.error = cell.failure.summary()


def record_failures(cells: list[Cell]) -> None:
    """Each failed cell gets its failure record (``harness.dispatch.failures``); a done one loses a stale one."""
    for cell in cells:
        if cell.status == "done":
            failures.clear_failure(cell.request)
        elif cell.status == "failed" and cell.failure is not None:
            cell.failure_record = failures.write_failure(cell.request, cell.failure, stage=cell.stage,
                                                         job_id=cell.job_id, log=cell.log or None,
                                                         expanded=cell.stage != "plan")


def _run_stages(plan: Plan, args: argparse.Namespace) -> None:
    """Pretraining array, then evaluations (Slurm: afterok dependencies; else after the stage)."""
    keys = list(plan.groups)
    pre_exec = executors.make_executor(args)
    pre_calls = [RunJob(plan.groups[k], stage="pretrain") for k in keys]
    pending = {k: [c for c in plan.cells if c.status == "pending" and c.group == k] for k in keys}
    if args.executor == "slurm":
        pre_jobs = outcomes.submit(pre_exec, pre_calls)
        eval_jobs: dict[str, list] = {}
        for key, job in zip(keys, pre_jobs, strict=True):
            ex = executors.make_executor(args, tasks_per_node=1, dependency=f"afterok:{job.job_id}")
            eval_jobs[key] = outcomes.submit(ex, [RunJob(c.request) for c in pending[key]])
        outcomes.wait_for(pre_jobs, desc="pretraining")
        for key, job in zip(keys, pre_jobs, strict=True):
            pre = outcomes.outcome_of(job, plan.groups[key], stage="pretrain")
            if pre.status == "failed":  # afterok never fires: cancel rather than wait forever
                for cell, ejob in zip(pending[key], eval_jobs.pop(key), strict=True):
                    ejob.cancel(check=False)
                    _pretraining_failed(cell, pre)
        flat = [(c, j) for k, jobs in eval_jobs.items() for c, j in zip(pending[k], jobs, strict=True)]
        outcomes.wait_for([j for _, j in flat], desc="evaluations")
        for cell, job in flat:
            _finish(cell, outcomes.outcome_of(job, cell.request))
        return
    pre_jobs = outcomes.run_jobs(pre_exec, pre_calls, args, desc="pretraining")
    runnable: list[Cell] = []
    for key, job in zip(keys, pre_jobs, strict=True):
        pre = outcomes.outcome_of(job, plan.groups[key], stage="pretrain")
        for cell in pending[key]:
            if pre.status == "failed":
                _pretraining_failed(cell, pre)
            else:
                runnable.append(cell)
    eval_exec = executors.make_executor(args, tasks_per_node=1)
    jobs = outcomes.run_jobs(eval_exec, [RunJob(c.request) for c in runnable], args, desc="evaluations")
    for cell, job in zip(runnable, jobs, strict=True):
        _finish(cell, outcomes.outcome_of(job, cell.request))


def summary(cells: list[Cell]) -> str:
    """A table of every cell, then each failure's log and last error lines."""
    from tabulate import tabulate

    def grid(c: Cell) -> tuple[str, str]:  # a cell refused before expansion stands for all its runs
        return (f"{c.request.fraction:g}", str(c.request.seed)) if c.group else ("*", "*")

    rows = [(c.status, c.request.method, c.request.task, *grid(c),
             c.detail if c.status != "failed" else c.log or "(not submitted)") for c in cells]
    counts = ", ".join(f"{sum(c.status == s for c in cells)} {s}" for s in STATUSES)
    out = [tabulate(rows, headers=("status", "method", "task", "fraction", "seed", "record / log")), counts]
    for c in cells:
        if c.status == "failed":
            r = c.request
            fraction, seed = grid(c)
            record = [f"failure record: {c.failure_record}"] if c.failure_record else []
            out.append(f"\nFAILED {r.method} x {r.task} f={fraction} s={seed}"
                       + (f" (log: {c.log})" if c.log else "") + "\n" + "\n".join(
                           "    " + line for line in [*c.error.splitlines(), *record]))
    return "\n".join(out)


def run_sweep(args: argparse.Namespace) -> int:
    """Run the grid; print the summary. Exit code 0 when nothing failed, else 1."""
    plan = plan_sweep(args)
    todo = sum(c.status == "pending" for c in plan.cells)
    print(f"sweep: {len(plan.cells)} runs, {todo} to run in {len(plan.groups)} pretraining group(s), "
          f"{sum(c.status == 'skipped' for c in plan.cells)} skipped (record exists), executor {args.executor}",
          file=sys.stderr)
    if todo:
        _run_stages(plan, args)
    record_failures(plan.cells)
    print(summary(plan.cells))
    return 1 if any(c.status == "failed" for c in plan.cells) else 0
