"""One run: (method, task, fraction, seed, profile) -> a result record on disk.

::

    prepare:  task, method, profile, config checked; records --cohort--> TaskData    (every refusal here)
    execute:  pretraining (cache) -> encoder -> label fraction -> protocol under the frozen guard
              -> ResultRecord -> atomic JSON record

Every dispatch path (in-process, local subprocesses, Slurm: ``harness.dispatch.executors``)
calls ``execute``, or ``pretrain_only`` for a sweep's pretraining stage. The steps live with
their concepts: the cohort and the label fraction in ``harness.cohort``, the data root in
``harness.data.sources``, the pretraining cache in ``harness.dispatch.pretraining``, the guard in
``harness.protocols.base.evaluate``, the record in ``harness.results``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness import results
from harness.catalog import METHODS, PROTOCOLS
from harness.config import PROFILES, config_hash, merge, parse_overrides
from harness.dispatch.pretraining import effective_pretrain_on, labels_refusal, pretrained_checkpoint, uses_labels
from harness.encoders import missing_capabilities
from harness.storage import cache_root
from harness.tasks import TaskSpec, get_task

log = logging.getLogger("harness")


class RunError(RuntimeError):
    """An expected failure (bad name, missing capability, missing data): shown without a traceback."""


_INVOCATION: list[str] | None = None  # this process's harness command line (harness.cli.main sets it)


def set_invocation(argv: list[str] | None) -> None:
    """Remember the command line of the harness command this process runs (None: none, the Python API)."""
    global _INVOCATION
    _INVOCATION = list(argv) if argv is not None else None


def invocation() -> list[str] | None:
    """The command line ``set_invocation`` remembered: every ``RunRequest`` made meanwhile carries it."""
    return list(_INVOCATION) if _INVOCATION is not None else None


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
    # the command line that asked for this run (run, sweep or submit), travelling with the request to its job
    argv: list[str] | None = field(default_factory=invocation)
    # the ids the submitted weights were trained on (submit --pretraining-manifest): their patient overlap with
    # the task's val / test split is counted, and refused unless allow_overlap
    pretraining_manifest: str | None = None
    allow_overlap: bool = False


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
        config = merge(method.profiles[profile], parse_overrides(overrides), where=f"{method.card.name} config")
        if callable(getattr(method, "config", None)):  # a value the method's config refuses, before any work
            method.config(config)
        return config
    except (KeyError, ValueError, TypeError) as exc:
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
    world: dict[str, Any] | str | None = None  # the record's ``world`` (``harness.data.sources.data_world``)
    overlap: dict[str, Any] | None = None  # counts of the pretraining manifest's overlap (``encoders.manifest``)

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

        if self.pretrain_on is None:  # the labels only for a method that learns from them (labels_refusal)
            return check_pretraining(training_data(self.data, with_labels=uses_labels(self.method)), self.data,
                                     f"the training split of {self.task.name}")
        return self.load_source(self.pretrain_on, views=self.task.views)


def prepare(req: RunRequest) -> Prepared:
    """Validate the request (names, capabilities, profile, overrides) and build the task data.

    Every refusal happens here, before any training.
    """
    from harness.cohort import build_task_data, check_pretraining, training_data
    from harness.data.sources import data_world, load_records, task_data_root

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
    refused = labels_refusal(method, task, pretrain_on)
    if refused:
        raise RunError(refused)
    data_root = task_data_root(task, req.data_root, also=(pretrain_on,))
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
                    data=data, load_source=load_source, timings=timings, pretrain_on=pretrain_on, world=world,
                    overlap=manifest_overlap(req, task, data))


def manifest_overlap(req: RunRequest, task: TaskSpec, data: Any) -> dict[str, Any] | None:
    """The pretraining manifest's patient overlap with the task (counts only), or None without a manifest.

    Raises:
        RunError: the manifest covers validation or test patients and ``allow_overlap`` is not set.
    """
    if not req.pretraining_manifest:
        return None
    from harness.encoders.manifest import leaks, overlap, read_manifest

    counts = {**overlap(read_manifest(req.pretraining_manifest), data), "allowed": bool(req.allow_overlap)}
    if leaks(counts) and not req.allow_overlap:
        raise RunError(f"--pretraining-manifest {req.pretraining_manifest}: the weights were trained on "
                       f"{counts['val_patients']} of the {counts['val_patients_total']} validation and "
                       f"{counts['test_patients']} of the {counts['test_patients_total']} test patients of "
                       f"{task.name}: its scores would be inflated; pass --allow-overlap to score it anyway (the "
                       "record and the leaderboard row then say so)")
    return counts


def run_card(method: Any, config: dict[str, Any]) -> Any:
    """The card of the run's own config, for its record: a baseline's ``card_for`` of it (the profile's sizes,
    initialisation and notes: ``pixels`` at ``smoke`` says 8 x 8, not the ``small`` card's 16 x 16), else
    the method's card (a submission's, which carries its ``--pretraining-data``)."""
    card_for, make_config = getattr(method, "card_for", None), getattr(method, "config", None)
    if callable(card_for) and callable(make_config):
        return card_for(make_config(config))
    return method.card


def protocol_args(p: Prepared) -> dict[str, Any]:
    """The task's protocol arguments for the profile, with a submission's own (``--text-model``) where declared."""
    from harness.protocols.args import declared

    args = p.task.args_for(p.profile)
    decl = declared(p.task.protocol)
    own = {k: v for k, v in (getattr(p.method, "protocol_args", None) or {}).items()
           if decl is not None and k in decl.args}
    return {**args, **own}


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
    from harness.cohort import label_fraction
    from harness.encoders.fingerprint import embedding_fingerprint
    from harness.features import extraction_seconds, weights_sha256
    from harness.metrics.paired import kept
    from harness.protocols.base import EvalContext, evaluate

    started = datetime.now(UTC)
    t0 = time.perf_counter()
    p = prepare(req)
    t = time.perf_counter()
    train = p.pretraining_data()
    ckpt, key, hit = pretrained_checkpoint(p.method, p.config, train, p.device, req.progress, p.load_source)
    p.timings["pretrain_s"] = time.perf_counter() - t
    encoder = p.method.load(ckpt, p.config)
    lacking = missing_capabilities(encoder, p.task.requires)
    if lacking:
        raise RunError(f"the encoder of {req.method!r} lacks capability {lacking} required by {p.task.name!r}")
    if hasattr(encoder, "to"):
        encoder = encoder.to(p.device)
    sha = weights_sha256(encoder)  # once: the feature cache key and the frozen guard's reference
    fingerprint = embedding_fingerprint(encoder, p.device)  # before the protocol: the encoder as loaded

    args = protocol_args(p)
    workdir = cache_root() / "runs" / config_hash([req.method, sha, p.task.name, p.task.version, req.fraction,
                                                    req.seed, args])[:20]
    workdir.mkdir(parents=True, exist_ok=True)
    ctx = EvalContext(task=p.task, data=label_fraction(p.data, req.fraction, req.seed), encoder=encoder,
                      preprocess=encoder.card.preprocess, args=args, fraction=req.fraction, seed=req.seed,
                      profile=p.profile, device=p.device, workdir=workdir, weights_sha256=sha, progress=req.progress)
    t = time.perf_counter()
    with extraction_seconds() as extract:
        result = evaluate(p.protocol, ctx)
    p.timings["protocol_s"] = time.perf_counter() - t
    p.timings["extract_s"] = extract[0]  # the part of protocol_s spent in features.extract_features
    if p.task.main_metric not in result.metrics:
        raise RunError(f"protocol {p.task.protocol!r} did not produce the main metric {p.task.main_metric!r}")
    run = results.RunInfo(method=req.method, card=run_card(p.method, p.config), config=p.config,
                          pretrain={"cache_key": key, "cache_hit": hit, "dataset": train.dataset}, world=p.world,
                          started_at=started.isoformat(timespec="seconds"), wall_time_s=time.perf_counter() - t0,
                          timings=p.timings, argv=req.argv, embedding_fingerprint=fingerprint,
                          pretraining_overlap=p.overlap)
    rec = results.ResultRecord.of_run(ctx, result, run).to_dict()
    # always what the paired bootstrap of the main metric needs; everything with --save-predictions
    path = results.write_record(req.results_dir, rec, kept(result.predictions, req.save_predictions))
    return RunOutcome(record=rec, path=path)
