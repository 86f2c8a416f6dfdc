"""Leaderboard pictures: label-efficiency curves with bands, and the regeneration grid, linked from markdown."""

import numpy as np
import pytest
from PIL import Image

from harness.reporting.leaderboard import render_all
from harness.reporting.pictures import efficiency_points, label_efficiency_png, regeneration_grid_png
from harness.results import write_record
from tests.test_results import make_record


def curve_records():
    values = {("moco", 0.1): [0.70, 0.72, 0.74], ("moco", 1.0): [0.80, 0.81, 0.82],
              ("random", 0.1): [0.55], ("random", 1.0): [0.60]}
    out = []
    for (method, fraction), vals in values.items():
        for seed, v in enumerate(vals):
            out.append(make_record(seed, method=method, task="mimic-cls", fraction=fraction, protocol="linear-probe",
                                   metrics={"auroc_macro": v}, ci={"auroc_macro": [v - 0.05, v + 0.05]},
                                   weights_sha256=(method * 64)[:64]))
    return out


def test_efficiency_points_band_from_seeds_or_record_ci():
    points = efficiency_points(curve_records())
    (f, mean, lo, hi), _ = points["moco"]
    half = 4.302653 * 0.02 / np.sqrt(3)  # t(0.975, 2) * sd / sqrt(n)
    assert (f, mean) == (0.1, pytest.approx(0.72))
    assert (lo, hi) == (pytest.approx(0.72 - half), pytest.approx(0.72 + half))
    assert points["random"][0] == (0.1, 0.55, pytest.approx(0.50), pytest.approx(0.60))  # one seed: the record's CI


def test_label_efficiency_png_is_written(tmp_path):
    path = label_efficiency_png("mimic-cls", "synthetic", curve_records(), tmp_path / "curve.png")
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == (600, 400)
    one_fraction = [r for r in curve_records() if r["fraction"] == 1.0]
    assert label_efficiency_png("mimic-cls", "synthetic", one_fraction, tmp_path / "none.png") is None


def test_regeneration_grid_and_leaderboard_links(tmp_path):
    rng = np.random.default_rng(0)
    images = {"original": rng.integers(0, 255, (3, 32, 32), dtype=np.uint8)}
    for p in (8, 16):
        images[f"masked_p{p}"] = images["original"] // 2
        images[f"regenerated_p{p}"] = images["original"]
    results = tmp_path / "results"
    for rec in curve_records():
        write_record(results, rec)
    regen = make_record(0, method="moco", task="mimic-regen", protocol="regeneration", metrics={"psnr": 20.0},
                        main_metric="psnr")
    write_record(results, regen, images)
    written, problems = render_all(results, tmp_path / "lb")
    assert problems == []
    md = (tmp_path / "lb" / "synthetic" / "mimic-cls.md").read_text()
    assert "[label efficiency: main metric vs label fraction](mimic-cls-label-efficiency.png)" in md
    assert (tmp_path / "lb" / "synthetic" / "mimic-cls-label-efficiency.png").is_file()
    md = (tmp_path / "lb" / "synthetic" / "mimic-regen.md").read_text()
    assert "[regeneration examples: moco](mimic-regen-moco-regeneration.png)" in md
    with Image.open(tmp_path / "lb" / "synthetic" / "mimic-regen-moco-regeneration.png") as im:
        assert im.format == "PNG" and im.size[0] > im.size[1]  # 5 columns x 3 rows
    # a file without examples draws nothing
    np.savez(tmp_path / "empty.npz", scores=np.zeros(3))
    assert regeneration_grid_png(tmp_path / "empty.npz", "t", tmp_path / "x.png") is None
