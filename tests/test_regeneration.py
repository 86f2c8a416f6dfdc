"""Regeneration: seeded patch masks, PSNR / SSIM on the hidden pixels, the native path, and a
regeneration probe that beats predicting the mean image on an easy problem."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_imagetext_support import SIZE, RegionEncoder, context, make_records, task_data, toy_task
from torch import nn

from harness import metrics
from harness.encoders import MethodCard, Preprocess, capabilities
from harness.protocols import regeneration
from harness.protocols.errors import ProtocolError

PRE = Preprocess(SIZE, 1, (0.5,), (0.5,))
REGEN_TASK = toy_task(protocol="regeneration", metrics=("psnr", "ssim", "mse", "psnr_p4"), main_metric="psnr")
FAST = {"patch_sizes": [4, 8], "mask_ratio": 0.5, "n_bootstrap": 20, "ssim_win_size": 3, "batch_size": 16}


def flat_world(seed: int = 0):
    """Every image one flat grey level drawn in [0.2, 0.8]: the level is all there is to regenerate."""
    records, _ = make_records(n_studies=120, seed=seed, lateral_every=0)
    levels = np.random.default_rng(seed).uniform(0.2, 0.8, len(records.frame))
    images = np.broadcast_to((levels * 255).round().astype(np.uint8)[:, None, None], (len(levels), SIZE, SIZE))
    return task_data(task=REGEN_TASK, records=records, images=np.ascontiguousarray(images))


class MeanEncoder(nn.Module):
    """Global feature = mean of the (masked) input: it carries the grey level, nothing spatial."""

    def __init__(self) -> None:
        super().__init__()
        self.card = MethodCard(name="mean", paper="test", preprocess=PRE)
        self.num_features = 1
        self.register_buffer("unused", torch.zeros(1))

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return images.mean(dim=(1, 2, 3))[:, None]


class Oracle(MeanEncoder):
    """A native regenerator that knows the world is flat: it fills the mask with the visible mean."""

    def __init__(self) -> None:
        super().__init__()
        self.seen_hidden_pixels: list[float] = []

    def regenerate(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        self.seen_hidden_pixels.append(float(images[mask.expand_as(images)].abs().max()))
        visible = (~mask).float()
        level = (images * visible).sum(dim=(1, 2, 3)) / visible.sum(dim=(1, 2, 3))
        return torch.where(mask, level[:, None, None, None], images)


def test_masks_are_seeded_per_image_and_hide_the_ratio():
    rows = np.arange(10)
    masks = regeneration.seeded_masks(rows, 16, 4, 0.5, seed=0)
    assert masks.shape == (10, 1, 16, 16) and masks.dtype == torch.bool
    assert (masks.float().mean(dim=(1, 2, 3)) == 0.5).all()
    cells = masks[:, 0].reshape(10, 4, 4, 4, 4)  # (B, grid row, 4 px, grid col, 4 px)
    assert (cells.all(dim=(2, 4)) | ~cells.any(dim=(2, 4))).all()  # whole patches only
    assert torch.equal(regeneration.seeded_masks(rows[3:5], 16, 4, 0.5, seed=0), masks[3:5])  # batch-independent
    assert not torch.equal(regeneration.seeded_masks(rows, 16, 4, 0.5, seed=1), masks)
    cropped = regeneration.patch_mask(10, 4, 0.5, np.random.default_rng(0))  # 4 does not divide 10: cropped
    assert cropped.shape == (10, 10) and cropped.any()
    with pytest.raises(ProtocolError, match="patch size"):
        regeneration.patch_mask(16, 32, 0.5, np.random.default_rng(0))


def test_psnr_ssim_mse_on_the_hidden_pixels():
    original = np.zeros((2, 16, 16))
    mask = np.zeros((2, 16, 16), bool)
    mask[:, 4:12, 4:12] = True
    regenerated = np.where(mask, 0.1, 0.9)  # wrong everywhere visible: ignored, pasted over by the original
    s = regeneration.score(original, regenerated, mask, win_size=3)
    assert s["mse"] == pytest.approx([0.01, 0.01]) and s["psnr"] == pytest.approx([20.0, 20.0])
    assert s["psnr"][0] == pytest.approx(metrics.psnr(original[0][mask[0]][None], np.full((1, 64), 0.1), 1.0))
    perfect = regeneration.score(original, original, mask, win_size=3)
    assert perfect["ssim"] == pytest.approx([1.0, 1.0]) and perfect["psnr"].tolist() == [regeneration.PSNR_CAP_DB] * 2
    rng = np.random.default_rng(0)
    x, y = rng.random((3, 16, 16)), rng.random((3, 16, 16))
    interior = np.zeros((3, 16, 16), bool)
    interior[:, 3:13, 3:13] = True  # what ssim averages with a 7x7 window (3-pixel border cropped)
    assert metrics.ssim_masked(x, y, interior, data_range=1.0) == pytest.approx(metrics.ssim(x, y, 1.0))
    with pytest.raises(ValueError, match="empty"):
        metrics.ssim_masked(x, y, np.zeros_like(interior), data_range=1.0)


def test_native_regeneration_never_sees_hidden_pixels(tmp_path):
    data, oracle = flat_world(), Oracle()
    assert "regeneration" in capabilities(oracle)
    result = regeneration.run(context(data, oracle, tmp_path, args=FAST))
    assert result.details["mode"] == "native"
    assert max(oracle.seen_hidden_pixels) == 0.0  # hidden pixels arrive as 0 (the normalisation mean)
    # a flat image is regenerated exactly (up to uint8 rounding of the grey level)
    assert result.metrics["mse"] < 1e-10 and result.metrics["ssim"] == pytest.approx(1.0)
    assert set(result.metrics) >= {"psnr", "ssim", "mse", "psnr_p4", "ssim_p8", "mse_p8"}
    ex = result.predictions
    assert set(ex) == {"original", "masked_p4", "regenerated_p4", "masked_p8", "regenerated_p8"}
    assert all(v.dtype == np.uint8 and v.shape == (8, SIZE, SIZE) for v in ex.values())


def test_probe_beats_the_mean_image_on_an_easy_problem(tmp_path):
    data, enc = flat_world(), MeanEncoder()
    args = {**FAST, "probe_steps": 40, "probe_lr": 1e-2, "probe_width": 16}
    result = regeneration.run(context(data, enc, tmp_path, args=args))
    baseline = result.details["mean_image_baseline"]
    assert result.details["mode"] == "probe" and result.details["probe"]["features"] == "global"
    assert result.metrics["mse"] < 0.25 * baseline["mse"]
    assert result.metrics["psnr"] > baseline["psnr"] + 5
    lo, hi = result.ci["psnr"]
    assert lo <= result.metrics["psnr"] <= hi
    again = regeneration.run(context(data, enc, tmp_path, args=args))
    assert again.metrics == result.metrics  # seeded


def test_probe_reads_region_features(tmp_path):
    data = task_data(task=REGEN_TASK, n_studies=40)
    result = regeneration.run(context(data, RegionEncoder(), tmp_path,
                                      args={**FAST, "probe_steps": 5, "probe_width": 8, "max_test": 5}))
    assert result.details["probe"] == {"features": "regions", "grid": [4, 4], "steps": 5, "lr": 1e-3, "width": 8}
    assert result.details["n_test"] == 5 and np.isfinite(result.metrics["psnr"])


def test_an_untrained_probe_predicts_the_mean_image(tmp_path):
    result = regeneration.run(context(flat_world(), MeanEncoder(), tmp_path, args={**FAST, "probe_steps": 0}))
    baseline = result.details["mean_image_baseline"]
    assert result.metrics["mse"] == pytest.approx(baseline["mse"], rel=1e-3)
    assert result.metrics["ssim"] == pytest.approx(baseline["ssim"], rel=1e-3)


def test_bad_arguments_are_refused(tmp_path):
    data = task_data(task=REGEN_TASK, n_studies=20)
    with pytest.raises(ProtocolError, match="native"):
        regeneration.run(context(data, MeanEncoder(), tmp_path, args={"mode": "native"}))
    with pytest.raises(ProtocolError, match="mask_ratio"):
        regeneration.run(context(data, MeanEncoder(), tmp_path, args={"mask_ratio": 1.0}))
    with pytest.raises(ProtocolError, match="unknown protocol arg"):
        regeneration.run(context(data, MeanEncoder(), tmp_path, args={"patches": [4]}))
    with pytest.raises(ProtocolError, match=r"cannot compute metric\(s\) \['psnr_p4'\]"):
        regeneration.run(context(data, MeanEncoder(), tmp_path, args={"patch_sizes": [8]}))
