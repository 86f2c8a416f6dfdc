"""Result records: one JSON file per (method, weights, task, task version, fraction, seed, data).

``ResultRecord`` is the record's one definition: its fields are the JSON's keys. The runner
builds it with ``ResultRecord.of_run`` from what the run produced (the evaluation context,
the protocol's result, ``RunInfo``), ``write_record`` stores it, and the leaderboards,
``compare``, ``regress`` and ``sweep --skip-existing`` read only these files.

Every record names the data it was computed on: ``dataset_fingerprint`` (ids, splits, views
and labels of the task's datasets) and ``world`` (the synthetic world's identity from its
marker: generator, generator version, seed, scale, calibration; ``"real"`` for real data;
``"self-contained"`` for a dataset that writes itself, the unit-test ``mock``). Their short
digest, ``data_fingerprint(rec)``, is part of the file name, so records of different data
never overwrite each other, and the leaderboard, ``compare``, ``regress`` and ``sweep`` use
it to never mix them. Older records (before ``world`` was stored) are still read; their
data fingerprint is their dataset fingerprint's first characters, so they never pass for
a record of a known world.

Every record also says how it was made: ``argv`` is the exact command line that asked for the
run (``python -m harness run ...``, a ``sweep`` or ``submit``; None from the Python API), next
to ``harness_version`` and ``task_version``. Next to every record lies its predictions file
(``<record>.predictions.npz``, named by ``predictions_file``): always the arrays the paired
bootstrap of the main metric needs (``harness.metrics.paired``: an anonymous patient index,
scores and targets or per-unit values; never text, never an identifier), and with
``--save-predictions`` everything the protocol returned (embeddings, example images).

Written atomically (temp file in the same directory, fsync, rename), so a killed
run leaves no partial record and concurrent runs never interleave bytes. The
leaderboard and ``regress`` read only these files.
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from harness.storage import REPOSITORY, FolderNotWritable, atomic_write

REQUIRED_KEYS = (
    "method", "task", "task_version", "fraction", "seed", "data_source", "metrics", "main_metric", "ci",
    "config", "harness_version", "git_commit", "packages", "device", "started_at", "wall_time_s",
    "split_sha256", "weights_sha256", "dataset_fingerprint",
)
_PACKAGES = ("torch", "torchvision", "timm", "transformers", "tokenizers", "numpy", "pandas", "scikit-learn",
             "scipy", "submitit")


@dataclass
class RunInfo:
    """What a run knows besides its evaluation: the method, its config and pretraining, timings."""

    method: str  # the registered name (a baseline or a submission)
    card: Any  # harness.encoders.MethodCard
    config: dict[str, Any]  # the method's resolved config (profile + --set)
    pretrain: dict[str, Any]  # cache_key, cache_hit, dataset (whose training split was offered)
    world: dict[str, Any] | str  # harness.data.sources.data_world
    started_at: str
    wall_time_s: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    argv: list[str] | None = None  # the command line that asked for the run (None: the Python API)
    embedding_fingerprint: dict[str, Any] | None = None  # harness.encoders.fingerprint
    pretraining_overlap: dict[str, Any] | None = None  # counts of a --pretraining-manifest's overlap


@dataclass
class ResultRecord:
    """One run's result record; ``to_dict()`` is what is written (see the module docstring)."""

    method: str
    method_card: dict[str, Any]  # paper, pretraining_data (the leakage flag's input)
    capabilities: list[str]
    task: str
    task_version: int
    dataset: str
    eval_dataset: str
    protocol: str
    fraction: float
    seed: int
    profile: str
    data_source: str
    metrics: dict[str, float]
    main_metric: str
    ci: dict[str, list[float]]
    config: dict[str, Any]  # method config, protocol args, label policy, labels, views, split
    details: dict[str, Any]
    n: dict[str, int]  # images per split as the protocol saw them (train: the label fraction's)
    skipped: dict[str, int]  # reason -> rows or values removed (aggregate only)
    warnings: dict[str, int]  # reason -> rows kept but suspicious (aggregate only)
    pretrain: dict[str, Any]
    harness_version: str
    git_commit: str
    packages: dict[str, str]
    device: str
    determinism: dict[str, Any]
    started_at: str
    wall_time_s: float
    timings: dict[str, float]
    split_sha256: str
    weights_sha256: str
    dataset_fingerprint: str  # with world: the data's identity, part of the file name (data_fingerprint)
    world: dict[str, Any] | str
    argv: list[str] | None  # the exact command that made it (RunInfo.argv); None: the Python API
    # the encoder's outputs on the shipped reference batch, hashed (harness.encoders.fingerprint): the same
    # model with the same preprocessing gives the same value; None in records written before it existed
    embedding_fingerprint: dict[str, Any] | None = None
    # a submission's --pretraining-manifest: patients of each split the weights saw (counts only, never ids),
    # the manifest's sha256 and whether --allow-overlap let an overlap be scored; None without a manifest
    pretraining_overlap: dict[str, Any] | None = None

    @classmethod
    def of_run(cls, ctx: Any, result: Any, run: RunInfo) -> ResultRecord:
        """The record of one evaluation: ``ctx`` an ``EvalContext``, ``result`` its ``ProtocolResult``."""
        import harness
        from harness.encoders import capabilities

        task, data = ctx.task, ctx.data
        return cls(
            method=run.method,
            method_card={"paper": run.card.paper, "pretraining_data": list(run.card.pretraining_data),
                         # the preprocessing the encoder was fed with (its loaded card's, profile-dependent)
                         "preprocess": ctx.preprocess.describe(), "notes": run.card.notes,
                         **labels_from(run.card, task)},
            capabilities=sorted(capabilities(ctx.encoder)),
            task=task.name, task_version=task.version, dataset=task.dataset,
            eval_dataset=task.eval_dataset or task.dataset, protocol=task.protocol,
            fraction=ctx.fraction, seed=ctx.seed, profile=ctx.profile, data_source=data.data_source,
            metrics={k: float(v) for k, v in result.metrics.items()}, main_metric=task.main_metric,
            ci={k: [float(lo), float(hi)] for k, (lo, hi) in result.ci.items()},
            config={"method": run.config, "protocol_args": ctx.args, "label_policy": asdict(task.label_policy),
                    "labels": list(task.labels), "views": list(task.views) if task.views else None,
                    "split": asdict(task.split)},
            details=result.details,
            n={"train": len(data.train), "val": len(data.val), "test": len(data.test)},
            skipped=data.skipped, warnings=data.warnings, pretrain=run.pretrain,
            harness_version=harness.__version__, git_commit=git_commit(), packages=package_versions(),
            device=ctx.device, determinism=determinism(ctx.device), started_at=run.started_at,
            wall_time_s=run.wall_time_s, timings=run.timings, split_sha256=data.split_sha256,
            weights_sha256=ctx.weights_sha256, dataset_fingerprint=data.dataset_fingerprint, world=run.world,
            argv=list(run.argv) if run.argv is not None else None,
            embedding_fingerprint=run.embedding_fingerprint, pretraining_overlap=run.pretraining_overlap,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def labels_from(card: Any, task: Any) -> dict[str, Any]:
    """The record card's ``uses_labels`` and, when True, ``labels_from``: the task whose training labels the
    method learnt from (the runner offers a label-supervised method only the labels of the task it runs)."""
    if not getattr(card, "uses_labels", False):
        return {"uses_labels": False}
    return {"uses_labels": True, "labels_from": {"task": task.name, "task_version": task.version, "split": "train",
                                                 "labels": list(task.labels)}}


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


class ResultsError(OSError):
    """The results directory cannot be written; the message says which and why."""


DATA_FINGERPRINT_CHARS = 12


def data_fingerprint(rec: dict[str, Any]) -> str:
    """The short fingerprint of the data a record was computed on (see the module docstring).

    Args:
        rec: a result record (or anything with ``dataset_fingerprint`` and, for new records, ``world``).

    Returns:
        12 hex characters: a digest of ``dataset_fingerprint`` and ``world``; for an older record
        without ``world``, the start of its ``dataset_fingerprint``.
    """
    fingerprint = str(rec.get("dataset_fingerprint") or "")
    world = rec.get("world")
    if world is None:
        return fingerprint[:DATA_FINGERPRINT_CHARS]
    blob = json.dumps({"dataset_fingerprint": fingerprint, "world": world}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:DATA_FINGERPRINT_CHARS]


def world_label(rec: dict[str, Any]) -> str:
    """A short human description of a record's ``world`` (for tables and messages)."""
    world = rec.get("world")
    if world is None:
        return "world not recorded (older record)"
    if not isinstance(world, dict):
        return {"real": "real data", "self-contained": "self-contained dataset"}.get(str(world), str(world))
    scale = world.get("scale", "?")
    calibration = str(world.get("calibration", "?"))
    if world.get("calibration_sha256"):
        calibration += f" [{str(world['calibration_sha256'])[:12]}]"
    scale_text = f"{scale:g}" if isinstance(scale, (int, float)) else str(scale)
    return (f"synthetic world {world.get('generator', '?')} v{world.get('generator_version', '?')}, "
            f"seed {world.get('seed', '?')}, scale {scale_text}, calibration {calibration}")


def record_name(rec: dict[str, Any]) -> str:
    """The record's file name (no suffix): every key of the module docstring's title, data included."""
    frac = f"{rec['fraction']:g}".replace(".", "p")
    profile = f"__{rec['profile']}" if rec.get("profile") else ""
    return (f"{rec['task']}__v{rec['task_version']}__{rec['method']}__{rec['weights_sha256'][:12]}"
            f"{profile}__f{frac}__s{rec['seed']}__d{data_fingerprint(rec)}")


def record_path(results_dir: Path, rec: dict[str, Any]) -> Path:
    """Where ``write_record`` puts ``rec``: ``<results>/<data_source>/<task>/<record_name>.json``."""
    return Path(results_dir) / rec["data_source"] / rec["task"] / f"{record_name(rec)}.json"


def write_file(path: Path, write: Any) -> None:
    """``storage.atomic_write`` into the results tree, its failures as one-line ``ResultsError``."""
    try:
        atomic_write(path, write)
    except FolderNotWritable as exc:
        raise ResultsError(f"cannot write results under {path.parent}: {exc.strerror or exc}") from None
    except OSError as exc:
        raise ResultsError(f"cannot write {path}: {exc.strerror or exc}") from None


def write_record(results_dir: str | Path, rec: ResultRecord | dict[str, Any],
                 predictions: dict[str, np.ndarray] | None = None) -> Path:
    """Validate and write a record (and its predictions .npz first, so a record never points nowhere)."""
    if isinstance(rec, ResultRecord):
        rec = rec.to_dict()
    missing = [k for k in REQUIRED_KEYS if k not in rec]
    if missing:
        raise ValueError(f"result record lacks key(s) {missing}")
    path = record_path(Path(results_dir), rec)
    npz = path.with_suffix(".predictions.npz")
    existed = npz.exists()
    if predictions:
        write_file(npz, lambda fh: np.savez_compressed(fh, **predictions))
        rec = {**rec, "predictions_file": npz.name}
    data = json.dumps(rec, indent=2, sort_keys=True, allow_nan=True).encode()
    try:
        write_file(path, data)
    except BaseException:
        if predictions and not existed:  # no record, so no orphan predictions either (full disk, kill)
            npz.unlink(missing_ok=True)
        raise
    return path


def load_predictions(results_dir: str | Path, rec: dict[str, Any]) -> dict[str, np.ndarray] | None:
    """The arrays of a record's predictions file (next to it under ``results_dir``), or None.

    Args:
        results_dir: the results directory the record was loaded from.
        rec: the record (its ``predictions_file`` names the file).

    Returns:
        name -> array (loaded without pickle), or None when the record names no file, the file is
        missing, or it cannot be read.
    """
    name = rec.get("predictions_file")
    if not name:
        return None
    path = record_path(Path(results_dir), rec).parent / name
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (OSError, ValueError):
        return None


def load_records(results_dir: str | Path) -> tuple[list[dict[str, Any]], list[str]]:
    """All records under ``results_dir`` and a list of files that could not be read (with why).

    ``<results_dir>/failed/`` (failure records, ``harness.dispatch.failures``) is not searched.
    """
    records, problems = [], []
    root = Path(results_dir)
    if not root.exists():
        return records, problems
    for path in sorted(root.rglob("*.json")):
        # failure records (harness.dispatch.failures) live in <results>/failed/: never results
        if path.name.startswith(".") or path.relative_to(root).parts[0] == "failed":
            continue
        try:
            rec = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            problems.append(f"{path}: unreadable record ({exc})")
            continue
        missing = [k for k in REQUIRED_KEYS if k not in rec] if isinstance(rec, dict) else ["(not an object)"]
        if missing:
            problems.append(f"{path}: not a result record (missing {missing[:3]})")
            continue
        records.append(rec)
    return records, problems


def git_commit() -> str:
    root = REPOSITORY
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=False)
        commit = out.stdout.strip()
        if commit:
            dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=10, check=False).stdout.strip()
            return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out
