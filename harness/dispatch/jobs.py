"""The submitit job callable, ``RunJob``: what runs inside a job, whatever the executor.

``RunJob(request)`` is the one callable every executor runs (``debug`` in this process,
``local`` in a subprocess, ``slurm`` on a node): ``harness.dispatch.runner.execute``, or its
pretraining half for a sweep's pretraining jobs. Submitting and waiting for jobs, and what
became of them, is ``harness.dispatch.outcomes``.

Requeue and resume: ``RunJob`` is a ``submitit.helpers.Checkpointable``. On
preemption or timeout submitit calls ``RunJob.checkpoint`` and requeues the returned
submission (the same request). Nothing needs pickling beyond the request because the
state lives on disk: pretraining resumes from ``checkpoint.pt`` in its pretraining
workdir (``harness.dispatch.pretraining.pretrained_checkpoint``), and a finished pretraining is a
cache hit.

Failures: a job that raises leaves ``Failure.from_exception`` next to its logs
(``failure_file``) before the exception goes to submitit, which hands the parent only the
traceback text; the parent reads it back (``harness.dispatch.outcomes.job_failure``).

Several tasks per node (``--tasks-per-node N``) run pretraining under torch.distributed:
each task exports the torchrun variables (``TorchDistributedEnvironment().export()``),
joins one process group (gloo on CPU, nccl on CUDA) and pretrains its shard; rank 0
alone then evaluates and writes the record.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import submitit

from harness.dispatch.runner import RunOutcome, RunRequest
from harness.storage import atomic_write

log = logging.getLogger("harness")


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


def failure_file(paths: Any) -> Path:
    """Where a job's worker leaves the description of its failure (next to its logs; not ``*.json``, since the
    logs default to ``<results>/logs`` and ``harness.results.load_records`` reads every ``*.json`` there).

    Args:
        paths: a submitit ``JobPaths`` (``job.paths`` in the parent, ``JobEnvironment().paths`` in the worker).

    Returns:
        ``<folder>/<job id>_<task id>_failure.jsonl``.
    """
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
        atomic_write(failure_file(submitit.JobEnvironment().paths), json.dumps(Failure.from_exception(exc).to_dict())
                     .encode())
    except Exception:  # noqa: BLE001 - not in a job, or no writable folder: the traceback text remains
        return
