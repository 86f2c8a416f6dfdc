"""``pixels``: downsampled raw pixels as features, checked against a downsampling computed by hand, and run
end to end on every kind of task its capabilities allow (probe, fine-tune, regeneration) and refused on
the others (retrieval, phrase grounding: no text)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.catalog import METHODS
from harness.cli import main
from harness.encoders.preprocess import to_model_input
from harness.features import weights_sha256


def pixels(profile: str = "smoke", **overrides):
    method = METHODS.get("pixels")()
    config = {**method.profiles[profile], **overrides}
    return method, method.load(None, config)


def test_features_are_the_block_means_of_a_fixed_image():
    _, encoder = pixels("smoke")  # 32 px, grid 8 (4 x 4 px blocks), regions 4 x 4 of 2 x 2
    image = ((np.arange(32 * 32).reshape(32, 32) * 7) % 256).astype(np.uint8)  # a fixed, non-smooth image
    x = to_model_input(image[None], encoder.card.preprocess)  # (1, 1, 32, 32), the [0, 1] grey values
    assert x.shape == (1, 1, 32, 32) and torch.equal(x[0, 0], torch.from_numpy(image).float() / 255)

    # by hand: feature (i, j) is the mean of the 4 x 4 block at rows 4i.., columns 4j.., in [0, 1]
    thumb = np.zeros((8, 8))
    for i in range(8):
        for j in range(8):
            thumb[i, j] = image[4 * i:4 * i + 4, 4 * j:4 * j + 4].astype(np.float64).mean() / 255
    with torch.no_grad():
        features = encoder.encode_image(x)[0].numpy()
        regions = encoder.encode_image_regions(x)[0].numpy()
    np.testing.assert_allclose(features, thumb.reshape(-1), atol=1e-6)
    # region (a, b), row-major over the 4 x 4 grid, is the 2 x 2 patch of the thumbnail at rows 2a.., columns 2b..
    assert regions.shape == (16, 4) and encoder.region_grid == (4, 4)
    for a in range(4):
        for b in range(4):
            np.testing.assert_allclose(regions[4 * a + b], thumb[2 * a:2 * a + 2, 2 * b:2 * b + 2].reshape(-1),
                                       atol=1e-6)


def test_geometry_is_in_the_weights_hash_and_bad_sizes_are_refused():
    method, smoke = pixels("smoke")
    _, other_grid = pixels("smoke", grid=16, regions=4)
    _, again = pixels("smoke")
    # no parameters, but the feature cache and the frozen guard still tell the configurations apart
    assert not list(smoke.parameters())
    assert weights_sha256(smoke) == weights_sha256(again) != weights_sha256(other_grid)
    assert other_grid.encode_image(torch.zeros(1, 1, 32, 32)).shape == (1, 256)
    with pytest.raises(ValueError, match="image_size 32 must be a multiple of grid 7"):
        method.config({**method.profiles["smoke"], "grid": 7})
    with pytest.raises(ValueError, match="grid 8 must be a multiple of regions 3"):
        method.config({**method.profiles["smoke"], "regions": 3})
    for profile in ("smoke", "small", "paper"):  # the card states the size, per profile
        cfg = method.config(method.profiles[profile])
        assert f"{cfg.grid} x {cfg.grid}" in method.card_for(cfg).notes
        assert not method.card_for(cfg).uses_labels


FINETUNE_MOCK = """\
name: mock-finetune
version: 1
description: the mock task, fine-tuned (test only)
source: harness design (tests only)
dataset: mock
protocol: finetune
requires: [image, trainable]
labels: [Square, Bar]
label_policy: {uncertain: zero, blank: zero}
split: {method: patient-hash, val_fraction: 0.2, test_fraction: 0.3, salt: mock-v1}
fractions: [1.0]
seeds: [0]
metrics: [auroc_macro, auroc_micro, auprc_macro, f1_macro]
main_metric: auroc_macro
protocol_args: {epochs: 2, batch_size: 8, eval_batch_size: 32, patience: 1, bootstrap: 20}
"""


def test_pixels_on_mock_probe_and_finetune(tmp_path: Path, capsys):
    results = tmp_path / "results"
    assert main(["-q", "run", "--method", "pixels", "--task", "mock", "--profile", "smoke",
                 "--results", str(results)]) == 0, capsys.readouterr().err[-2000:]
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "mock-finetune.yaml").write_text(FINETUNE_MOCK)
    assert main(["-q", "run", "--method", "pixels", "--task", "mock-finetune", "--tasks-dir", str(tmp_path / "tasks"),
                 "--profile", "smoke", "--results", str(results)]) == 0, capsys.readouterr().err[-2000:]
    records = {r["task"]: r for r in (json.loads(p.read_text()) for p in results.rglob("*.json"))}
    probe, finetune = records["mock"], records["mock-finetune"]
    # the mock labels are a bright square and a bar: a thumbnail shows both, so the probe is well above chance
    assert probe["metrics"]["auroc_macro"] > 0.9
    assert 0.0 <= finetune["metrics"]["auroc_macro"] <= 1.0
    for rec in (probe, finetune):
        assert rec["data_source"] == "synthetic" and rec["method_card"]["uses_labels"] is False
        # the record's card is the run's profile's (smoke: 8 x 8 of 32 px), not the small default's
        assert "32 px grey in [0, 1] area-averaged to 8 x 8" in rec["method_card"]["notes"]
        assert rec["method_card"]["preprocess"]["channels"] == 1 and rec["pretrain"]["cache_key"]


@pytest.mark.parametrize("task, lacking", [("mimic-retrieval", "['text']"),
                                           ("nih14-loc", "['text', 'localization']")])
def test_pixels_is_refused_where_a_task_needs_text(task: str, lacking: str, capsys):
    assert main(["run", "--method", "pixels", "--task", task, "--profile", "smoke"]) == 2
    err = capsys.readouterr().err
    assert f"lacks capability {lacking}" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_pixels_regenerates_from_its_region_map(corpus_world: Path, tmp_path: Path, capsys):
    results = tmp_path / "results"
    assert main(["-q", "run", "--method", "pixels", "--task", "mimic-regen", "--profile", "smoke", "--data-root",
                 str(corpus_world), "--results", str(results)]) == 0, capsys.readouterr().err[-2000:]
    [rec] = [json.loads(p.read_text()) for p in results.rglob("*.json")]
    assert rec["data_source"] == "synthetic" and np.isfinite(rec["metrics"][rec["main_metric"]])
    assert rec["details"]["probe"]["features"] == "regions" and rec["details"]["probe"]["grid"] == [4, 4]
