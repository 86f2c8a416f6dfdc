"""One run: (method, task, fraction, seed, profile) -> a result record on disk.

    records --task cohort--> TaskData --(pretrain or cached checkpoint)--> encoder
      --protocol--> metrics + CIs --> atomic JSON record

Every dispatch path (in-process, local subprocesses, Slurm) calls ``execute``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import harness
from harness import results
from harness.catalog import DATASETS, METHODS, PROTOCOLS
from harness.config import PROFILES, config_hash, merge, parse_overrides
from harness.encoders import PretrainRequest, capabilities, missing_capabilities
from harness.storage import file_lock
from harness.tasks import TaskSpec, get_task

log = logging.getLogger("harness")


class RunError(RuntimeError):
    """An expected failure (bad name, missing capability, missing data): shown without a traceback."""


def cache_root() -> Path:
    return Path(os.environ.get("HARNESS_CACHE", Path.home() / ".cache" / "harness"))


@dataclass
class RunRequest:
    method: str
    task: str
    fraction: float = 1.0
    seed: int = 0
    profile: str | None = None  # None: small on synthetic data, paper on real data
    data_root: str | None = None
    results_dir: str = "results"
    overrides: list[str] = field(default_factory=list)  # --set key=value
    save_predictions: bool = False
    device: str = "auto"
    progress: bool = True
    tasks_dir: str | None = None
    # a submitted encoder (harness.encoders.submission.submission_spec): re-registered in whatever process runs this
    submission: str | None = None
    # pretrain on this dataset's TRAINING split instead of the task's (--pretrain-on); None: the task's
    pretrain_on: str | None = None


def add_pretrain_on_argument(parser: Any) -> None:
    """``--pretrain-on DATASET`` for ``run`` and ``sweep`` (an ``argparse`` parser)."""
    parser.add_argument("--pretrain-on", default=None, metavar="DATASET",
                        help="pretrain on this dataset's training split instead of the task's (e.g. mimic-cxr, "
                             "as MSN+EHR does before probing NIH-14); see `harness ls datasets`")


def effective_pretrain_on(method: Any, task: TaskSpec, pretrain_on: str | None) -> str | None:
    """The dataset ``--pretrain-on`` makes ``method`` pretrain on for ``task``, or None for the task's own.

    Only methods that pretrain on the task's data (``"{task}"`` in their card's ``pretraining_data``)
    take it; for the others (``random``, ``imagenet``, submissions) it means nothing and is dropped, so
    their records and leaderboard rows do not claim a pretraining that never happened. An unknown
    dataset is an error for every method (RunError), so a typo never passes silently.
    """
    if pretrain_on is not None and pretrain_on not in DATASETS:
        raise RunError(f"--pretrain-on {pretrain_on!r}: unknown dataset; choose from {sorted(DATASETS.names())}")
    if pretrain_on is None or pretrain_on == task.dataset:
        return None
    if "{task}" not in method.card.pretraining_data:
        log.info("%s does not pretrain on the task's data: --pretrain-on %s does not apply to it",
                 method.card.name, pretrain_on)
        return None
    return pretrain_on


@dataclass
class RunOutcome:
    record: dict[str, Any]
    path: Path


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_method(name: str) -> Any:
    if name not in METHODS:
        METHODS.get(name)  # raises UnknownNameError with suggestions
    factory = METHODS.get(name)
    return factory() if callable(factory) else factory


def method_config(method: Any, profile: str, overrides: list[str]) -> dict[str, Any]:
    if profile not in method.profiles:
        raise RunError(f"method {method.card.name!r} has no profile {profile!r}; it has {sorted(method.profiles)}")
    try:
        return merge(method.profiles[profile], parse_overrides(overrides), where=f"{method.card.name} config")
    except (KeyError, ValueError) as exc:
        raise RunError(str(exc.args[0]) if exc.args else str(exc)) from None


def check_fraction(task: TaskSpec, fraction: float) -> None:
    if not 0 < fraction <= 1:
        raise RunError(f"--fraction must be in (0, 1], got {fraction}")
    from harness.protocols.args import ArgError, declared

    decl = declared(task.protocol)
    try:
        if decl is not None:
            decl.check_fraction(fraction)  # a zero-shot protocol would refuse it only after pretraining
    except ArgError as exc:
        raise RunError(f"--fraction: {exc.what}") from None


class _SelfContained:
    """The data root of a task whose datasets write themselves (the unit-test ``mock``)."""

    path = None
    data_source = "synthetic"

    def source_present(self, name: str) -> bool:
        return True


def data_world(data_root: Any) -> dict[str, Any] | str:
    """The record's ``world``: the synthetic world's identity (``harness.synth.world_identity``),
    ``"real"``, or ``"self-contained"`` for a task whose datasets write themselves (``mock``)."""
    if data_root.data_source == "real":
        return "real"
    if data_root.path is None:
        return "self-contained"
    from harness.synth import world_identity

    return world_identity(data_root.path)


def load_records(dataset: str, data_root: Any) -> Any:
    """Adapter output for one dataset under the resolved data root."""
    adapter = DATASETS.get(dataset)
    if not data_root.source_present(dataset):
        raise RunError(f"dataset {dataset!r} is not under the data root {data_root.path} "
                       f"(see `python -m harness data check {dataset} --root DIR`)")
    return adapter.load(data_root.path, data_source=data_root.data_source)


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


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _trusted_done(workdir: Path) -> dict[str, Any] | None:
    """``done.json`` of a finished pretraining, or None when it is absent or cannot be trusted.

    Trusted only when it parses and the checkpoint it names exists with the sha256 recorded
    at the end of training. Otherwise (a truncated or bit-flipped ``final.pt``, a record
    from before the hash was kept) the marker and the named file are removed with a
    warning and the pretraining runs again, resuming from ``checkpoint.pt`` where that is
    readable: a damaged cache is rebuilt, never loaded.
    """
    done = workdir / "done.json"
    if not done.exists():
        return None
    why, named = "", None
    try:
        info = json.loads(done.read_text())
        if not isinstance(info, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        info, why = None, f"done.json does not parse ({exc})"
    if info is not None and info.get("checkpoint"):
        named = workdir / info["checkpoint"]
        if not named.is_file():
            why = f"{named.name} is missing"
        elif not info.get("checkpoint_sha256"):
            why = "done.json records no checkpoint_sha256"
        elif _file_sha256(named) != info["checkpoint_sha256"]:
            why = f"{named.name} does not match its recorded sha256 (corrupted)"
    if not why:
        return info
    log.warning("pretraining cache %s: %s; training again", workdir, why)
    done.unlink(missing_ok=True)
    if named is not None and named.parent == workdir:
        named.unlink(missing_ok=True)
    return None


def pretrained_checkpoint(method: Any, config: dict[str, Any], train: Any, device: str, progress: bool,
                          load_source: Any) -> tuple[Path | None, str, bool]:
    """The method's checkpoint for this (method, config, training data), from the cache or trained now.

    Returns (checkpoint, cache key, cache hit). Keyed by method name, resolved config and the
    fingerprint of exactly the training rows; a lock keeps concurrent runs from training twice.
    """
    key = config_hash({"method": method.card.name, "config": config, "data": train.fingerprint})[:20]
    workdir = cache_root() / "pretrain" / method.card.name / key
    done = workdir / "done.json"
    # Under torch.distributed (several tasks of one job) only rank 0 takes the lock and reads
    # done.json, and tells the others: a lock per rank would deadlock two ranks against each other.
    rank, world_size = _process_group()
    with file_lock(workdir / ".lock") if rank == 0 else contextlib.nullcontext():
        info = _trusted_done(workdir) if rank == 0 else None
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
                "checkpoint_sha256": _file_sha256(Path(ckpt)) if ckpt else None,
                "method": method.card.name, "config": config, "data_fingerprint": train.fingerprint,
                "dataset": train.dataset, "n_images": len(train.frame)}
        tmp = done.with_suffix(".tmp")
        tmp.write_text(json.dumps(info, indent=2, sort_keys=True, default=str))
        os.replace(tmp, done)
        return ckpt, key, False


def determinism(device: str) -> dict[str, Any]:
    """What a rerun with the same seed reproduces on ``device`` (stored in every record).

    Seeded on every device: the cohort, splits and label-fraction subsets (sha256 of ids),
    pretraining batches and augmentations (CPU generators keyed by seed and step), the
    random encoder's init, the probe's and fine-tune's initialisation and the bootstrap.
    On CPU the training loop runs under ``torch.use_deterministic_algorithms``, features
    are float32 and a rerun gives bit-identical weights and metrics (tested: rerun, kill
    and resume, debug vs local executor) on the same machine and package versions, with the
    same torch thread count (recorded: float sums are split by thread, and a probe's
    validation choice can turn a rounding difference into a different metric). On CUDA the
    loop does not force deterministic algorithms (cuDNN autotuned convolutions and
    atomic-add backward kernels sum in varying order) and training and feature extraction
    run in bf16/fp16 autocast, so weights and metrics vary at the float-rounding level
    between reruns and differ from CPU results.
    """
    import torch

    cuda = str(device).startswith("cuda")
    seeded = ["cohort, splits and label-fraction subsets", "pretraining batches and augmentations",
              "model and probe initialisation", "bootstrap confidence intervals"]
    return {
        "bitwise_reproducible": not cuda,
        "seeded": seeded,
        "not_bitwise": (["pretraining and fine-tuning (cuDNN algorithm choice, atomic-add backward kernels, "
                         "bf16/fp16 autocast)", "feature extraction (bf16 autocast)",
                         "metrics computed from those (float-rounding differences)"] if cuda else []),
        "scope": ("same seed, machine, torch thread count and package versions" if not cuda
                  else "same seed gives the same cohort and sampling; numbers vary at float-rounding level"),
        # CPU float sums split by thread: another count rounds differently, and a probe's validation
        # choice (l2, thresholds) can turn that rounding into a different metric
        "torch_threads": torch.get_num_threads(),
    }


@dataclass
class Prepared:
    """What ``execute`` and ``pretrain_only`` share: the validated run and its task data."""

    task: TaskSpec
    method: Any
    protocol: Any
    profile: str
    config: dict[str, Any]
    device: str
    data: Any  # harness.cohort.TaskData
    load_source: Any  # Callable[[str], TrainingData]: other datasets' training rows
    timings: dict[str, float]
    pretrain_on: str | None = None  # another dataset to pretrain on (validated), None: the task's
    world: dict[str, Any] | str | None = None  # the record's ``world`` (``data_world``)

    def pretraining_data(self) -> Any:
        """The rows the method pretrains on: the task's training split, or ``pretrain_on``'s.

        Published protocols often pretrain on one dataset and probe on another (MSN+EHR
        pretrains on MIMIC-CXR with its EHR, then probes NIH-14 and CheXpert). Either way only
        a TRAINING split is offered, in the task's views, and it is checked to share no
        (dataset, patient) with the task's val or test split (``harness.cohort.check_pretraining``).

        Raises:
            DataError: the pretraining rows hold a patient of the task's val or test split.
        """
        from harness.cohort import check_pretraining, training_data

        if self.pretrain_on is None:
            return check_pretraining(training_data(self.data), self.data, f"the training split of {self.task.name}")
        return self.load_source(self.pretrain_on, views=self.task.views)


def prepare(req: RunRequest) -> Prepared:
    """Validate the request (names, capabilities, profile, overrides) and build the task data.

    Every refusal happens here, before any training.
    """
    from harness.cohort import build_task_data, check_pretraining, training_data
    from harness.data.roots import resolve_data_root

    timings: dict[str, float] = {}
    task = get_task(req.task, req.tasks_dir)
    check_fraction(task, req.fraction)
    if req.submission:
        from harness.encoders.submission import ensure_registered

        ensure_registered(req.method, req.submission)
    method = load_method(req.method)
    protocol = PROTOCOLS.get(task.protocol)
    missing = [c for c in task.requires if c not in method.card.capabilities]
    if missing:
        raise RunError(f"method {req.method!r} lacks capability {missing} required by task {task.name!r}")

    pretrain_on = effective_pretrain_on(method, task, req.pretrain_on)

    needs_root = any(getattr(DATASETS.get(d), "needs_data_root", True) for d in (task.dataset, task.eval_dataset) if d)
    data_root = resolve_data_root(req.data_root) if needs_root else _SelfContained()
    world = data_world(data_root)  # before any data is read: a broken marker stops the run at once
    profile = req.profile or ("small" if data_root.data_source == "synthetic" else "paper")
    if profile not in PROFILES:
        raise RunError(f"unknown profile {profile!r}; choose from {list(PROFILES)}")
    config = method_config(method, profile, req.overrides)
    device = resolve_device(req.device)
    if data_root.data_source == "synthetic":
        where = f"embedded synthetic CXR world at {data_root.path}" if data_root.path else "self-contained mock data"
        log.warning("data: SYNTHETIC (%s); results are labelled synthetic", where)

    t = time.perf_counter()
    records = load_records(task.dataset, data_root)
    eval_records = load_records(task.eval_dataset, data_root) if task.eval_dataset else None
    data = build_task_data(task, records, int(config["image_size"]), eval_records=eval_records,
                           progress=req.progress)
    timings["data_s"] = time.perf_counter() - t

    def load_source(name: str, views: tuple[str, ...] | None = None) -> Any:  # other datasets' TRAINING rows
        other = load_records(name, data_root)
        other_task = dataclasses.replace(task, dataset=name, eval_dataset=None, labels=(), views=views,
                                         split=dataclasses.replace(task.split, method="patient-hash")
                                         if (other.frame["split"] == "").any() else task.split)
        rows = training_data(build_task_data(other_task, other, int(config["image_size"]), progress=req.progress))
        # whichever split the other dataset gets, none of its training patients may be evaluated here
        return check_pretraining(rows, data, f"the training split of {name}")

    return Prepared(task=task, method=method, protocol=protocol, profile=profile, config=config, device=device,
                    data=data, load_source=load_source, timings=timings, pretrain_on=pretrain_on, world=world)


def pretrain_only(req: RunRequest) -> Path | None:
    """The data + pretraining half of ``execute``: fills the pretraining cache, evaluates nothing.

    ``harness.dispatch.sweep`` runs this once per distinct pretraining before the evaluations that
    share it. Returns the checkpoint (None for methods that do not pretrain). Resumable: a
    killed or requeued call trains on from the checkpoints in the pretraining workdir.
    """
    p = prepare(req)
    ckpt, _, _ = pretrained_checkpoint(p.method, p.config, p.pretraining_data(), p.device, req.progress,
                                       p.load_source)
    return ckpt


def execute(req: RunRequest) -> RunOutcome:
    """Run one (method, task, fraction, seed) and write its record. See the module docstring."""
    from harness.features import extraction_seconds, weights_sha256
    from harness.protocols.base import EvalContext

    started = datetime.now(UTC)
    t0 = time.perf_counter()
    p = prepare(req)
    task, method, protocol, profile, config, device, data = (p.task, p.method, p.protocol, p.profile, p.config,
                                                             p.device, p.data)
    timings, load_source = p.timings, p.load_source

    t = time.perf_counter()
    train = p.pretraining_data()
    ckpt, pretrain_key, cache_hit = pretrained_checkpoint(method, config, train, device, req.progress, load_source)
    timings["pretrain_s"] = time.perf_counter() - t
    encoder = method.load(ckpt, config)
    lacking = missing_capabilities(encoder, task.requires)
    if lacking:
        raise RunError(f"the encoder of {req.method!r} lacks capability {lacking} required by {task.name!r}")
    if hasattr(encoder, "to"):
        encoder = encoder.to(device)
    sha = weights_sha256(encoder)

    args = task.args_for(profile)
    workdir = cache_root() / "runs" / config_hash([req.method, sha, task.name, task.version, req.fraction,
                                                    req.seed, args])[:20]
    workdir.mkdir(parents=True, exist_ok=True)
    ctx = EvalContext(task=task, data=data, encoder=encoder, preprocess=encoder.card.preprocess, args=args,
                      fraction=req.fraction, seed=req.seed, profile=profile, device=device, workdir=workdir,
                      weights_sha256=sha, progress=req.progress)
    t = time.perf_counter()
    with extraction_seconds() as extract:
        result = protocol(ctx)
    timings["protocol_s"] = time.perf_counter() - t
    timings["extract_s"] = extract[0]  # the part of protocol_s spent in features.extract_features
    if task.main_metric not in result.metrics:
        raise RunError(f"protocol {task.protocol!r} did not produce the main metric {task.main_metric!r}")

    rec: dict[str, Any] = {
        "method": req.method,
        "method_card": {"paper": method.card.paper, "pretraining_data": list(method.card.pretraining_data)},
        "capabilities": sorted(capabilities(encoder)),
        "task": task.name, "task_version": task.version, "dataset": task.dataset,
        "eval_dataset": task.eval_dataset or task.dataset, "protocol": task.protocol,
        "fraction": req.fraction, "seed": req.seed, "profile": profile,
        "data_source": data.data_source,
        "metrics": {k: float(v) for k, v in result.metrics.items()},
        "main_metric": task.main_metric,
        "ci": {k: [float(lo), float(hi)] for k, (lo, hi) in result.ci.items()},
        "config": {"method": config, "protocol_args": args, "label_policy": dataclasses.asdict(task.label_policy),
                   "labels": list(task.labels), "views": list(task.views) if task.views else None,
                   "split": dataclasses.asdict(task.split)},
        "details": result.details,
        "n": {"train": len(data.train), "val": len(data.val), "test": len(data.test)},
        "skipped": data.skipped,
        "warnings": data.warnings,  # rows kept but suspicious, reason -> count (aggregate only)
        # dataset: whose training split was offered for pretraining (the task's unless --pretrain-on)
        "pretrain": {"cache_key": pretrain_key, "cache_hit": cache_hit, "dataset": train.dataset},
        "harness_version": harness.__version__, "git_commit": results.git_commit(),
        "packages": results.package_versions(), "device": device,
        "determinism": determinism(device),
        "started_at": started.isoformat(timespec="seconds"),
        "wall_time_s": time.perf_counter() - t0, "timings": timings,
        "split_sha256": data.split_sha256, "weights_sha256": sha,
        # the data's identity: with world, it makes the record's file name (results.data_fingerprint)
        "dataset_fingerprint": data.dataset_fingerprint, "world": p.world,
    }
    preds = result.predictions if req.save_predictions else None
    path = results.write_record(req.results_dir, rec, preds)
    return RunOutcome(record=rec, path=path)
