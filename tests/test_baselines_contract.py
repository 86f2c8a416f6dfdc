"""Every registered method honours the Method contract (timm-style test over the registry).

For each name in ``harness.catalog.METHODS``: the smoke profile pretrains on a
tiny in-memory training set, ``load`` gives an encoder whose card says how to feed
it, and a batch fed that way encodes to finite features of the promised shapes.
A method whose package does not exist yet is skipped with its name.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from harness.catalog import METHODS
from harness.cohort import TrainingData, TrainingLabels
from harness.data.images import ImageView
from harness.data.schema import DataError
from harness.encoders import MethodCard, PretrainRequest, capabilities
from harness.encoders.preprocess import to_model_input
from tests.support import ArrayStore

PROFILES = ("smoke", "small", "paper")


def tiny_training_data(size: int, n: int = 16) -> TrainingData:
    """n synthetic grey images with the records columns (fake, non-identifying report text)."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
    frame = pd.DataFrame({
        "dataset": "mock", "image_id": [f"img{i}" for i in range(n)], "patient_id": [f"p{i // 2}" for i in range(n)],
        "study_id": [f"s{i}" for i in range(n)], "view": "PA", "split": "train", "path": "",
        "institution": "site-a", "indication": "cough.",
        "findings": ["no effusion.", "small left effusion."] * (n // 2),
        "impression": ["normal.", "effusion."] * (n // 2), "age": rng.uniform(20, 90, n), "sex": ["M", "F"] * (n // 2),
    })
    return TrainingData(dataset="mock", frame=frame, images=ImageView(ArrayStore(images), np.arange(n)),
                        data_source="synthetic", fingerprint=f"contract-{size}-{n}")


def get_method(name: str):
    try:
        return METHODS.get(name)()
    except ModuleNotFoundError as exc:  # the method's package is not written yet
        if exc.name and exc.name.startswith("baselines.") and not exc.name.startswith("baselines.common"):
            pytest.skip(f"method {name!r}: module {exc.name} does not exist yet")
        raise


@pytest.mark.parametrize("name", METHODS.names())
def test_method_contract(name: str, tmp_path: Path):
    method = get_method(name)
    assert isinstance(method.card, MethodCard)
    for profile in PROFILES:
        assert {"image_size", "seed"} <= set(method.profiles[profile]), f"{name} {profile} profile"
    for source in method.card.pretraining_data:
        assert source == "{task}" or ":" in source, source

    config = method.profiles["smoke"]
    data = tiny_training_data(config["image_size"])
    if method.card.uses_labels:  # a label-supervised method is offered the training labels, as the runner does
        targets = np.random.default_rng(1).integers(0, 2, (len(data.frame), 2)).astype(np.float32)
        targets[0, 1] = np.nan  # a label the policy ignores
        data = dataclasses.replace(data, labels=TrainingLabels(task="contract", task_version=1, names=("A", "B"),
                                                              targets=targets, fingerprint="contract-labels"))
    request = PretrainRequest(data=data, config=dict(config), workdir=tmp_path, seed=config["seed"], device="cpu",
                              progress=False)
    try:
        checkpoint = method.pretrain(request)
    except DataError as exc:  # the method needs data this generic fixture does not have (a clear error is fine)
        pytest.skip(f"method {name!r} needs more than the contract fixture: {exc}")
    assert checkpoint is None or Path(checkpoint).is_file()

    encoder = method.load(checkpoint, dict(config))
    card = encoder.card
    assert card.preprocess.image_size == config["image_size"]
    caps = capabilities(encoder)
    assert "image" in caps, f"{name}: encoder offers {caps}"
    x = to_model_input(data.images[np.arange(2)], card.preprocess)  # (2, C, S, S) as the card says
    if isinstance(encoder, torch.nn.Module):
        encoder.eval()
    with torch.no_grad():
        features = encoder.encode_image(x)
        assert features.shape == (2, encoder.num_features) and torch.isfinite(features).all()
        if "image_regions" in caps:
            h, w = encoder.region_grid
            regions = encoder.encode_image_regions(x)
            assert regions.shape[:2] == (2, h * w) and torch.isfinite(regions).all()
        if "text" in caps:
            text = encoder.encode_text(["no effusion.", "small left effusion."])
            assert text.shape[0] == 2 and torch.isfinite(text).all()
        if "regeneration" in caps:
            mask = torch.zeros(2, 1, *x.shape[-2:], dtype=torch.bool)
            mask[..., : x.shape[-2] // 2, :] = True
            assert encoder.regenerate(x, mask).shape == x.shape

        again = method.load(checkpoint, dict(config))  # loading is deterministic (seeded init / saved weights)
        if isinstance(again, torch.nn.Module):
            again.eval()
        torch.testing.assert_close(again.encode_image(x), features)
