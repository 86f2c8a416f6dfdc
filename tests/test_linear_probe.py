"""The linear probe on a tiny real in-memory dataset: it learns, it never sees test labels, it leaves
the encoder alone, and it works with an external test dataset (chexpert-ext)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from test_classification_support import LABELS, TinyEncoder, context, task_data, toy_task

from harness.features import weights_sha256
from harness.protocols import linear_probe
from harness.protocols.base import evaluate
from harness.protocols.errors import ProtocolError

ARGS = {"l2_grid": [1.0, 1e-2, 1e-4], "bootstrap": 100, "max_iter": 100}


def _poisoned(data):
    """The same data with every test target NaN and the test patients shuffled."""
    rng = np.random.default_rng(0)
    frame = data.test.frame.assign(patient_id=rng.permutation(data.test.frame["patient_id"].to_numpy()))
    test = dataclasses.replace(data.test, targets=np.full_like(data.test.targets, np.nan), frame=frame)
    return dataclasses.replace(data, test=test)


def test_probe_learns_and_reports(tmp_path):
    data, enc = task_data(), TinyEncoder()
    result = linear_probe.run(context(data, enc, tmp_path, ARGS))
    assert result.metrics["auroc_macro"] > 0.9  # the blobs are linearly visible in the features
    assert set(result.metrics) == {"auroc_macro", "auroc_micro", "auprc_macro", "f1_macro"}
    lo, hi = result.ci["auroc_macro"]
    assert lo <= result.metrics["auroc_macro"] <= hi
    d = result.details
    assert d["l2"] in ARGS["l2_grid"] and set(d["auroc_per_label"]) == set(LABELS)
    assert d["n"]["test"] == len(data.test) and d["skipped_labels"] == []
    assert result.predictions["scores"].shape == data.test.targets.shape


def test_probe_never_sees_test_labels(tmp_path):
    data, enc = task_data(), TinyEncoder()
    clean = linear_probe.run(context(data, enc, tmp_path, ARGS))
    poisoned = linear_probe.run(context(_poisoned(data), enc, tmp_path, ARGS))
    assert poisoned.details["l2"] == clean.details["l2"]
    assert poisoned.details["val_auroc_macro"] == clean.details["val_auroc_macro"]
    np.testing.assert_array_equal(poisoned.predictions["scores"], clean.predictions["scores"])
    assert np.isnan(poisoned.metrics["auroc_macro"])  # nothing to score, and no crash


def test_encoder_bit_identical_after_probe(tmp_path):
    enc = TinyEncoder()
    enc.train()  # BatchNorm would update its running stats if the probe forgot eval mode
    sha = weights_sha256(enc)
    result = evaluate(linear_probe.run, context(task_data(), enc, tmp_path, ARGS))  # as the runner calls it
    assert weights_sha256(enc) == sha and result.details["encoder_unchanged"]


def test_fraction_restricts_training_patients_and_is_seeded(tmp_path):
    data, enc = task_data(), TinyEncoder()
    full = linear_probe.run(context(data, enc, tmp_path, ARGS))
    tenth = linear_probe.run(context(data, enc, tmp_path, ARGS, fraction=0.1, seed=1))
    again = linear_probe.run(context(data, enc, tmp_path, ARGS, fraction=0.1, seed=1))
    n_patients = data.train.frame["patient_id"].nunique()
    assert tenth.details["n"]["train_patients"] == int(np.ceil(0.1 * n_patients))
    assert tenth.details["n"]["train"] < full.details["n"]["train"]
    assert tenth.metrics == again.metrics


def test_unregularised_fit_matches_sklearn_logistic_regression():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5))
    y = (x @ rng.normal(size=5) + rng.normal(size=200) > 0).astype(np.float32)[:, None]
    l2 = 1e-2  # sklearn: C = 1 / (l2 * n)
    w, b = linear_probe.fit_logistic(torch.tensor(x, dtype=torch.float32), torch.tensor(y), l2, max_iter=200)
    ref = LogisticRegression(C=1 / (l2 * len(x)), tol=1e-10, max_iter=1000).fit(x, y[:, 0])
    np.testing.assert_allclose(w[:, 0].numpy(), ref.coef_[0], atol=1e-3)
    assert float(b[0]) == pytest.approx(ref.intercept_[0], abs=1e-3)


def test_multi_label_fit_with_missing_targets_matches_one_sklearn_fit_per_label():
    """The hand-written gradient: labels decouple, each over its own non-NaN rows, L2 scaled by the label count."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(240, 6))
    y = (x @ rng.normal(size=(6, 3)) + rng.normal(size=(240, 3)) > 0).astype(np.float32)
    y[rng.random(y.shape) < 0.3] = np.nan  # a different 30 % of images lacks each label
    l2 = 1e-2
    w, b = linear_probe.fit_logistic(torch.tensor(x, dtype=torch.float32), torch.tensor(y), l2, max_iter=300)
    for j in range(3):
        keep = ~np.isnan(y[:, j])
        # sum over labels of mean_j(bce) / L + l2/2 |w|^2  ->  per label: C = 1 / (l2 * L * n_j)
        ref = LogisticRegression(C=1 / (l2 * 3 * keep.sum()), tol=1e-10, max_iter=1000).fit(x[keep], y[keep, j])
        np.testing.assert_allclose(w[:, j].numpy(), ref.coef_[0], atol=2e-3)
        assert float(b[j]) == pytest.approx(ref.intercept_[0], abs=2e-3)


def test_masked_bce_ignores_nan_targets():
    logits = torch.tensor([[0.0, 2.0], [1.0, -1.0]])
    y = torch.tensor([[1.0, float("nan")], [0.0, 0.0]])
    expected = (torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 0], y[:, 0])
                + torch.nn.functional.binary_cross_entropy_with_logits(logits[1:, 1], y[1:, 1])) / 2
    assert float(linear_probe.masked_bce(logits, y)) == pytest.approx(float(expected))


def test_external_test_dataset(tmp_path):
    task = toy_task(name="toy-ext", eval_dataset="other",
                    split=dataclasses.replace(toy_task().split, test_split="val"))
    data = task_data(task, eval_seed=5)
    assert set(data.test.frame["dataset"]) == {"other"} and set(data.train.frame["dataset"]) == {"toy"}
    result = linear_probe.run(context(data, TinyEncoder(), tmp_path, ARGS))
    assert result.details["n"]["test"] == len(data.test) and result.metrics["auroc_macro"] > 0.8


def test_bad_arguments_and_metrics_are_errors(tmp_path):
    data, enc = task_data(), TinyEncoder()
    with pytest.raises(ProtocolError, match="unknown protocol argument"):
        linear_probe.run(context(data, enc, tmp_path, {"lr": 1}))
    bad = dataclasses.replace(data, task=toy_task(metrics=("auroc_macro", "psnr")))
    with pytest.raises(ProtocolError, match="psnr"):
        linear_probe.run(context(bad, enc, tmp_path, ARGS))
