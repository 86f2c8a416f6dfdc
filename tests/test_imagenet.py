"""ImageNet weights: real ones classify real photos, a broken mapping or a missing file fails loudly."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from skimage import data

from baselines.imagenet import ImageNetMethod, WeightsUnavailable, imagenet_backbone
from baselines.imagenet.weights import efficientnet_lite0_file, map_by_order
from harness.encoders import IMAGENET_MEAN, IMAGENET_STD, capabilities
from harness.encoders.preprocess import to_model_input

EGYPTIAN_CAT, ESPRESSO = 285, 967


def _imagenet_input(photo: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(photo).permute(2, 0, 1).float().unsqueeze(0) / 255  # (1, 3, H, W)
    x = F.interpolate(x, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
    return (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def lite0():
    return imagenet_backbone("efficientnet_lite0", num_classes=1000).eval()


def test_efficientnet_lite0_weights_recognise_photos(lite0):
    with torch.no_grad():
        cat = lite0.logits(_imagenet_input(data.chelsea())).softmax(-1)
        coffee = lite0.logits(_imagenet_input(data.coffee())).softmax(-1)
    assert cat.argmax().item() == EGYPTIAN_CAT and cat.max() > 0.3
    assert coffee.argmax().item() == ESPRESSO and coffee.max() > 0.5


def test_feature_encoder_is_the_classifier_trunk(lite0):
    method = ImageNetMethod()
    encoder = method.load(None, {**method.profiles["small"], "image_size": 224})
    x = _imagenet_input(data.chelsea())
    with torch.no_grad():
        features = encoder.encode_image(x)  # (1, 1280)
        torch.testing.assert_close(lite0.classifier(features), lite0.logits(x))
    assert encoder.card.pretraining_data == ("imagenet:train",)
    assert {"image", "image_regions", "trainable"} <= capabilities(encoder)


def test_map_by_order_names_the_first_mismatch():
    source = OrderedDict(a=torch.zeros(2, 3), b=torch.zeros(4))
    assert list(map_by_order(source, OrderedDict(x=torch.ones(2, 3), y=torch.ones(4)), what="t")) == ["x", "y"]
    with pytest.raises(ValueError, match=r"#1 'b' \(4,\) does not fit 'y' \(5,\)"):
        map_by_order(source, OrderedDict(x=torch.ones(2, 3), y=torch.ones(5)), what="t")
    with pytest.raises(ValueError, match="2 tensors in the file but 1"):
        map_by_order(source, OrderedDict(x=torch.ones(2, 3)), what="t")


def test_a_shuffled_weight_file_is_refused(tmp_path):
    state = torch.load(efficientnet_lite0_file(), weights_only=True)
    items = list(state.items())
    items[0], items[6] = items[6], items[0]  # the stem conv and the first depthwise conv swap places
    torch.save(OrderedDict(items), tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="does not fit"):
        imagenet_backbone("efficientnet_lite0", weights=tmp_path / "bad.pth")


def test_missing_resnet50_names_the_file_to_place(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    method = ImageNetMethod()
    reason = method.unavailable_reason(method.profiles["paper"])
    assert reason is not None and "resnet50-0676ba61.pth" in reason and str(tmp_path) in reason
    with pytest.raises(WeightsUnavailable, match="never falls back to random"):
        method.load(None, method.profiles["paper"])
    with pytest.raises(WeightsUnavailable, match="nowhere.pth"):
        method.load(None, {**method.profiles["paper"], "weights": str(tmp_path / "nowhere.pth")})


def test_torchvision_resnet_file_from_the_torch_cache_matches_torchvision(tmp_path, monkeypatch):
    torch.manual_seed(0)
    reference = torchvision.models.resnet18().eval()
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(reference.state_dict(), tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    method = ImageNetMethod()
    encoder = method.load(None, {**method.profiles["paper"], "backbone": "resnet18", "image_size": 64})
    images = np.random.default_rng(0).integers(0, 256, (2, 64, 64), dtype=np.uint8)
    x = to_model_input(images, encoder.card.preprocess)
    with torch.no_grad():
        reference.fc = torch.nn.Identity()  # torchvision's pooled 512-d features
        expected = reference(x)
        torch.testing.assert_close(encoder.encode_image(x), expected)
        assert encoder.encode_image_regions(x).shape == (2, 4, 512) and encoder.region_grid == (2, 2)
