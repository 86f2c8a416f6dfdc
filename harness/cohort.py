"""From a dataset's records and a task spec to the data a protocol sees.

Applies, in this order and visibly: view filter, split assignment (official, or
by a hash of the patient id where a split is missing), label policy, and the
removal of undecodable images (a counted skip). Label fractions are drawn by
patient, nested (the 1 % patients are inside the 10 % ones) and deterministic per
seed. Pretraining data is the task's TRAINING split only, by construction.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from harness.data.schema import SPLITS, DataError, Records
from harness.tasks import LabelPolicy, SplitSpec, TaskSpec


def _unit_hash(keys: pd.Series, salt: str) -> np.ndarray:
    """A deterministic uniform number in [0, 1) per key (sha256, not Python's hash)."""
    out = np.empty(len(keys), dtype=np.float64)
    for i, k in enumerate(keys.astype(str)):
        digest = hashlib.sha256(f"{salt}:{k}".encode()).digest()
        out[i] = int.from_bytes(digest[:8], "big") / 2**64
    return out


def patient_hash_split(patient_ids: pd.Series, val_fraction: float, test_fraction: float, salt: str) -> pd.Series:
    """train / val / test by a hash of the patient id: patient-disjoint, stable across runs."""
    uniq = pd.Series(patient_ids.astype(str).unique())
    u = _unit_hash(uniq, salt)
    split = np.where(u < test_fraction, "test", np.where(u < test_fraction + val_fraction, "val", "train"))
    return patient_ids.astype(str).map(dict(zip(uniq, split, strict=True)))


def fraction_mask(patient_ids: pd.Series, fraction: float, seed: int) -> np.ndarray:
    """Rows of the first ``ceil(fraction * n_patients)`` patients in a seeded hash order.

    Nested: for a fixed seed every smaller fraction's patients are inside the larger's.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if fraction == 1:
        return np.ones(len(patient_ids), dtype=bool)
    uniq = pd.Series(patient_ids.astype(str).unique())
    order = uniq.iloc[np.argsort(_unit_hash(uniq, f"fraction-seed-{seed}"), kind="stable")]
    keep = set(order.iloc[: max(1, math.ceil(fraction * len(uniq)))])
    return patient_ids.astype(str).isin(keep).to_numpy()


def apply_label_policy(frame: pd.DataFrame, labels: tuple[str, ...], policy: LabelPolicy) -> np.ndarray:
    """``(N, L)`` float32 targets: 1 / 0, NaN where the policy says ``ignore``."""
    mapping = {"zero": 0.0, "one": 1.0, "ignore": np.nan}
    out = np.empty((len(frame), len(labels)), dtype=np.float32)
    for j, name in enumerate(labels):
        if name not in frame.columns:
            raise DataError(f"task label {name!r} is not a label of this dataset")
        col = frame[name].to_numpy(dtype=np.float64)
        bad = ~np.isin(col, (0.0, 1.0, -1.0)) & ~np.isnan(col)
        if bad.any():
            raise DataError(f"label {name!r} has value {float(col[bad][0])!r} (expected 1, 0, -1 or blank)")
        uncertain = mapping[policy.per_label.get(name, policy.uncertain)]
        col = np.where(col == -1.0, uncertain, col)
        col = np.where(np.isnan(frame[name].to_numpy(dtype=np.float64)), mapping[policy.blank], col)
        out[:, j] = col
    return out


def assign_splits(frame: pd.DataFrame, spec: SplitSpec, has_external_test: bool) -> pd.Series:
    """The task's split per row. Official splits are kept; a missing val is carved from train."""
    if spec.method == "patient-hash":
        return patient_hash_split(frame["patient_id"], spec.val_fraction, spec.test_fraction, spec.salt)
    split = frame["split"].copy()
    if (split == "").any():
        n = int((split == "").sum())
        raise DataError(f"{n} rows have no official split; use split.method: patient-hash for this dataset")
    if spec.test_split != "test" and not has_external_test:
        # e.g. CheXpert: the official valid set is the test set; the official test rows are unused
        split = split.map({spec.test_split: "test", "train": "train"}).fillna("unused")
    if has_external_test:
        split = split.where(split != "test", "unused")
    if not (split == "val").any():
        train = split == "train"
        carved = patient_hash_split(frame.loc[train, "patient_id"], spec.val_fraction, 0.0, spec.salt)
        split.loc[train] = carved.where(carved == "val", "train")
    return split


class ImageView:
    """Rows of a dataset's image store, indexable like a ``(N, S, S)`` uint8 array."""

    def __init__(self, store, rows: np.ndarray) -> None:
        self.store, self.rows = store, rows
        self.size: int = store.size

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, idx) -> np.ndarray:
        rows = self.rows[idx]
        if np.ndim(rows) == 0:
            return self.store[int(rows)]
        order = np.argsort(rows, kind="stable")  # sorted reads are kinder to a memmap
        out = self.store[rows[order]]
        result = np.empty_like(out)
        result[order] = out
        return result


@dataclass
class SplitData:
    name: str
    frame: pd.DataFrame  # this split's rows, index reset
    targets: np.ndarray  # (N, L) float32; NaN = ignored by the label policy
    images: ImageView  # (N, S, S) uint8 aligned with frame

    def __len__(self) -> int:
        return len(self.frame)


@dataclass
class TaskData:
    task: TaskSpec
    label_names: tuple[str, ...]
    train: SplitData
    val: SplitData
    test: SplitData
    data_source: str
    dataset_fingerprint: str
    split_sha256: str
    image_size: int
    skipped: dict[str, int] = field(default_factory=dict)
    images_fingerprint: str = ""  # the image store's source fingerprint: changes when any pixel file does
    extras: dict[str, object] = field(default_factory=dict)  # Records.extras of the test dataset (e.g. boxes)

    def split(self, name: str) -> SplitData:
        return {"train": self.train, "val": self.val, "test": self.test}[name]


@dataclass
class TrainingData:
    """What pretraining sees: the task's TRAINING split only."""

    dataset: str
    frame: pd.DataFrame
    images: ImageView
    data_source: str
    fingerprint: str  # of exactly these rows (pretraining cache key)


StoreFactory = Callable[[list[str], int], object]


def _default_store(paths: list[str], size: int, progress: bool = True):
    from harness.data.images import image_store

    return image_store(paths, size, progress=progress)


def _frame_hash(frame: pd.DataFrame, cols: list[str]) -> str:
    h = hashlib.sha256()
    h.update(pd.util.hash_pandas_object(frame[cols].astype(str), index=False).values.tobytes())
    return h.hexdigest()


def build_task_data(task: TaskSpec, records: Records, image_size: int, *, eval_records: Records | None = None,
                    store_factory: StoreFactory | None = None, progress: bool = True) -> TaskData:
    """Apply the task's cohort choices to records (see the module docstring)."""
    skipped = {f"{records.dataset}: {k}": v for k, v in records.skipped.items()}
    frames = []
    for recs, is_eval in ((records, False), (eval_records, True)):
        if recs is None:
            continue
        frame = recs.frame
        if task.views is not None:
            frame = frame[frame["view"].isin(task.views)]
        if is_eval:
            frame = frame[frame["split"] == task.split.test_split].assign(_task_split="test")
            skipped.update({f"{recs.dataset}: {k}": v for k, v in recs.skipped.items()})
        else:
            frame = frame.assign(_task_split=assign_splits(frame, task.split, eval_records is not None))
        frames.append(frame)
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0].reset_index(drop=True)
    frame = frame[frame["_task_split"].isin(SPLITS)].reset_index(drop=True)

    factory = store_factory or (lambda paths, size: _default_store(paths, size, progress))
    store = factory(frame["path"].astype(str).tolist(), image_size)
    bad = np.asarray(store.bad, dtype=bool)
    if bad.any():
        skipped["unreadable image (row removed)"] = int(bad.sum())
    rows = np.flatnonzero(~bad)
    frame = frame.iloc[rows].reset_index(drop=True)

    targets = apply_label_policy(frame, task.labels, task.label_policy) if task.labels else np.zeros((len(frame), 0),
                                                                                                      np.float32)
    parts = {}
    for name in SPLITS:
        m = (frame["_task_split"] == name).to_numpy()
        if not m.any():
            raise DataError(f"task {task.name}: the {name!r} split is empty after the cohort filters")
        parts[name] = SplitData(name, frame[m].drop(columns="_task_split").reset_index(drop=True), targets[m],
                                ImageView(store, rows[m]))
    fp = records.fingerprint() + (eval_records.fingerprint() if eval_records is not None else "")
    return TaskData(
        task=task, label_names=task.labels, train=parts["train"], val=parts["val"], test=parts["test"],
        data_source=records.data_source, dataset_fingerprint=hashlib.sha256(fp.encode()).hexdigest(),
        split_sha256=_frame_hash(frame, ["dataset", "image_id", "_task_split"]), image_size=image_size,
        skipped=skipped, images_fingerprint=str(getattr(store, "source_fingerprint", "")),
        extras=dict((eval_records or records).extras),
    )


def training_data(data: TaskData) -> TrainingData:
    """The pretraining view of a task: its training split, nothing else."""
    from harness.data.images import fingerprint as files_fingerprint

    train = data.train
    rows = _frame_hash(train.frame, ["dataset", "image_id"])
    # the pixels of THESE rows (paths, sizes, mtimes), not of the whole image store: two tasks whose
    # stores differ elsewhere (an external test set, other views) share one pretraining
    pixels = (files_fingerprint(train.frame["path"].astype(str).tolist(), data.image_size)
              if data.images_fingerprint and "path" in train.frame else data.images_fingerprint)
    fingerprint = hashlib.sha256(f"{rows}:{pixels}:{data.image_size}".encode()).hexdigest()
    return TrainingData(dataset=data.task.dataset, frame=train.frame, images=train.images,
                        data_source=data.data_source, fingerprint=fingerprint)
