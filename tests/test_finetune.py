"""Fine-tuning on a tiny real problem: it learns, is deterministic on CPU, and never touches the caller's encoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_classification_support import TinyEncoder, context, task_data

from harness import metrics
from harness.features import weights_sha256
from harness.protocols import finetune
from harness.protocols.errors import ProtocolError

ARGS = {"epochs": 4, "batch_size": 16, "encoder_lr": 1e-3, "head_lr": 1e-2, "patience": 2, "bootstrap": 50}


def test_finetune_beats_chance_deterministically_and_leaves_encoder_alone(tmp_path):
    data, enc = task_data(), TinyEncoder()
    sha = weights_sha256(enc)
    rng_state = torch.get_rng_state()
    first = finetune.run(context(data, enc, tmp_path, ARGS))
    second = finetune.run(context(data, enc, tmp_path, ARGS))
    assert first.metrics["auroc_macro"] > 0.75
    assert first.metrics == second.metrics  # bitwise on CPU for a seed
    np.testing.assert_array_equal(first.predictions["scores"], second.predictions["scores"])
    assert weights_sha256(enc) == sha  # a deep copy was trained
    assert torch.equal(torch.get_rng_state(), rng_state)  # the global RNG is left as it was
    d = first.details
    assert 1 <= d["epochs_run"] <= ARGS["epochs"] and 0 <= d["best_epoch"] < d["epochs_run"]
    assert d["best_val_auroc_macro"] == max(h["val_auroc_macro"] for h in d["history"])


def test_early_stopping_restores_the_best_epoch(tmp_path):
    data = task_data()
    ctx = context(data, TinyEncoder(), tmp_path)
    # a huge learning rate makes validation AUROC fall after the first epoch: patience 1 stops at once
    config = finetune.FinetuneConfig(epochs=6, batch_size=16, encoder_lr=1.0, head_lr=1.0, patience=1)
    torch.manual_seed(0)
    model = finetune.Classifier(TinyEncoder(), len(data.label_names))
    out = finetune.fit(model, ctx, np.arange(len(data.train)), config)
    aucs = [h["val_auroc_macro"] for h in out["history"]]
    assert out["epochs_run"] == out["best_epoch"] + 2 < config.epochs  # stopped after one stale epoch
    # the model now holds the best epoch's weights, not the last epoch's
    restored = metrics.auroc_macro(data.val.targets, finetune.predict(model, data.val, ctx, 64))
    assert restored == pytest.approx(max(aucs)) and restored != pytest.approx(aucs[-1])


def test_non_trainable_encoder_is_refused(tmp_path):
    class Frozen:
        card = TinyEncoder().card
        num_features = 64
        weights_sha256 = "x" * 64

        def encode_image(self, images):
            return torch.zeros(len(images), 64)

    with pytest.raises(ProtocolError, match="not trainable"):
        finetune.run(context(task_data(), Frozen(), tmp_path, ARGS))
    with pytest.raises(ProtocolError, match="unknown protocol argument"):
        finetune.run(context(task_data(), TinyEncoder(), tmp_path, {"lr": 1}))


class NearlyConstant(TinyEncoder):
    """Features as a pretrained transformer's final LayerNorm + projection can give them (mlm-mvm's, issue 20:
    across images the spread is about 1 % of the mean): the same informative features, x 0.01, on an offset."""

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return 1.0 + 0.01 * super().encode_image(images)


def test_features_of_small_spread_are_standardised_before_the_head(tmp_path):
    """The cause of mlm-mvm's fine-tuned AUROC below chance: a fresh linear head on raw features whose
    spread across images is tiny learns the label priors only. The head now sits behind a BatchNorm
    without affine parameters (MAE / MoCo v3 linear classification), so the scale of the features no
    longer matters."""
    out = finetune.run(context(task_data(), NearlyConstant(), tmp_path, ARGS))
    assert out.metrics["auroc_macro"] > 0.97  # 1.0 here; the old head without BatchNorm: 0.908
    model = finetune.Classifier(NearlyConstant(), 4)
    assert isinstance(model.norm, torch.nn.BatchNorm1d) and not model.norm.affine
