"""Dispatch runs with submitit: in-process (``debug``), local subprocesses (``local``) or Slurm.

submitit is the one dispatch path; the job callable is the same everywhere::

    python -m harness run --method random --task mock --executor debug      # in this process
    python -m harness run --method moco --task mock --executor local        # a subprocess
    python -m harness run --method moco --task mimic-cls --executor slurm \\
        --partition gpu --gpus-per-node 1 --time-min 240 --slurm-config cluster.yaml

Cluster names, accounts and paths come from the command line or a ``--slurm-config``
YAML (same keys as the options, underscores for dashes; the command line wins), never
from this file.

Requeue and resume: ``RunJob`` is a ``submitit.helpers.Checkpointable``. On
preemption or timeout submitit calls ``RunJob.checkpoint`` and requeues the returned
submission (the same request). Nothing needs pickling beyond the request because the
state lives on disk: pretraining resumes from ``checkpoint.pt`` in its pretraining
workdir (``harness.dispatch.pretraining.pretrained_checkpoint``), and a finished pretraining is a
cache hit.

Failures: a failed job's ``JobOutcome`` carries a ``harness.dispatch.failures.Failure`` (the one-line
reason of an expected mistake; an unexpected error's type, message and traceback), taken from
the exception in debug jobs, from what the worker left next to its logs in other processes
(submitit returns only traceback text), else from that text; ``dispatch_runs`` writes a
failure record for it (``harness.dispatch.failures``). A request whose method lacks a capability its
task requires is refused before any job.

Several tasks per node (``--tasks-per-node N``) run pretraining under torch.distributed:
each task exports the torchrun variables (``TorchDistributedEnvironment().export()``),
joins one process group (gloo on CPU, nccl on CUDA) and pretrains its shard; rank 0
alone then evaluates and writes the record.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit
import yaml

from harness.dispatch.runner import RunOutcome, RunRequest
from harness.storage import REPOSITORY
from harness.tasks import get_task

log = logging.getLogger("harness")

EXECUTORS = ("debug", "local", "slurm")
# --slurm-config keys -> type (the same names as the options, with underscores)
SLURM_KEYS: dict[str, type] = {
    "partition": str, "account": str, "qos": str, "constraint": str, "gpus_per_node": int,
    "cpus_per_task": int, "mem_gb": float, "time_min": int, "tasks_per_node": int, "slurm_extra": dict,
    "array_parallelism": int,
}
DEFAULT_TIME_MIN = 24 * 60  # submitit's own defaults (2 min local, 5 min Slurm) would kill real runs
ERROR_LINES = 12


class DispatchError(ValueError):
    """Bad executor options (e.g. a --slurm-config key); the message names the option or file."""


# ---------------------------------------------------------------------------------------------- options

def add_executor_arguments(parser: argparse.ArgumentParser) -> None:
    """The executor options shared by ``harness run`` and ``harness sweep``."""
    g = parser.add_argument_group("dispatch (submitit)")
    g.add_argument("--executor", choices=EXECUTORS, default="debug",
                   help="debug: in this process (tests, debugging); local: subprocesses on this machine; "
                        "slurm: sbatch jobs / job arrays")
    g.add_argument("--logs", default=None, metavar="DIR",
                   help="submitit folder: one sub-folder per job with its stdout/stderr and pickles "
                        "(default: <results>/logs)")
    g.add_argument("--array-parallelism", type=int, default=None, metavar="N",
                   help="at most N jobs at once (Slurm: the array's %%N; local: N subprocesses, default 1 "
                        "since each trains with every core)")
    g.add_argument("--tasks-per-node", type=int, default=None, metavar="N",
                   help="N processes per pretraining job under torch.distributed (one per GPU)")
    s = parser.add_argument_group("slurm (with --executor slurm; any also in --slurm-config)")
    s.add_argument("--slurm-config", metavar="FILE",
                   help="YAML with any of: " + ", ".join(SLURM_KEYS) + " (the command line wins)")
    s.add_argument("--partition")
    s.add_argument("--account")
    s.add_argument("--qos")
    s.add_argument("--constraint", help="sbatch --constraint (node features, e.g. a GPU type)")
    s.add_argument("--gpus-per-node", type=int)
    s.add_argument("--cpus-per-task", type=int)
    s.add_argument("--mem-gb", type=float)
    s.add_argument("--time-min", type=int,
                   help=f"wall-clock limit per job (default {DEFAULT_TIME_MIN}); a timeout requeues the job, "
                        "which resumes from its checkpoints")
    s.add_argument("--slurm-extra", action="append", default=[], metavar="KEY=VALUE",
                   help="any other sbatch parameter, e.g. --slurm-extra reservation=ml (repeatable)")


def _parse_extra(items: Sequence[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise DispatchError(f"--slurm-extra expects KEY=VALUE, got {item!r}")
        out[key.strip().replace("-", "_")] = value
    return out


def resolved_options(args: argparse.Namespace) -> dict[str, Any]:
    """The executor options: ``--slurm-config`` values overridden by the command line.

    Raises:
        DispatchError: an unreadable config, an unknown key or a value of the wrong type.
    """
    opts: dict[str, Any] = {}
    if getattr(args, "slurm_config", None):
        path = Path(args.slurm_config)
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise DispatchError(f"--slurm-config {path}: {exc}") from None
        if not isinstance(raw, dict):
            raise DispatchError(f"--slurm-config {path}: expected a mapping of {list(SLURM_KEYS)}")
        for key, value in raw.items():
            key = str(key).replace("-", "_")
            if key not in SLURM_KEYS:
                from harness.registry import did_you_mean

                raise DispatchError(f"--slurm-config {path}: unknown key {key!r}{did_you_mean(key, list(SLURM_KEYS))}")
            kind = SLURM_KEYS[key]
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise DispatchError(f"--slurm-config {path}: {key}: expected {kind.__name__}, got {value!r}")
            opts[key] = {str(k): str(v) for k, v in value.items()} if kind is dict else value
    for key in SLURM_KEYS:
        value = getattr(args, key, None)
        if key == "slurm_extra":
            opts["slurm_extra"] = {**opts.get("slurm_extra", {}), **_parse_extra(value or [])}
        elif value is not None:
            opts[key] = value
    return opts


# ---------------------------------------------------------------------------------------------- executors

def _pythonpath_setup() -> list[str]:
    """Jobs unpickle ``harness.dispatch.executors.RunJob``: put this checkout on their path (installed or not)."""
    root = REPOSITORY
    return [f'export PYTHONPATH="{root}${{PYTHONPATH:+:$PYTHONPATH}}"']


def make_executor(args: argparse.Namespace, *, tasks_per_node: int | None = None,
                  dependency: str | None = None) -> submitit.Executor:
    """A submitit executor for ``args.executor`` with the resolved options.

    Args:
        args: parsed arguments from ``add_executor_arguments``.
        tasks_per_node: override (the sweep asks for 1 on evaluation jobs).
        dependency: a Slurm dependency such as ``afterok:123_0`` (ignored by other executors).
    """
    opts = resolved_options(args)
    logs = args.logs or Path(getattr(args, "results", None) or "results") / "logs"
    folder = Path(logs) / "%j"
    ntasks = tasks_per_node or opts.get("tasks_per_node") or 1
    if args.executor == "debug":
        if ntasks > 1:
            raise DispatchError("--tasks-per-node > 1 needs --executor local or slurm (debug is one process)")
        return submitit.DebugExecutor(folder=folder)
    if args.executor == "local":
        executor: submitit.Executor = submitit.LocalExecutor(folder=folder)
        executor.update_parameters(timeout_min=opts.get("time_min", DEFAULT_TIME_MIN), tasks_per_node=ntasks,
                                   gpus_per_node=opts.get("gpus_per_node", 0), setup=_pythonpath_setup())
        return executor
    if args.executor != "slurm":
        raise DispatchError(f"unknown executor {args.executor!r}; choose from {EXECUTORS}")
    if shutil.which("srun") is None:  # submitit's SlurmExecutor needs it; say so in one line
        raise DispatchError("--executor slurm: no `srun` on PATH, so this machine cannot submit Slurm jobs "
                            "(run on a Slurm login node, or use --executor local)")
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=3)
    executor.update_parameters(**slurm_parameters(opts, ntasks, dependency))
    return executor


def slurm_parameters(opts: dict[str, Any], tasks_per_node: int, dependency: str | None = None) -> dict[str, Any]:
    """submitit's Slurm parameters (``AutoExecutor.update_parameters``) for the resolved options.

    Every option becomes one ``#SBATCH`` line of the job script (the ``slurm`` tests read the
    script submitit writes); the rest go through ``slurm_additional_parameters``.
    """
    extra = dict(opts.get("slurm_extra", {}))
    if dependency:
        extra["dependency"] = dependency
    params: dict[str, Any] = {
        "name": "harness", "timeout_min": opts.get("time_min", DEFAULT_TIME_MIN), "nodes": 1,
        "tasks_per_node": tasks_per_node, "slurm_setup": _pythonpath_setup(),
        "slurm_additional_parameters": extra,
    }
    for key, target in (("gpus_per_node", "gpus_per_node"), ("cpus_per_task", "cpus_per_task"),
                        ("mem_gb", "mem_gb"), ("partition", "slurm_partition"), ("account", "slurm_account"),
                        ("qos", "slurm_qos"), ("constraint", "slurm_constraint"),
                        ("array_parallelism", "slurm_array_parallelism")):
        if opts.get(key) is not None:
            params[target] = opts[key]
    return params


# ---------------------------------------------------------------------------------------------- the job

def _join_process_group(device: str) -> bool:
    """Inside a multi-task submitit job (or under torchrun): export the torchrun variables, join.

    Returns True when this process joined a group of more than one process.
    """
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return dist.get_world_size() > 1
    if "WORLD_SIZE" not in os.environ:
        try:
            env = submitit.JobEnvironment()
        except RuntimeError:  # not inside a submitit job
            return False
        if env.num_tasks <= 1:
            return False
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    cuda = torch.cuda.is_available() and device != "cpu"
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if cuda else "gloo", init_method="env://")
    return True


class RunJob(submitit.helpers.Checkpointable):
    """The submitit callable for one run: ``harness.dispatch.runner.execute`` (or its pretraining half).

    Args:
        request: the run.
        stage: ``"run"`` (pretrain if needed, evaluate, write the record) or ``"pretrain"``
            (``harness.dispatch.runner.pretrain_only``: fill the pretraining cache only).

    Returns (when called) the ``RunOutcome`` for ``"run"``, the checkpoint path (or None)
    for ``"pretrain"``; ranks other than 0 of a distributed job return None.
    """

    def __init__(self, request: RunRequest, stage: str = "run") -> None:
        if stage not in ("run", "pretrain"):
            raise ValueError(f"stage must be 'run' or 'pretrain', got {stage!r}")
        self.request = request
        self.stage = stage
        self.requeues = 0

    def __call__(self) -> RunOutcome | Path | None:
        try:
            return self._run()
        except Exception as exc:
            _leave_failure(exc)  # for the parent process: the exception itself does not travel back
            raise

    def _run(self) -> RunOutcome | Path | None:
        from harness.dispatch import runner

        distributed = _join_process_group(self.request.device)
        try:
            if not distributed:
                return runner.execute(self.request) if self.stage == "run" else runner.pretrain_only(self.request)
            import torch.distributed as dist

            ckpt = runner.pretrain_only(self.request)  # every rank trains its shard
            dist.barrier()
            if dist.get_rank() != 0:
                return None
            if self.stage == "pretrain":
                return ckpt
            dist.destroy_process_group()  # evaluation is single-process; pretraining is now a cache hit
            distributed = False
            return runner.execute(self.request)
        finally:
            if distributed:
                import torch.distributed as dist

                dist.destroy_process_group()

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """Requeue the same request: its state (pretraining checkpoints, caches) is on disk.

        submitit calls this on preemption/timeout and resubmits what it returns.
        """
        log.warning("requeueing %s %s/%s (requeue %d): it resumes from its checkpoints", self.stage,
                    self.request.method, self.request.task, self.requeues + 1)
        self.requeues += 1
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)

    def __repr__(self) -> str:
        r = self.request
        return f"RunJob({self.stage}: {r.method} x {r.task} f={r.fraction:g} s={r.seed})"


# ---------------------------------------------------------------------------------------------- outcomes

def _failure_file(paths: Any) -> Path:
    """Where a job's worker leaves the description of its failure (next to its logs; not ``*.json``, since the
    logs default to ``<results>/logs`` and ``harness.results.load_records`` reads every ``*.json`` there)."""
    return Path(paths.folder) / f"{paths.job_id}_{paths.task_id}_failure.jsonl"


def _leave_failure(exc: BaseException) -> None:
    """Inside a submitit job: write ``Failure.from_exception(exc)`` for the parent to read.

    submitit hands the parent only the worker's traceback text; the failure written here says
    exactly whether the error was an expected mistake and what its one-line reason is.
    Outside a job (or where the folder cannot be written) nothing is left; the parent then
    reads the traceback text (``Failure.from_job_text``).
    """
    from harness.dispatch.failures import Failure

    try:
        path = _failure_file(submitit.JobEnvironment().paths)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(Failure.from_exception(exc).to_dict()))
        os.replace(tmp, path)
    except Exception:  # noqa: BLE001 - not in a job, or no writable folder: the traceback text remains
        return


def job_failure(job: submitit.Job, exc: BaseException) -> Any:
    """The ``harness.dispatch.failures.Failure`` of a failed job: from the exception itself (debug jobs ran
    here), else from what its worker left, else from submitit's error text."""
    from harness.dispatch.failures import Failure

    if _is_debug(job) and not isinstance(exc, submitit.core.utils.FailedJobError | submitit.core.utils
                                         .UncompletedJobError):
        return Failure.from_exception(exc)
    try:
        left = _failure_file(job.paths)
        if left.is_file() and left.stat().st_mtime >= _submitted_at(job):
            return Failure.from_dict(json.loads(left.read_text()))
    except (OSError, ValueError, TypeError, KeyError):
        pass
    return Failure.from_job_text(str(exc) or _stderr_tail(job.paths.stderr))


def _submitted_at(job: submitit.Job) -> float:
    """When ``job`` was submitted (its submission pickle), so a failure left by an older job of the same id
    is not taken for this one's."""
    try:
        return job.paths.submitted_pickle.stat().st_mtime - 1
    except OSError:
        return 0.0


def capability_refusal(method: Any, task: Any) -> str:
    """Why ``method`` cannot run ``task`` (the capabilities it lacks), or '' when it can."""
    missing = [c for c in task.requires if c not in method.card.capabilities]
    return f"method {method.card.name!r} lacks capability {missing} required by task {task.name!r}" if missing \
        else ""


@dataclass
class JobOutcome:
    """What became of one submitted request."""

    request: RunRequest
    status: str  # "done" | "failed"
    record_path: Path | None = None  # the result record (runs) or checkpoint (pretraining), when done
    stdout: Path | None = None
    stderr: Path | None = None
    error: str = ""  # when failed: the reason (one line for an expected mistake; harness.dispatch.failures)
    job_id: str = ""
    stage: str = "run"
    failure: Any = None  # harness.dispatch.failures.Failure, when failed
    failure_record: Path | None = None  # its JSON record under the results directory, once written


def _tail(text: str, n: int = ERROR_LINES) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join(lines[-n:])


def _stderr_tail(path: Path | None) -> str:
    if path is None or not path.exists():
        return ""
    try:
        return _tail(path.read_text(errors="replace"))
    except OSError:
        return ""


def _is_debug(job: submitit.Job) -> bool:
    return isinstance(job, submitit.local.debug.DebugJob)


def job_error(job: submitit.Job) -> BaseException | None:
    """The exception of a finished job, or None when it succeeded."""
    if _is_debug(job):
        return getattr(job, "harness_error", None)
    try:
        return job.exception()
    except Exception as err:  # noqa: BLE001 - submitit raises various errors for vanished jobs
        return err


def job_finished(job: submitit.Job) -> bool:
    """Whether a job has finished (a debug job runs here, now)."""
    if _is_debug(job):
        if not hasattr(job, "harness_error"):
            _run_debug_job(job)
        return True
    return job.done()


def outcome_of(job: submitit.Job, request: RunRequest, stage: str = "run") -> JobOutcome:
    """A finished job's outcome."""
    out = JobOutcome(request=request, status="failed", stdout=job.paths.stdout, stderr=job.paths.stderr,
                     job_id=str(job.job_id), stage=stage)
    exc = job_error(job)
    if exc is not None:
        out.failure = job_failure(job, exc)
        out.error = out.failure.summary()
        return out
    value = job.results()[0]
    out.status = "done"
    if isinstance(value, RunOutcome):
        out.record_path = value.path
    elif value is not None:
        out.record_path = Path(value)
    return out


# ---------------------------------------------------------------------------------------------- run + wait

def _run_debug_job(job: submitit.Job) -> None:
    """Run a DebugJob here, without submitit's pdb post-mortem on failure (a sweep must go on).

    Mirrors ``DebugJob.results`` (the job's environment and log files), then records the
    exception on the job: asking submitit about a failed debug job would run it again.
    """
    environ = dict(os.environ)
    os.environ.update(job.environ)
    root = logging.getLogger("")
    job.paths.stdout.parent.mkdir(parents=True, exist_ok=True)
    handlers = [logging.FileHandler(job.paths.stdout), logging.FileHandler(job.paths.stderr)]
    handlers[1].setLevel(logging.WARNING)
    for h in handlers:
        root.addHandler(h)
    try:
        exc = job.exception()  # runs the submission; returns (not raises) its exception
        job.harness_error = exc
        if exc is not None:
            with open(job.paths.stderr, "a") as fh:
                fh.write("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    finally:
        for h in handlers:
            root.removeHandler(h)
            h.close()
        os.environ.clear()
        os.environ.update(environ)


def _progress_bar(total: int, desc: str, enabled: bool) -> Any:
    from harness.progress import progress

    return progress(total, desc, unit="job", enabled=enabled and total > 0, leave=True)


def wait_for(jobs: Sequence[submitit.Job], *, desc: str = "jobs", progress: bool = True,
             poll_s: float = 2.0) -> None:
    """Wait until every job is finished, showing done/failed counts."""
    bar = _progress_bar(len(jobs), desc, progress)
    try:
        finished: set[int] = set()
        failed = 0
        while len(finished) < len(jobs):
            for i, job in enumerate(jobs):
                if i not in finished and job_finished(job):
                    finished.add(i)
                    failed += job_error(job) is not None
                    bar.update(1)
                    bar.set_postfix(failed=failed)
            if len(finished) < len(jobs):
                time.sleep(poll_s)
    finally:
        bar.close()


def submit(executor: submitit.Executor, callables: Sequence[RunJob]) -> list[submitit.Job]:
    """Submit callables: one job, or a job array (``executor.batch()``) for several."""
    if len(callables) == 1:
        return [executor.submit(callables[0])]
    with executor.batch():
        jobs = [executor.submit(c) for c in callables]
    return jobs


def run_jobs(executor: submitit.Executor, callables: Sequence[RunJob], args: argparse.Namespace, *,
             desc: str = "jobs", progress: bool = True) -> list[submitit.Job]:
    """Submit and wait, at most ``--array-parallelism`` at once.

    Slurm throttles an array itself (``%N``); local subprocesses are started as slots free up
    (default 1: each job already uses every core).
    """
    if not callables:
        return []
    if not isinstance(executor, submitit.LocalExecutor):
        jobs = submit(executor, callables)
        wait_for(jobs, desc=desc, progress=progress)
        return jobs
    cap = max(1, getattr(args, "array_parallelism", None) or 1)
    jobs: list[submitit.Job | None] = [None] * len(callables)
    bar = _progress_bar(len(callables), desc, progress)
    try:
        pending = list(range(len(callables)))
        running: list[int] = []
        while pending or running:
            while pending and len(running) < cap:
                i = pending.pop(0)
                jobs[i] = executor.submit(callables[i])
                running.append(i)
            for i in [i for i in running if job_finished(jobs[i])]:
                running.remove(i)
                bar.update(1)
            if running:
                time.sleep(0.5)
    finally:
        bar.close()
    return [j for j in jobs if j is not None]


def dispatch_runs(requests: Sequence[RunRequest], args: argparse.Namespace) -> list[JobOutcome]:
    """Run each request as a submitit job (an array for several) and wait for all of them.

    A failing run does not stop the others. Returns one ``JobOutcome`` per request, in order:
    status, record path, log paths and, when failed, its ``harness.dispatch.failures.Failure``, the reason
    (``error``) and the failure record written for it (``record_outcome``).

    Raises:
        RunError: a request whose method lacks a capability its task requires (``refuse_incapable``):
            nothing is submitted.
    """
    refuse_incapable(requests)
    progress = any(r.progress for r in requests)
    # progress bars belong on this terminal, not in the jobs' log files
    quiet = [r if args.executor == "debug" else dataclasses.replace(r, progress=False) for r in requests]
    executor = make_executor(args)
    jobs = run_jobs(executor, [RunJob(r) for r in quiet], args, desc="runs", progress=progress)
    outcomes = [outcome_of(job, req) for job, req in zip(jobs, requests, strict=True)]
    for o in outcomes:
        record_outcome(o)
    return outcomes


def refuse_incapable(requests: Sequence[RunRequest]) -> None:
    """Refuse, before any job, requests whose method lacks a capability their task requires.

    Raises:
        RunError: one line naming each (method, task) and what is missing (also an unknown
            name's error, or a submission that cannot be registered, as ``harness run`` would).
    """
    from harness.dispatch import runner

    problems = []
    for method_name, task_name, tasks_dir, submission in dict.fromkeys(
            (r.method, r.task, r.tasks_dir, r.submission) for r in requests):
        task = get_task(task_name, tasks_dir)
        if submission:
            from harness.encoders.submission import ensure_registered

            ensure_registered(method_name, submission)
        why = capability_refusal(runner.load_method(method_name), task)
        if why:
            problems.append(why)
    if problems:
        raise runner.RunError("; ".join(problems) + " (nothing was submitted)")


def record_outcome(outcome: JobOutcome) -> None:
    """A failed outcome gets its failure record (``harness.dispatch.failures``), a done one loses a stale one."""
    from harness.dispatch import failures

    if outcome.status == "done":
        failures.clear_failure(outcome.request)
        return
    outcome.failure_record = failures.write_failure(outcome.request, outcome.failure, stage=outcome.stage,
                                                    job_id=outcome.job_id, log=outcome.stderr)


def _skipped(record_path: Path | None, key: str = "skipped") -> dict[str, int]:
    """A finished run's counted skips (or ``key="warnings"``), shown like ``harness run`` shows them."""
    if record_path is None or record_path.suffix != ".json":
        return {}
    try:
        import json

        return dict(json.loads(record_path.read_text()).get(key) or {})
    except (OSError, ValueError, AttributeError):
        return {}


def describe(outcomes: Sequence[JobOutcome]) -> str:
    """One line per outcome (record or log), then the last error lines of each failure."""
    lines = []
    for o in outcomes:
        r = o.request
        what = f"{r.method} x {r.task} (fraction {r.fraction:g}, seed {r.seed})"
        if o.status == "done":
            lines.append(f"done    {what}: {o.record_path}  (log: {o.stdout})")
            lines.extend(f"  skipped {n}: {reason}" for reason, n in _skipped(o.record_path).items())
            lines.extend(f"  warning {n}: {reason}" for reason, n in _skipped(o.record_path, "warnings").items())
        else:
            lines.append(f"FAILED  {what}, job {o.job_id} (log: {o.stderr})")
            lines.extend("    " + line for line in o.error.splitlines())
            if o.failure_record:
                lines.append(f"    failure record: {o.failure_record}")
    return "\n".join(lines)
