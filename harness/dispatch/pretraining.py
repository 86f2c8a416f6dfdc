"""The pretraining cache: one checkpoint per (method, resolved config, exact training rows), trained once.

::

    ckpt, key, hit = pretrained_checkpoint(method, config, train, device, progress, load_source)

- **Key**: the method's name, its resolved config (profile + ``--set``) and the fingerprint of
  exactly the training rows it sees (``harness.cohort.TrainingData.fingerprint``), so two tasks
  on the same training rows share one pretraining and any change of rows or config trains anew.
  A method that learns from labels (``uses_labels``) adds the fingerprint of the task's labels
  (``harness.cohort.TrainingLabels``: task, label set, policy, split, targets): its checkpoint
  is never reused for another task's labels, even on the same rows.
- **Lock**: concurrent runs of one key train once; the others wait and load
  (``harness.storage.file_lock`` on ``<workdir>/.lock``).
- **Rank 0**: under torch.distributed (several tasks of one job) only rank 0 takes the lock and
  reads ``done.json``, and broadcasts what it found; a lock per rank would deadlock two ranks
  against each other. Every rank then trains its shard.
- **Trust**: a finished pretraining is trusted only when ``done.json`` parses and the checkpoint
  it names has the sha256 recorded at the end of training; anything else is removed with a
  warning and trained again, resuming from ``checkpoint.pt`` where that is readable.

``--pretrain-on DATASET`` (``effective_pretrain_on``) offers another dataset's training split to
methods that pretrain on the task's data (MSN+EHR pretrains on MIMIC-CXR, then probes NIH-14).
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Any

from harness.catalog import DATASETS
from harness.config import config_hash
from harness.encoders import PretrainRequest
from harness.registry import UnknownNameError
from harness.storage import atomic_write, cache_root, file_lock, file_sha256
from harness.tasks import TaskSpec

log = logging.getLogger("harness")

DONE = "done.json"


def add_pretrain_on_argument(parser: Any) -> None:
    """``--pretrain-on DATASET`` for ``run`` and ``sweep`` (an ``argparse`` parser)."""
    parser.add_argument("--pretrain-on", default=None, metavar="DATASET",
                        help="pretrain on this dataset's training split instead of the task's (e.g. mimic-cxr, "
                             "as MSN+EHR does before probing NIH-14); see `harness ls datasets`")


def effective_pretrain_on(method: Any, task: TaskSpec, pretrain_on: str | None) -> str | None:
    """The dataset ``--pretrain-on`` makes ``method`` pretrain on for ``task``, or None for the task's own.

    Only methods that pretrain on the task's data (``"{task}"`` in their card's ``pretraining_data``)
    take it; for the others (``random``, ``imagenet``, submissions) it means nothing and is dropped, so
    their records and leaderboard rows do not claim a pretraining that never happened.

    Raises:
        UnknownNameError: an unknown dataset, for every method, so a typo never passes silently.
    """
    if pretrain_on is not None and pretrain_on not in DATASETS:
        raise UnknownNameError(f"--pretrain-on {pretrain_on!r}: unknown dataset; choose from "
                               f"{sorted(DATASETS.names())}")
    if pretrain_on is None or pretrain_on == task.dataset:
        return None
    if "{task}" not in method.card.pretraining_data:
        log.info("%s does not pretrain on the task's data: --pretrain-on %s does not apply to it",
                 method.card.name, pretrain_on)
        return None
    return pretrain_on


def uses_labels(method: Any) -> bool:
    """Whether ``method`` learns from the task's labels (its card's ``uses_labels``: a supervised reference)."""
    return bool(getattr(method.card, "uses_labels", False))


def labels_refusal(method: Any, task: TaskSpec, pretrain_on: str | None = None) -> str:
    """Why a label-supervised ``method`` cannot run ``task``, or '' (always '' for the other methods).

    It learns from the task's own training labels, so a task without labels gives it nothing to learn, and
    ``--pretrain-on`` another dataset would train it on rows whose labels are not the task's.
    """
    if not uses_labels(method):
        return ""
    if not task.labels:
        return (f"method {method.card.name!r} learns from the task's training labels, and task {task.name!r} has "
                "none (labels: []): run it on a classification task")
    if pretrain_on is not None and pretrain_on != task.dataset:
        return (f"method {method.card.name!r} learns from the training labels of task {task.name!r}: "
                f"--pretrain-on {pretrain_on} does not apply to it")
    return ""


def _process_group() -> tuple[int, int]:
    """(rank, world size) of an initialised torch.distributed group, else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _from_rank0(obj: Any) -> Any:
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def trusted_done(workdir: Path) -> dict[str, Any] | None:
    """``done.json`` of a finished pretraining, or None when it is absent or cannot be trusted.

    Trusted only when it parses and the checkpoint it names exists with the sha256 recorded
    at the end of training. Otherwise (a truncated or bit-flipped ``final.pt``, a record
    from before the hash was kept) the marker and the named file are removed with a
    warning and the pretraining runs again, resuming from ``checkpoint.pt`` where that is
    readable: a damaged cache is rebuilt, never loaded.
    """
    done = workdir / DONE
    if not done.exists():
        return None
    why, named = "", None
    try:
        info = json.loads(done.read_text())
        if not isinstance(info, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        info, why = None, f"{DONE} does not parse ({exc})"
    if info is not None and info.get("checkpoint"):
        named = workdir / info["checkpoint"]
        if not named.is_file():
            why = f"{named.name} is missing"
        elif not info.get("checkpoint_sha256"):
            why = f"{DONE} records no checkpoint_sha256"
        elif file_sha256(named) != info["checkpoint_sha256"]:
            why = f"{named.name} does not match its recorded sha256 (corrupted)"
    if not why:
        return info
    log.warning("pretraining cache %s: %s; training again", workdir, why)
    done.unlink(missing_ok=True)
    if named is not None and named.parent == workdir:
        named.unlink(missing_ok=True)
    return None


def pretraining_key(method: Any, config: dict[str, Any], train: Any) -> str:
    """The pretraining cache key (see the module docstring): method, config, training rows and, for a method
    that learns from labels, the task's labels (``TrainingData.labels.fingerprint``)."""
    identity = {"method": method.card.name, "config": config, "data": train.fingerprint}
    labels = getattr(train, "labels", None)
    if labels is not None:  # a label-supervised checkpoint is never reused for another task's labels or split
        identity["labels"] = labels.fingerprint
    return config_hash(identity)[:20]


def pretrained_checkpoint(method: Any, config: dict[str, Any], train: Any, device: str, progress: bool,
                          load_source: Any) -> tuple[Path | None, str, bool]:
    """The method's checkpoint for this (method, config, training data), from the cache or trained now.

    Args:
        method: a ``harness.encoders.Method``.
        config: its resolved config (profile + overrides).
        train: the ``TrainingData`` it pretrains on (a training split only).
        device: where to train.
        progress: show the trainer's progress.
        load_source: other datasets' training rows, for methods that mix sources.

    Returns:
        (checkpoint or None for methods that do not pretrain, cache key, whether it was a cache hit).
    """
    key = pretraining_key(method, config, train)
    labels = getattr(train, "labels", None)
    workdir = cache_root() / "pretrain" / method.card.name / key
    rank, world_size = _process_group()
    with file_lock(workdir / ".lock") if rank == 0 else contextlib.nullcontext():
        info = trusted_done(workdir) if rank == 0 else None
        if world_size > 1:
            info = _from_rank0(info)
        if info is not None:
            ckpt = info.get("checkpoint")
            return (workdir / ckpt if ckpt else None), key, True
        request = PretrainRequest(data=train, config=config, workdir=workdir, seed=int(config.get("seed", 0)),
                                  device=device, load_source=load_source, progress=progress)
        ckpt = method.pretrain(request)
        if rank != 0:
            return ckpt, key, False
        info = {"checkpoint": str(Path(ckpt).relative_to(workdir)) if ckpt else None,
                "checkpoint_sha256": file_sha256(Path(ckpt)) if ckpt else None,
                "method": method.card.name, "config": config, "data_fingerprint": train.fingerprint,
                "dataset": train.dataset, "n_images": len(train.frame)}
        if labels is not None:
            info["labels"] = {"task": labels.task, "task_version": labels.task_version, "names": list(labels.names),
                              "fingerprint": labels.fingerprint}
        atomic_write(workdir / DONE, json.dumps(info, indent=2, sort_keys=True, default=str).encode())
        return ckpt, key, False
