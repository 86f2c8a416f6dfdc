"""A tiny real in-memory classification dataset and encoder, shared by the probe / fine-tune / feature tests.

Images are 16x16 noise with a bright blob in quadrant ``k`` when label ``k`` is
positive, so any encoder that keeps coarse location separates the labels.
``task_data`` runs the real ``cohort.build_task_data`` on ``Records`` built here,
with an in-memory store instead of the JPEG cache.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from harness.cohort import TaskData, build_task_data
from harness.data.schema import BASE_COLUMNS, Records
from harness.encoders import MethodCard, Preprocess
from harness.tasks import LabelPolicy, SplitSpec, TaskSpec
from tests.support import ArrayStore, eval_context

LABELS = ("Atelectasis", "Cardiomegaly", "Edema")
SIZE = 16


class TinyEncoder(nn.Module):
    """conv-BN-ReLU-conv, 2x2 average pool: 64 features that keep the quadrant."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.card = MethodCard(name="tiny", paper="test", preprocess=Preprocess(SIZE, 1, (0.5,), (0.5,)))
        self.body = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.Conv2d(8, 16, 3, padding=1), nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.num_features = 64

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images)


def make_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    images = rng.integers(0, 90, size=(len(labels), SIZE, SIZE)).astype(np.uint8)
    h = SIZE // 2
    for k in range(labels.shape[1]):
        r, c = divmod(k, 2)
        pos = labels[:, k] == 1
        images[pos, r * h + 1:(r + 1) * h - 1, c * h + 1:(c + 1) * h - 1] = 230
    return images


def make_records(n_patients: int = 60, per_patient: int = 2, seed: int = 0, dataset: str = "toy",
                 splits: tuple[str, ...] = ("train", "train", "train", "val", "test")) -> tuple[Records, np.ndarray]:
    """Records (one row per image) and the images, split by patient, with uncertain / blank labels mixed in."""
    rng = np.random.default_rng(seed)
    n = n_patients * per_patient
    patient = np.repeat(np.arange(n_patients), per_patient)
    labels = (rng.random((n, len(LABELS))) < 0.4).astype(np.float64)
    images = make_images(labels, rng)
    stored = labels.copy()
    stored[rng.random(stored.shape) < 0.05] = -1.0  # uncertain: the label policy decides
    frame = pd.DataFrame({
        "dataset": dataset, "image_id": [f"{dataset}-{i}" for i in range(n)],
        "patient_id": [f"p{p}" for p in patient], "study_id": [f"s{i}" for i in range(n)],
        "view": np.where(np.arange(n) % 7 == 6, "LATERAL", "PA"),
        "split": np.asarray(splits)[patient % len(splits)], "path": [f"/nowhere/{i}.png" for i in range(n)],
        "institution": "", "indication": "", "findings": "", "impression": "", "age": 50.0, "sex": "",
    })
    for j, name in enumerate(LABELS):
        frame[name] = stored[:, j]
    assert set(BASE_COLUMNS) <= set(frame.columns)
    records = Records(dataset=dataset, frame=frame, label_names=LABELS, root=Path("/nowhere"),
                      data_source="synthetic")
    records.validate()
    return records, images


def toy_task(**overrides) -> TaskSpec:
    base = TaskSpec(name="toy-cls", version=1, description="toy", source="test", dataset="toy",
                    protocol="linear-probe", main_metric="auroc_macro",
                    metrics=("auroc_macro", "auroc_micro", "auprc_macro", "f1_macro"), views=("PA", "AP"),
                    labels=LABELS, label_policy=LabelPolicy(uncertain="ignore", blank="zero"), split=SplitSpec())
    return dataclasses.replace(base, **overrides)


def task_data(task: TaskSpec | None = None, seed: int = 0, eval_seed: int | None = None) -> TaskData:
    task = task or toy_task()
    records, images = make_records(seed=seed)
    by_path = dict(zip(records.frame["path"], images, strict=True))
    eval_records = None
    if eval_seed is not None:  # a second dataset whose "val" rows are the test set (chexpert-ext)
        eval_records, eval_images = make_records(n_patients=20, seed=eval_seed, dataset="other",
                                                 splits=("train", "val"))
        eval_records.frame["path"] = [f"/elsewhere/{i}.png" for i in range(len(eval_records.frame))]
        by_path.update(zip(eval_records.frame["path"], eval_images, strict=True))

    def factory(paths: list[str], size: int) -> ArrayStore:
        assert size == SIZE
        return ArrayStore(np.stack([by_path[p] for p in paths]))

    return build_task_data(task, records, SIZE, eval_records=eval_records, store_factory=factory, progress=False)


context = eval_context  # the tests of this family build their contexts like the runner


def test_toy_task_data_is_split_by_patient_with_views_filtered():
    data = task_data()
    assert {len(data.train), len(data.val), len(data.test)} and len(data.train) > len(data.test) > 0
    assert set(data.train.frame["patient_id"]).isdisjoint(data.test.frame["patient_id"])
    assert set(data.test.frame["view"]) == {"PA"}
    assert np.isnan(data.train.targets).any()  # uncertain -> ignored
    assert data.test.images[np.arange(3)].shape == (3, SIZE, SIZE)
