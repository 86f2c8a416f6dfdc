"""A tiny image-text world shared by the retrieval / regeneration / localization / multimodal tests.

Images are 16x16 dark noise with a bright 4x4 blob in one cell of a 4x4 grid;
the cell is set by the study's class (one of the 5 CheXpert competition labels,
``CELL``). Reports say ``"there is <class>"`` in FINDINGS; the INDICATION is
``"fever"`` or ``"trauma"`` (its own label, ``Pneumonia``, so that a model must
read it). ``task_data`` runs the real ``cohort.build_task_data`` on ``Records``
built here with an in-memory store.

``JointEncoder`` is a hand-made joint space of 16 dimensions, one per grid
cell: a region's feature is its cell's one-hot scaled by the cell's mean
brightness, the global feature is the 16 cell brightnesses, and a text is the
sum of the one-hots of the class names it mentions. So the right phrase points at
the right cell, and an image is closest to the report of its class.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from harness.cohort import TaskData, build_task_data
from harness.data.schema import BASE_COLUMNS, CHEXPERT_5, Records
from harness.encoders import MethodCard, Preprocess, capabilities
from harness.tasks import LabelPolicy, SplitSpec, TaskSpec
from tests.support import ArrayStore, eval_context

SIZE = 16
GRID = 4
CELL = {name: cell for name, cell in zip(CHEXPERT_5, (0, 3, 12, 15, 5), strict=True)}  # class -> grid cell
LABELS = (*CHEXPERT_5, "Pneumonia")


def make_images(cells: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    images = rng.integers(0, 40, size=(len(cells), SIZE, SIZE)).astype(np.uint8)
    side = SIZE // GRID
    for i, cell in enumerate(cells):
        r, c = divmod(int(cell), GRID)
        images[i, r * side:(r + 1) * side, c * side:(c + 1) * side] = 220
    return images


def make_records(n_studies: int = 80, seed: int = 0, lateral_every: int = 4, empty_every: int = 0
                 ) -> tuple[Records, np.ndarray]:
    """One or two images per study (every ``lateral_every``-th study adds a LATERAL), 2 studies per patient."""
    rng = np.random.default_rng(seed)
    classes = rng.integers(0, len(CHEXPERT_5), size=n_studies)
    fever = rng.random(n_studies) < 0.5
    rows = []
    for s in range(n_studies):
        views = ["PA", "LATERAL"] if lateral_every and s % lateral_every == 0 else ["PA"]
        name = CHEXPERT_5[classes[s]]
        empty = empty_every and s % empty_every == 1
        for v, view in enumerate(views):
            rows.append({"study": s, "view": view, "class": classes[s], "image_id": f"i{s}-{v}",
                         "findings": "" if empty else f"there is {name.lower()}",
                         "impression": "" if empty else "no other acute process",
                         "indication": "fever, cough" if fever[s] else "trauma", "fever": fever[s]})
    df = pd.DataFrame(rows)
    patient = df["study"] // 2
    split = np.asarray(["train", "train", "train", "val", "test"])[patient % 5]
    frame = pd.DataFrame({
        "dataset": "toy-it", "image_id": df["image_id"], "patient_id": [f"p{p}" for p in patient],
        "study_id": [f"s{s}" for s in df["study"]], "view": df["view"], "split": split,
        "path": [f"/nowhere/{i}.png" for i in df["image_id"]], "institution": "",
        "indication": df["indication"], "findings": df["findings"], "impression": df["impression"],
        "age": 60.0, "sex": "",
    })
    for c, name in enumerate(CHEXPERT_5):
        frame[name] = (df["class"] == c).astype(float)
    frame["Pneumonia"] = df["fever"].astype(float)
    assert set(BASE_COLUMNS) <= set(frame.columns)
    records = Records(dataset="toy-it", frame=frame, label_names=LABELS, root=Path("/nowhere"),
                      data_source="synthetic")
    records.validate()
    images = make_images(np.array([CELL[CHEXPERT_5[c]] for c in df["class"]]), rng)
    return records, images


def toy_task(**overrides) -> TaskSpec:
    base = TaskSpec(name="toy-it", version=1, description="toy", source="test", dataset="toy-it",
                    protocol="retrieval", main_metric="r_mean", metrics=("r_mean",), requires=("image", "text"),
                    labels=LABELS, label_policy=LabelPolicy(uncertain="zero", blank="zero"), split=SplitSpec())
    return dataclasses.replace(base, **overrides)


def task_data(task: TaskSpec | None = None, records: Records | None = None, images: np.ndarray | None = None,
              extras: dict | None = None, **record_args) -> TaskData:
    if records is None:
        records, images = make_records(**record_args)
    if extras:
        records.extras.update(extras)
    by_path = dict(zip(records.frame["path"], images, strict=True))

    def factory(paths: list[str], size: int) -> ArrayStore:
        assert size == SIZE
        return ArrayStore(np.stack([by_path[p] for p in paths]))

    return build_task_data(task or toy_task(), records, SIZE, store_factory=factory, progress=False)


class JointEncoder(nn.Module):
    """The hand-made 16-d joint image-text space of the module docstring (no learning)."""

    joint_space = True

    def __init__(self) -> None:
        super().__init__()
        self.card = MethodCard(name="joint-toy", paper="test", preprocess=Preprocess(SIZE, 1, (0.5,), (0.5,)),
                               capabilities=("image", "image_regions", "text", "localization"))
        self.register_buffer("cells", torch.eye(GRID * GRID))
        self.num_features = GRID * GRID
        self.region_grid = (GRID, GRID)

    def _brightness(self, images: torch.Tensor) -> torch.Tensor:
        x = images[:, :1] * 0.5 + 0.5  # back to [0, 1]
        return F.avg_pool2d(x, SIZE // GRID).flatten(1)  # (B, 16) row-major cells

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self._brightness(images)

    def encode_image_regions(self, images: torch.Tensor) -> torch.Tensor:
        return self._brightness(images)[:, :, None] * self.cells[None]  # (B, 16, 16)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        out = torch.full((len(texts), GRID * GRID), 1e-3)
        for i, text in enumerate(texts):
            for name, cell in CELL.items():
                if name.lower() in text.lower():
                    out[i] += self.cells[cell]
        return out


class RegionEncoder(nn.Module):
    """A fixed random conv (1 -> 8 channels) pooled to a 4x4 grid: image-only, trainable, with regions."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.card = MethodCard(name="region-toy", paper="test", preprocess=Preprocess(SIZE, 1, (0.5,), (0.5,)))
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.num_features = 8
        self.region_grid = (GRID, GRID)

    def encode_image_regions(self, images: torch.Tensor) -> torch.Tensor:
        x = F.avg_pool2d(torch.relu(self.conv(images)), SIZE // GRID)  # (B, 8, 4, 4)
        return x.flatten(2).transpose(1, 2)  # (B, 16, 8)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.encode_image_regions(images).mean(1)


context = eval_context  # the tests of this family build their contexts like the runner


def test_toy_world_is_consistent():
    data = task_data()
    enc = JointEncoder()
    assert {"image", "image_regions", "text", "localization", "trainable"} <= capabilities(enc)
    assert set(data.test.frame["view"]) == {"PA", "LATERAL"}
    x = (torch.from_numpy(data.test.images[np.arange(4)]).float()[:, None] / 255 - 0.5) / 0.5
    texts = data.test.frame["findings"].iloc[:4].tolist()
    sim = F.normalize(enc.encode_image(x), dim=1) @ F.normalize(enc.encode_text(texts), dim=1).T
    assert (sim.argmax(1) == torch.arange(4)).float().mean() > 0 and torch.allclose(sim.diag(), sim.max(1).values)
