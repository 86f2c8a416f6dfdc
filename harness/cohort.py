"""From a dataset's records and a task spec to the data a protocol sees.

Applies, in this order and visibly: view filter, split assignment (official, or
by a hash of the patient id where a split is missing), the removal of images
without a label row (labelled tasks), the split-integrity check, label policy, and
the removal of undecodable images. Label fractions are drawn by patient, nested (the
1 % patients are inside the 10 % ones) and deterministic per seed. Pretraining data
is the task's TRAINING split only, by construction, and ``check_pretraining`` proves
that any other pretraining rows share no patient with the task's val or test split.
Only a method that learns from labels (``MethodCard.uses_labels``) is handed the training
split's labels with it (``TrainingLabels``); the others never see a label.

Nothing leaves the cohort silently: every removal is counted in ``TaskData.skipped``
and every adapter warning is carried in ``TaskData.warnings`` (reason -> count, the
dataset named in the reason), which the run summary prints and the record stores:

- a row the task's ``views`` exclude although its view is blank or not a known value
  of the dataset (``Records.unknown_views``) is counted (laterals a frontal task
  leaves out by design are not: that is the task's definition);
- a patient whose rows fall into two of the task's train / val / test splits (an
  official split that is not patient-disjoint) is a ``DataError`` naming the split
  file(s), the patient and the splits, unless the task says ``split: {on_leak: drop}``:
  then the patient's rows are kept only in its most held-out split (test > val > train)
  and the removed rows counted; after that (and for every split method) no patient
  is in two splits, or the cohort refuses;
- a labelled task removes (and counts) rows with ``labelled`` False (no label row for
  the study): their NaN labels would otherwise become all-negative targets.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from harness.data.images import ImageView
from harness.data.schema import SPLITS, DataError, Records, count, leak_files, split_leaks, split_names
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


def label_fraction(data: TaskData, fraction: float, seed: int) -> TaskData:
    """The task data with its TRAINING split restricted to the label fraction's patients.

    The one place a label fraction is applied (the runner calls it once, before the protocol):
    ``fraction_mask`` picks the patients, nested and seeded; validation and test stay whole.
    Pretraining never sees this subset: it takes the whole training split (``training_data``).
    """
    if fraction == 1:
        return data
    keep = np.flatnonzero(fraction_mask(data.train.frame["patient_id"], fraction, seed))
    return dataclasses.replace(data, train=data.train.subset(keep))


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


UNKNOWN_VIEW = "view blank or unknown (not in the task's views)"
LEAK_DROPPED = "patient in more than one split (row removed: kept in its most held-out split)"
NO_LABEL_ROW = "no label row for the study (row removed: labelled task)"
UNREADABLE = "unreadable image (row removed)"
_HELD_OUT = {name: rank for rank, name in enumerate(SPLITS)}  # train < val < test


def official_split_used(split: pd.Series, spec: SplitSpec, has_external_test: bool) -> np.ndarray:
    """Rows whose official split the task uses (what ``assign_splits`` does not mark ``unused``)."""
    if spec.method == "patient-hash":
        return np.ones(len(split), dtype=bool)
    if has_external_test:
        used = ("train", "val", "")
    elif spec.test_split != "test":
        used = ("train", spec.test_split, "")
    else:
        used = (*SPLITS, "")
    return split.isin(used).to_numpy()


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


@dataclass
class SplitData:
    """One split of a task: its rows, targets and images, aligned row by row."""

    name: str
    frame: pd.DataFrame  # this split's rows, index reset
    targets: np.ndarray  # (N, L) float32; NaN = ignored by the label policy
    images: ImageView  # (N, S, S) uint8 aligned with frame
    # a label-fraction subset (``label_fraction``) remembers the whole split and its rows there, so that
    # the whole split's features are extracted once and shared by every fraction (features.split_features)
    whole: SplitData | None = None
    rows: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.frame)

    def subset(self, rows: np.ndarray) -> SplitData:
        """The split restricted to ``rows`` (positions in this split), in that order."""
        rows = np.asarray(rows, dtype=np.int64)
        whole, in_whole = (self, rows) if self.whole is None else (self.whole, self.rows[rows])
        return SplitData(self.name, self.frame.iloc[rows].reset_index(drop=True), self.targets[rows],
                         self.images.subset(rows), whole=whole, rows=in_whole)


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
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> rows or values removed
    images_fingerprint: str = ""  # the image store's source fingerprint: changes when any pixel file does
    extras: dict[str, object] = field(default_factory=dict)  # Records.extras of the test dataset (e.g. boxes)
    warnings: dict[str, int] = field(default_factory=dict)  # reason -> rows kept but suspicious (adapters')

    def split(self, name: str) -> SplitData:
        return {"train": self.train, "val": self.val, "test": self.test}[name]


@dataclass(frozen=True)
class TrainingLabels:
    """The task's labels of the training rows, for a method that learns from them (``MethodCard.uses_labels``).

    Offered only to such a method (``training_data(..., with_labels=True)``); a self-supervised method is
    never handed a label. ``targets`` are the task's label policy applied (1 / 0, NaN where the policy
    ignores a value), row-aligned with ``TrainingData.frame``: training rows only, by construction.
    """

    task: str  # the task whose labels these are
    task_version: int
    names: tuple[str, ...]  # the task's label set, in order
    targets: np.ndarray  # (N, L) float32, NaN = ignored
    # sha256 of the task name, label set, label policy, the whole cohort's split assignment and the
    # targets: part of the pretraining cache key, so a checkpoint is never reused for other labels
    fingerprint: str


@dataclass
class TrainingData:
    """What pretraining sees: the task's TRAINING split only."""

    dataset: str
    frame: pd.DataFrame
    images: ImageView
    data_source: str
    fingerprint: str  # of exactly these rows (pretraining cache key)
    labels: TrainingLabels | None = None  # only for a method that learns from the task's labels


StoreFactory = Callable[[list[str], int], object]


def _default_store(paths: list[str], size: int, progress: bool = True):
    from harness.data.images import image_store

    return image_store(paths, size, progress=progress)


def _frame_hash(frame: pd.DataFrame, cols: list[str]) -> str:
    h = hashlib.sha256()
    h.update(pd.util.hash_pandas_object(frame[cols].astype(str), index=False).values.tobytes())
    return h.hexdigest()


def dataset_fingerprint(records: Records, eval_records: Records | None = None) -> str:
    """``TaskData.dataset_fingerprint``: sha256 over the fingerprints of the task's datasets' records.

    Computed from the records alone (no image), so ``sweep --skip-existing`` can tell which data a
    record was computed on without building the cohort.
    """
    fp = records.fingerprint() + (eval_records.fingerprint() if eval_records is not None else "")
    return hashlib.sha256(fp.encode()).hexdigest()


def build_task_data(task: TaskSpec, records: Records, image_size: int, *, eval_records: Records | None = None,
                    store_factory: StoreFactory | None = None, progress: bool = True) -> TaskData:
    """Apply the task's cohort choices to records (see the module docstring).

    Raises:
        DataError: a patient in two of the task's splits (unless ``split.on_leak`` is ``drop``), an
            empty split, or rows without an official split where the task uses it.
    """
    for recs in (records, eval_records):
        missing = [n for n in task.labels if recs is not None and n not in recs.label_names]
        if missing:  # a collection's labels are its column map's, unknown until it is read (hf/<name>)
            column_map = recs.extras.get("column_map")
            raise DataError(f"{task.path or task.name}: labels: {missing[0]!r} is not a label of {recs.dataset} "
                            f"(its labels: {list(recs.label_names)}"
                            f"{f'; from {column_map}' if column_map else ''})")
    skipped = {f"{records.dataset}: {k}": v for k, v in records.skipped.items()}
    warnings = {f"{records.dataset}: {k}": v for k, v in records.warnings.items()}
    split_files = {records.dataset: records.split_files}
    frames = []
    for recs, is_eval in ((records, False), (eval_records, True)):
        if recs is None:
            continue
        if is_eval:
            skipped.update({f"{recs.dataset}: {k}": v for k, v in recs.skipped.items()})
            warnings.update({f"{recs.dataset}: {k}": v for k, v in recs.warnings.items()})
            split_files.setdefault(recs.dataset, recs.split_files)
        frame = _view_filter(task, recs, is_eval, eval_records is not None, skipped)
        if is_eval:
            frame = frame[frame["split"] == task.split.test_split].assign(_task_split="test")
        else:
            frame = frame.assign(_task_split=assign_splits(frame, task.split, eval_records is not None))
        frame = frame[frame["_task_split"].isin(SPLITS)]
        if task.labels and "labelled" in frame.columns:
            labelled = frame["labelled"].fillna(True).astype(bool).to_numpy()
            count(skipped, f"{recs.dataset}: {NO_LABEL_ROW}", int((~labelled).sum()))
            frame = frame[labelled]
        frames.append(frame.drop(columns="labelled", errors="ignore"))
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0].reset_index(drop=True)
    frame = _split_integrity(task, frame, split_files, skipped)

    factory = store_factory or (lambda paths, size: _default_store(paths, size, progress))
    store = factory(frame["path"].astype(str).tolist(), image_size)
    bad = np.asarray(store.bad, dtype=bool)
    if bad.any():
        skipped[UNREADABLE] = int(bad.sum())
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
    return TaskData(
        task=task, label_names=task.labels, train=parts["train"], val=parts["val"], test=parts["test"],
        data_source=records.data_source, dataset_fingerprint=dataset_fingerprint(records, eval_records),
        split_sha256=_frame_hash(frame, ["dataset", "image_id", "_task_split"]), image_size=image_size,
        skipped=skipped, images_fingerprint=str(getattr(store, "source_fingerprint", "")),
        extras=dict((eval_records or records).extras), warnings=warnings,
    )


def _view_filter(task: TaskSpec, recs: Records, is_eval: bool, has_external_test: bool,
                 skipped: dict[str, int]) -> pd.DataFrame:
    """The rows of the task's views; the ones left out for a blank or unknown view are counted.

    Only rows the task would otherwise use count (not, say, CheXpert's official test images in a
    task that tests on valid.csv): the count says what the views filter cost this cohort.
    """
    frame = recs.frame
    if task.views is None:
        return frame
    keep = frame["view"].isin(task.views).to_numpy()
    unknown = frame["view"].isin(("", *recs.unknown_views)).to_numpy()
    if is_eval:
        used = (frame["split"] == task.split.test_split).to_numpy()
    else:
        used = official_split_used(frame["split"], task.split, has_external_test)
    count(skipped, f"{recs.dataset}: {UNKNOWN_VIEW}", int((~keep & unknown & used).sum()))
    return frame[keep]


def _split_integrity(task: TaskSpec, frame: pd.DataFrame, split_files: dict[str, dict[str, str]],
                     skipped: dict[str, int]) -> pd.DataFrame:
    """Refuse (or, with ``on_leak: drop``, resolve) patients in two of the task's splits; then assert none is."""
    leaks = split_leaks(frame, "_task_split")
    if leaks and task.split.on_leak != "drop":
        (dataset, patient), _ = next(iter(leaks.items()))
        mine = frame[(frame["dataset"] == dataset) & (frame["patient_id"] == patient)]
        official = tuple(s for s in SPLITS if s in set(mine["split"])) or tuple(sorted(set(mine["_task_split"])))
        files = leak_files(split_files.get(dataset, {}), official)
        where = task.path or f"task {task.name}"
        raise DataError(f"{files}: split: {dataset} patient {patient} is in both {split_names(official)} "
                        f"({len(leaks)} patient(s) of the cohort in more than one split); the split is not "
                        f"patient-disjoint: fix the file, or set split: {{on_leak: drop}} in {where} to keep each such "
                        "patient only in its most held-out split")
    if leaks:
        keys = pd.MultiIndex.from_frame(frame[["dataset", "patient_id"]])
        most = pd.Series({k: max(v, key=_HELD_OUT.__getitem__) for k, v in leaks.items()})
        held_out = most.reindex(keys).to_numpy()
        drop = pd.notna(held_out) & (frame["_task_split"].to_numpy() != held_out)
        for dataset in frame.loc[drop, "dataset"].unique():
            count(skipped, f"{dataset}: {LEAK_DROPPED}", int((drop & (frame["dataset"] == dataset).to_numpy()).sum()))
        frame = frame[~drop].reset_index(drop=True)
    still = split_leaks(frame, "_task_split")
    if still:  # every split method must end patient-disjoint; reaching this is a harness bug
        (dataset, patient), splits = next(iter(still.items()))
        raise DataError(f"task {task.name}: {dataset} patient {patient} is in {split_names(splits)} after the "
                        "split assignment")
    return frame


def training_labels(data: TaskData) -> TrainingLabels:
    """The task's labels of its training split (see ``TrainingLabels``).

    Raises:
        DataError: the task has no labels (a label-supervised method has nothing to learn from).
    """
    task = data.task
    if not task.labels:
        raise DataError(f"task {task.name} has no labels: a method that learns from a task's labels cannot run on it")
    targets = np.ascontiguousarray(data.train.targets, dtype=np.float32)
    h = hashlib.sha256()
    h.update(repr((task.name, tuple(task.labels), dataclasses.asdict(task.label_policy), data.split_sha256,
                   targets.shape)).encode())
    h.update(np.nan_to_num(targets, nan=-1.0).tobytes())
    return TrainingLabels(task=task.name, task_version=task.version, names=tuple(task.labels), targets=targets,
                          fingerprint=h.hexdigest())


def training_data(data: TaskData, with_labels: bool = False) -> TrainingData:
    """The pretraining view of a task: its training split, nothing else.

    Args:
        data: the task's cohort.
        with_labels: also hand over the training split's labels (``TrainingLabels``): only for a method
            whose card says ``uses_labels``.
    """
    from harness.data.images import fingerprint as files_fingerprint

    train = data.train
    rows = _frame_hash(train.frame, ["dataset", "image_id"])
    # the pixels of THESE rows (paths, sizes, mtimes), not of the whole image store: two tasks whose
    # stores differ elsewhere (an external test set, other views) share one pretraining
    pixels = (files_fingerprint(train.frame["path"].astype(str).tolist(), data.image_size)
              if data.images_fingerprint and "path" in train.frame else data.images_fingerprint)
    fingerprint = hashlib.sha256(f"{rows}:{pixels}:{data.image_size}".encode()).hexdigest()
    return TrainingData(dataset=data.task.dataset, frame=train.frame, images=train.images,
                        data_source=data.data_source, fingerprint=fingerprint,
                        labels=training_labels(data) if with_labels else None)


def check_pretraining(train: TrainingData, data: TaskData, what: str) -> TrainingData:
    """``train`` unchanged, after proving it shares no (dataset, patient) with ``data``'s val or test split.

    Pretraining on an evaluation patient (another dataset's training rows that hold the task's test
    patients, a ``--pretrain-on`` or a method's ``load_source`` whose split differs from the task's)
    would inflate every number of the run.

    Args:
        train: the rows a method is about to pretrain on.
        data: the task's cohort.
        what: where ``train`` comes from, for the message (``--pretrain-on chexpert``, ...).

    Raises:
        DataError: one line naming the dataset, the first shared patient and the splits.
    """
    if "patient_id" not in train.frame or "dataset" not in train.frame:
        return train
    mine = pd.MultiIndex.from_frame(train.frame[["dataset", "patient_id"]].astype(str)).unique()
    for name in ("val", "test"):
        held_out = data.split(name).frame
        keys = pd.MultiIndex.from_frame(held_out[["dataset", "patient_id"]].astype(str))
        shared = keys[keys.isin(mine)].unique()
        if len(shared):
            dataset, patient = shared[0]
            raise DataError(f"pretraining data ({what}) shares {dataset} patient {patient} with the {name} split "
                            f"of task {data.task.name} ({len(shared)} patient(s) in both the pretraining rows and "
                            f"{name}): a method must never pretrain on the patients it is evaluated on")
    return train
