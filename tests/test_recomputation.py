"""What an independent recomputation found (issue 21, item 9), each fixed and pinned:
(a) a near-constant similarity map is flat, not stretched rounding noise; (b) 5x200 ties are pessimistic,
whatever the gallery order; (c) precision@K divides by K; (d) the record and every protocol's details agree
on the training rows a label fraction leaves; (e) every task says what validates at a label fraction, and
F1 macro's rule is named."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_classification_support import TinyEncoder
from test_classification_support import context as cls_context
from test_classification_support import task_data as cls_task_data
from test_imagetext_support import CELL, JointEncoder, context, make_records, task_data, toy_task
from test_localization import LOC_TASK, boxes_for
from test_multimodal import FAST, mm_data

from harness import metrics
from harness.cli import main
from harness.cohort import label_fraction
from harness.dispatch.runner import RunRequest, prepare
from harness.metrics.scoring import F1_RULE
from harness.protocols import finetune, linear_probe, localization, multimodal, retrieval, retrieval_scores
from harness.tasks import load_task, task_files

# ----------------------------------------------------------------------------------------- (a)


def test_a_near_constant_map_is_flat_not_stretched_noise():
    box = np.zeros((1, 8, 8), bool)
    box[0, :4, :4] = True  # the top-left quarter
    noisy = torch.full((1, 1, 4, 4), 0.5)
    noisy[0, 0, 0, 0] += 3e-8  # float rounding: min-max would stretch it into a map that "points" into the box
    assert localization.flat_maps(noisy).tolist() == [True]
    maps = localization.upsample_normalise(noisy, 8)
    assert torch.equal(maps, torch.zeros(1, 8, 8))
    hits, ious = localization.score_maps(maps.numpy(), box, 0.5, localization.flat_maps(noisy).numpy())
    assert hits.tolist() == [0.0] and ious.tolist() == [0.0]  # no localization, whatever the first pixel is
    real = torch.full((1, 1, 4, 4), 0.5)
    real[0, 0, 0, 0] += 1e-3  # a small but real peak: kept
    assert localization.flat_maps(real).tolist() == [False]
    hits, _ = localization.score_maps(localization.upsample_normalise(real, 8).numpy(), box, 0.5,
                                      localization.flat_maps(real).numpy())
    assert hits.tolist() == [1.0]


class OneRegion(JointEncoder):
    """The joint toy space with a 1x1 region grid: one region, the whole image; no place to point at."""

    def __init__(self) -> None:
        super().__init__()
        self.region_grid = (1, 1)
        self.register_buffer("variant", torch.ones(1))  # its own weights hash: never JointEncoder's cached features

    def encode_image_regions(self, images: torch.Tensor) -> torch.Tensor:
        return super().encode_image_regions(images).sum(1, keepdim=True)


def test_a_1x1_region_grid_scores_no_localization(tmp_path):
    records, images = make_records(n_studies=60)
    data = task_data(task=LOC_TASK, records=records, images=images)
    data.extras["boxes"] = boxes_for(data)
    result = localization.run(context(data, OneRegion(), tmp_path, args={"n_bootstrap": 20}))
    assert result.details["flat_maps"] == result.details["n_cases"] > 0
    assert result.metrics == {"pointing_game": 0.0, "iou": 0.0}
    assert result.details["random_baseline"] == {"pointing_game": 0.0, "iou": 0.0}  # one random region: flat too
    # without the flat rule, an all-zero map's first pixel (top-left) is its maximum: a hit for every top-left box
    masks = np.stack([localization.box_mask(row[["x0", "y0", "x1", "y1"]].to_numpy(float)[None], 16)
                      for _, row in boxes_for(data).iterrows()])
    unflagged, _ = localization.score_maps(np.zeros(masks.shape), masks, 0.5)
    top_left = np.mean([CELL[label] == 0 for label in boxes_for(data)["label"]])
    assert unflagged.mean() == pytest.approx(top_left) and top_left > 0  # a score for pointing nowhere


# ----------------------------------------------------------------------------------------- (b), (c)


def test_5x200_ties_are_pessimistic_whatever_the_gallery_order():
    classes = np.repeat(np.arange(5), 4)  # a gallery sorted by class, as 5x200 draws it
    constant = F.normalize(torch.ones(20, 3), dim=1)
    shuffled = np.random.default_rng(0).permutation(classes)
    sorted_ = retrieval_scores.class_metrics(constant, constant, classes, ks=[1, 5, 10])
    mixed = retrieval_scores.class_metrics(constant, constant, shuffled, ks=[1, 5, 10])
    assert sorted_ == mixed  # the order of the gallery no longer matters
    assert all(v == 0.0 for v in sorted_.values())  # every tie ranks the 16 other-class items first


def test_5x200_run_with_a_constant_encoder_scores_zero(tmp_path):
    class Constant(JointEncoder):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("variant", torch.zeros(1))  # its own weights hash (the feature cache's key)

        def encode_image(self, images):
            return torch.ones(len(images), self.num_features)

        def encode_text(self, texts):
            return torch.ones(len(texts), self.num_features)

    data = task_data(task=toy_task(metrics=("i2t_hit5", "i2t_prec5", "t2i_hit5"), main_metric="i2t_hit5"),
                     n_studies=200)
    result = retrieval.run(context(data, Constant(), tmp_path, args={"mode": "class-5x200", "per_class": 4,
                                                                     "pool_splits": ["val", "test"]}))
    assert result.details["ties"] == "pessimistic" and result.details["n_items"] == 20
    assert result.metrics["i2t_hit5"] == result.metrics["i2t_prec5"] == result.metrics["t2i_hit5"] == 0.0


def test_precision_at_k_divides_by_k():
    relevance = np.array([[True, False, True], [True, True, True]])  # galleries of 3
    assert metrics.precision_at_k(relevance, 5) == pytest.approx((2 / 5 + 3 / 5) / 2)  # not / min(K, N)
    assert metrics.precision_at_k(relevance, 2) == pytest.approx((1 / 2 + 2 / 2) / 2)
    # and the protocol reports K >= N as not measurable instead (item 6)
    emb = F.normalize(torch.eye(3), dim=1)
    out = retrieval_scores.class_metrics(emb, emb, np.arange(3), ks=[1, 5])
    assert out["i2t_prec1"] == 1.0 and np.isnan(out["i2t_prec5"]) and np.isnan(out["i2t_hit5"])


# ----------------------------------------------------------------------------------------- (d)


def test_the_record_and_the_probe_agree_on_the_rows_a_label_fraction_leaves(tmp_path):
    results = tmp_path / "results"
    argv = ["-q", "run", "--method", "random", "--task", "mock", "--profile", "smoke", "--fraction", "0.5",
            "--seed", "1", "--results", str(results)]
    assert main(argv) == 0
    [path] = results.rglob("*.json")
    rec = json.loads(path.read_text())
    full = prepare(RunRequest(method="random", task="mock", profile="smoke", progress=False)).data
    used = label_fraction(full, 0.5, 1)
    assert rec["n"]["train"] == rec["details"]["n"]["train"] == len(used.train) < len(full.train)
    assert rec["details"]["n"]["train_patients"] == used.train.frame["patient_id"].nunique()
    assert rec["n"]["val"] == rec["details"]["n"]["val"] == len(full.val)  # validation is never subsampled
    assert rec["n"]["test"] == rec["details"]["n"]["test"] == len(full.test)


def test_every_training_protocol_reports_the_fractions_rows(tmp_path):
    data = cls_task_data()
    probe = linear_probe.run(cls_context(data, TinyEncoder(), tmp_path, {"l2_grid": [1e-2], "bootstrap": 20},
                                         fraction=0.3))
    tuned = finetune.run(cls_context(data, TinyEncoder(), tmp_path, {"epochs": 1, "batch_size": 16, "bootstrap": 20},
                                     fraction=0.3))
    part = len(label_fraction(data, 0.3, 0).train)
    assert part < len(data.train)
    assert probe.details["n"]["train"] == tuned.details["n"]["train"] == part
    mm = mm_data(n_studies=60)
    from test_imagetext_support import RegionEncoder

    mixed = multimodal.run(context(mm, RegionEncoder(), tmp_path, args={**FAST, "epochs": 1}, fraction=0.5))
    assert mixed.details["n"]["train"] == mixed.details["n_train"] == len(label_fraction(mm, 0.5, 0).train)
    assert mixed.details["n"]["train"] < len(mm.train) and mixed.details["n"]["val"] == len(mm.val)


# ----------------------------------------------------------------------------------------- (e)


CLASSIFICATION = ("linear-probe", "finetune", "multimodal-cls")


@pytest.mark.parametrize("path", [p for p in task_files() if load_task(p).protocol in CLASSIFICATION],
                         ids=lambda p: p.stem)
def test_each_task_says_what_validates_at_a_label_fraction(path):
    spec = load_task(path)
    source = " ".join(spec.source.split())
    assert "only the training split is subsampled" in source and "the whole validation split" in source
    if spec.name != "mock":  # a unit-test task: one sentence
        assert "at every fraction" in source
    if "f1_macro" in spec.metrics:
        assert "F1 macro:" in source and "labels without one are left out" in source


def test_the_record_names_the_validation_and_f1_rule(tmp_path):
    data = cls_task_data()
    result = linear_probe.run(cls_context(data, TinyEncoder(), tmp_path, {"l2_grid": [1e-2], "bootstrap": 20},
                                          fraction=0.1))
    assert result.details["f1_rule"] == F1_RULE
    assert result.details["validation"] == (f"the whole validation split ({len(data.val)} images) at every label "
                                            "fraction: it chooses the protocol's hyperparameters and the F1 thresholds")
