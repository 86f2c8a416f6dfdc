"""Running jobs from this process: submitting ``RunJob``s, waiting for them, and what became of each.

``dispatch_runs`` is ``harness run`` / ``harness submit`` with ``--executor``: it refuses
requests whose method lacks a capability their task requires (before any job), submits one
job per request (an array for several), waits, and returns one ``JobOutcome`` per request;
``describe`` is the summary they print. ``harness.dispatch.sweep`` uses the parts
(``submit``, ``wait_for``, ``run_jobs``, ``outcome_of``) for its pretraining -> evaluation
graph.

Failures: a failed job's ``JobOutcome`` carries a ``harness.dispatch.failures.Failure`` (the one-line
reason of an expected mistake; an unexpected error's type, message and traceback), taken from
the exception in debug jobs, from what the worker left next to its logs in other processes
(``harness.dispatch.jobs.failure_file``; submitit returns only traceback text), else from that
text; ``dispatch_runs`` writes a failure record for it (``harness.dispatch.failures``). A
failing run does not stop the others.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit

from harness.dispatch.executors import make_executor
from harness.dispatch.jobs import RunJob, failure_file
from harness.dispatch.pretraining import labels_refusal
from harness.dispatch.runner import RunOutcome, RunRequest
from harness.tasks import get_task

ERROR_LINES = 12


# ---------------------------------------------------------------------------------------------- outcomes

def job_failure(job: submitit.Job, exc: BaseException) -> Any:
    """The ``harness.dispatch.failures.Failure`` of a failed job: from the exception itself (debug jobs ran
    here), else from what its worker left, else from submitit's error text."""
    from harness.dispatch.failures import Failure

    if _is_debug(job) and not isinstance(exc, submitit.core.utils.FailedJobError | submitit.core.utils
                                         .UncompletedJobError):
        return Failure.from_exception(exc)
    try:
        left = failure_file(job.paths)
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
    """Why ``method`` cannot run ``task`` (the capabilities it lacks; a label-supervised method on a task
    without labels), or '' when it can."""
    missing = [c for c in task.requires if c not in method.card.capabilities]
    return f"method {method.card.name!r} lacks capability {missing} required by task {task.name!r}" if missing \
        else labels_refusal(method, task)


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
