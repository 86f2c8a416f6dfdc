"""Localization: box masks, pointing game and IoU on hand-made maps, and phrase grounding end to end
with the hand-made joint encoder (which points at the right cell; a random map does not)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from test_imagetext_support import CELL, GRID, JointEncoder, RegionEncoder, context, make_records, task_data, toy_task

from harness.data.schema import DataError
from harness.protocols import localization
from harness.protocols.errors import ProtocolError

LOC_TASK = toy_task(protocol="localization", metrics=("pointing_game", "iou"), main_metric="pointing_game")


def test_phrases_and_box_masks():
    assert localization.phrase("there is {label}", "Pleural_Thickening") == "there is pleural thickening"
    mask = localization.box_mask(np.array([[0.25, 0.5, 0.5, 1.0]]), 8)
    expected = np.zeros((8, 8), bool)
    expected[4:8, 2:4] = True
    assert np.array_equal(mask, expected)
    tiny = localization.box_mask(np.array([[0.51, 0.51, 0.52, 0.52]]), 8)  # inside one pixel
    assert tiny.sum() == 1 and tiny[4, 4]
    union = localization.box_mask(np.array([[0, 0, 0.25, 0.25], [0.75, 0.75, 1, 1]]), 8)
    assert union.sum() == 8


def test_pointing_game_and_iou_on_hand_made_maps():
    masks = np.zeros((3, 4, 4), bool)
    masks[:, :2, :2] = True  # the box: top-left 2x2
    maps = np.zeros((3, 4, 4))
    maps[0, 0, 1] = 1.0  # max inside, only one pixel >= 0.5: IoU 1/4
    maps[1, 3, 3] = 1.0  # max outside: a miss, IoU 0
    maps[2, :2, :2] = 0.9  # exactly the box: a hit, IoU 1
    maps[2, :2, 2] = 0.6
    maps[2, 0, 0] = 1.0
    hits, ious = localization.score_maps(maps, masks, threshold=0.5)
    assert hits.tolist() == [1, 0, 1]
    assert ious == pytest.approx([0.25, 0.0, 4 / 6])


def test_maps_are_min_max_normalised():
    regions = torch.zeros(1, 4, 2)
    regions[0, :, 0] = torch.tensor([1.0, 2.0, 3.0, 4.0])
    regions[0, :, 1] = 1.0
    maps = localization.similarity_maps(regions, torch.tensor([[1.0, 0.0]]), (2, 2), 8)
    assert maps.shape == (1, 8, 8) and maps.min() == 0 and maps.max() == 1
    assert maps[0, 7, 7] == 1 and maps[0, 0, 0] == 0  # region 3 (bottom right) is the most similar
    flat = localization.upsample_normalise(torch.ones(1, 1, 2, 2), 4)
    assert torch.equal(flat, torch.zeros(1, 4, 4))


def boxes_for(data, extra_rows=()):
    """A box on the blob cell of every test PA image's class, plus ``extra_rows``."""
    frame = data.test.frame
    rows = []
    side = 1 / GRID
    for _, r in frame[frame["view"] == "PA"].iterrows():
        label = next(n for n in CELL if r[n] == 1)
        row, col = divmod(CELL[label], GRID)
        rows.append({"image_id": r["image_id"], "label": label, "x0": col * side, "y0": row * side,
                     "x1": (col + 1) * side, "y1": (row + 1) * side})
    return pd.DataFrame([*rows, *extra_rows])


def test_grounding_end_to_end(tmp_path):
    records, images = make_records(n_studies=60)
    data = task_data(task=LOC_TASK, records=records, images=images)
    boxes = boxes_for(data, extra_rows=[{"image_id": "not-a-test-image", "label": "Edema", "x0": 0, "y0": 0,
                                         "x1": 0.5, "y1": 0.5}])
    first = boxes.iloc[0]
    boxes = pd.concat([boxes, pd.DataFrame([{**first.to_dict(), "x0": 0.0, "y0": 0.0, "x1": 0.1, "y1": 0.1}])])
    data.extras["boxes"] = boxes
    result = localization.run(context(data, JointEncoder(), tmp_path,
                                      args={"templates": ["there is {label}", "{label}"], "n_bootstrap": 30}))
    n_pa = int((data.test.frame["view"] == "PA").sum())
    assert result.details["n_cases"] == n_pa  # two boxes of one label on one image are one case
    assert result.details["boxes_outside_test"] == 1
    assert result.metrics["pointing_game"] == 1.0 and result.metrics["iou"] > 0.4
    random = result.details["random_baseline"]
    assert random["pointing_game"] < 0.5 and random["iou"] < result.metrics["iou"]
    assert set(result.details["per_label"]) <= set(CELL)
    lo, hi = result.ci["iou"]
    assert lo <= result.metrics["iou"] <= hi
    assert result.predictions["pointing_hits"].shape == (n_pa,)


def test_refusals(tmp_path):
    records, images = make_records(n_studies=30)
    data = task_data(task=LOC_TASK, records=records, images=images)
    with pytest.raises(ProtocolError, match="no boxes"):
        localization.run(context(data, JointEncoder(), tmp_path))
    data.extras["boxes"] = boxes_for(data)
    with pytest.raises(ProtocolError, match="localization"):
        localization.run(context(data, RegionEncoder(), tmp_path))
    with pytest.raises(ProtocolError, match="zero-shot"):
        localization.run(context(data, JointEncoder(), tmp_path, fraction=0.5))
    with pytest.raises(ProtocolError, match="template"):
        localization.run(context(data, JointEncoder(), tmp_path, args={"templates": ["no label here"]}))
    bad = boxes_for(data)
    bad.loc[2, "x1"] = bad.loc[2, "x0"] - 0.1
    data.extras["boxes"] = bad
    with pytest.raises(DataError, match="row 2"):
        localization.run(context(data, JointEncoder(), tmp_path))
    unsized = boxes_for(data)
    unsized.loc[1, ["x0", "y0", "x1", "y1"]] = np.nan  # the adapter could not read the image's size
    data.extras["boxes"] = unsized
    result = localization.run(context(data, JointEncoder(), tmp_path, args={"n_bootstrap": 10}))
    assert result.details["boxes_without_coordinates"] == 1 and result.details["n_cases"] == len(unsized) - 1
