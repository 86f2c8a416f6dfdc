"""Preprocessing: ``Preprocess``'s resize, crop and pixel range done exactly, old cards unchanged, and each
library's own configuration (HF image processors, timm's pretrained_cfg, torchvision's eval transform,
torchxrayvision's range) mapped to it field by field, with the user's overrides on top."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from harness.encoders.errors import SubmissionError
from harness.encoders.preprocess import Preprocess, from_model_input, to_model_input
from harness.encoders.public.preprocessing import apply_overrides, from_hf_processor, from_timm, from_torchvision

IMAGES = np.random.default_rng(0).integers(0, 256, (2, 40, 40), dtype=np.uint8)


def test_an_old_card_means_what_it_meant():
    p = Preprocess(32, 1, (0.5,), (0.25,))
    x = torch.as_tensor(IMAGES).float().div(255).unsqueeze(1)
    want = (F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False, antialias=True) - 0.5) / 0.25
    assert torch.equal(to_model_input(IMAGES, p), want)  # the conversion before resize_to / pixel_range existed
    assert p.stored_size == 32 and p.describe()["resize_to"] is None


def test_resize_then_centre_crop_then_pixel_range():
    p = Preprocess(32, 3, (0.0,) * 3, (1.0,) * 3, resize_to=36, resize_mode="bicubic", pixel_range=(-1024, 1024))
    assert p.stored_size == 36
    x = torch.as_tensor(IMAGES).float().div(255).unsqueeze(1)
    resized = F.interpolate(x, size=(36, 36), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
    want = (resized[..., 2:34, 2:34] * 2048 - 1024).expand(-1, 3, -1, -1)
    got = to_model_input(IMAGES, p)
    assert got.shape == (2, 3, 32, 32) and torch.equal(got, want)
    assert torch.allclose(from_model_input(got, p), resized[..., 2:34, 2:34], atol=1e-6)


def test_xrv_range_is_xrvs_normalize():
    import torchxrayvision as xrv

    p = Preprocess(40, 1, (0.0,), (1.0,), pixel_range=(-1024.0, 1024.0))
    want = xrv.datasets.normalize(IMAGES.astype(np.float32), 255)  # (2 * x / 255 - 1) * 1024
    assert np.allclose(to_model_input(IMAGES, p)[:, 0].numpy(), want, atol=1e-3)


@pytest.mark.parametrize("cfg, want", [
    ({"do_resize": True, "size": {"shortest_edge": 518}, "resample": 3, "do_center_crop": True,  # RAD-DINO's
      "crop_size": {"height": 518, "width": 518}, "do_rescale": True, "rescale_factor": 1 / 255,
      "do_normalize": True, "image_mean": [0.5307] * 3, "image_std": [0.2583] * 3},
     dict(image_size=518, resize_to=None, resize_mode="bicubic", mean=(0.5307,) * 3, pixel_range=(0.0, 1.0))),
    ({"size": {"shortest_edge": 256}, "crop_size": 224, "do_center_crop": True, "resample": 3,  # DINOv2's
      "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]},
     dict(image_size=224, resize_to=256, resize_mode="bicubic")),
    ({"size": {"height": 384, "width": 384}, "resample": 2, "image_mean": [0.5] * 3, "image_std": [0.5] * 3},
     dict(image_size=384, resize_to=None, resize_mode="bilinear")),  # ViT / SigLIP
    ({"size": {"shortest_edge": 224}, "crop_pct": 0.875, "resample": 3, "image_mean": [0.5] * 3,
      "image_std": [0.5] * 3}, dict(image_size=224, resize_to=256)),  # ConvNeXt below 384 px
    ({"size": {"shortest_edge": 384}, "crop_pct": 0.875, "image_mean": [0.5] * 3, "image_std": [0.5] * 3},
     dict(image_size=384, resize_to=None)),  # ConvNeXt from 384 px: warped, no crop
    ({"size": 64, "do_rescale": False, "do_normalize": False}, dict(pixel_range=(0.0, 255.0), mean=(0.0,) * 3)),
    ({"size": 64, "rescale_factor": 1 / 127.5, "image_mean": [1.0] * 3, "image_std": [1.0] * 3},
     dict(pixel_range=(0.0, 2.0), mean=(1.0,) * 3)),  # rescale to [0, 2], then -1: the [-1, 1] of some models
])
def test_hf_processor_configs_map_exactly(cfg, want):
    p = from_hf_processor(cfg, 3, None, "test")
    for key, value in want.items():
        assert getattr(p, key) == (pytest.approx(value) if isinstance(value, tuple) else value), key


def test_hf_processor_for_a_grey_model():
    p = from_hf_processor({"size": 32, "image_mean": [0.5] * 3, "image_std": [0.25] * 3}, 1, None, "t")
    assert (p.channels, p.mean, p.std) == (1, (0.5,), (0.25,))
    with pytest.raises(SubmissionError, match=r"mean \[0.485, 0.456, 0.406\] has 3 values for a 1-channel model"):
        from_hf_processor({"size": 32, "image_mean": [0.485, 0.456, 0.406], "image_std": [0.2] * 3}, 1, None, "t")


def test_timm_and_torchvision_configurations():
    import timm
    import torchvision

    cfg = timm.create_model("vit_tiny_patch16_224", pretrained=False).pretrained_cfg
    p = from_timm(cfg, 3, "t")
    assert (p.image_size, p.resize_to, p.resize_mode, p.mean) == (224, 248, "bicubic", (0.5,) * 3)  # crop_pct 0.9
    t = next(iter(torchvision.models.get_model_weights("resnet50"))).transforms()
    p = from_torchvision(t, "t")
    assert (p.image_size, p.resize_to, p.resize_mode, p.std) == (224, 256, "bilinear", (0.229, 0.224, 0.225))


def test_overrides_on_the_architectures_preprocessing():
    base = Preprocess(224, 3, (0.5,) * 3, (0.5,) * 3, resize_to=256, resize_mode="bicubic")
    assert apply_overrides(base, {}) is base
    p = apply_overrides(base, {"mean": [0.4], "std": [0.3]})  # the crop stays; one value for every channel
    assert (p.image_size, p.resize_to, p.mean, p.std) == (224, 256, (0.4,) * 3, (0.3,) * 3)
    p = apply_overrides(base, {"image_size": 64})  # --image-size alone: no crop
    assert (p.image_size, p.resize_to) == (64, None)
    p = apply_overrides(base, {"image_size": 72, "crop_size": 64, "channels": 1, "pixel_range": [0, 255]})
    assert (p.image_size, p.resize_to, p.channels, p.mean, p.pixel_range) == (64, 72, 1, (0.5,), (0.0, 255.0))
    with pytest.raises(SubmissionError, match="--crop-size 300 is larger than the image size 256"):
        apply_overrides(base, {"crop_size": 300})
