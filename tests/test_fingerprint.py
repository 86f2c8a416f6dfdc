"""The embedding fingerprint: the shipped reference batch, what the hash depends on (weights and
preprocessing, not the process or a copy), and that every record carries it, baselines' included."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json

import numpy as np
import torch

from examples.my_encoder import build
from harness.cli import main
from harness.dispatch.runner import RunRequest, execute, load_method
from harness.encoders import MethodCard
from harness.encoders.fingerprint import (
    REFERENCE_FILE,
    REFERENCE_SHA256,
    embedding_fingerprint,
    reference_batch,
    render_reference_batch,
)


def test_the_reference_batch_is_shipped_pinned_and_reproducible():
    batch = reference_batch()
    assert batch.shape == (8, 64, 64) and batch.dtype == np.uint8 and 20 < batch.mean() < 235
    assert hashlib.sha256(REFERENCE_FILE.read_bytes()).hexdigest() == REFERENCE_SHA256
    buf = io.BytesIO()
    np.save(buf, render_reference_batch(), allow_pickle=False)
    assert buf.getvalue() == REFERENCE_FILE.read_bytes()  # how it was made, byte for byte


def test_fingerprint_follows_weights_and_preprocessing_only():
    enc = build()
    fp = embedding_fingerprint(enc)
    assert fp["sha256"] == embedding_fingerprint(build())["sha256"]  # another instance of the same weights
    assert len(fp["sha256"]) == 16 and fp["text"] is None and "3 decimals" in fp["rounding"]
    other = build()
    other.card = MethodCard(name="x", paper="x", preprocess=dataclasses.replace(enc.card.preprocess, std=(0.3,)))
    assert embedding_fingerprint(other)["sha256"] != fp["sha256"]  # same weights, other preprocessing
    with torch.no_grad():
        next(other.parameters()).add_(0.01)
    other.card = enc.card
    assert embedding_fingerprint(other)["sha256"] != fp["sha256"]  # other weights
    enc.train()
    embedding_fingerprint(enc)
    assert enc.training  # the caller's mode is restored


def test_fingerprint_ignores_rounding_noise_below_its_precision():
    class Noisy(torch.nn.Module):
        def __init__(self, scale: float) -> None:
            super().__init__()
            self.card, self.num_features, self.scale = build().card, 32, scale
            self.net = build().net

        def encode_image(self, images):
            out = self.net(images)
            return out + self.scale * torch.sin(torch.arange(out.numel(), dtype=out.dtype)).view_as(out)

    assert embedding_fingerprint(Noisy(1e-9))["sha256"] == embedding_fingerprint(Noisy(0.0))["sha256"]


def test_every_record_and_submit_check_carry_it(tmp_path, capsys):
    out = execute(RunRequest(method="random", task="mock", profile="smoke", results_dir=str(tmp_path), progress=False))
    rec = json.loads(out.path.read_text())
    encoder = load_method("random").load(None, rec["config"]["method"])
    assert rec["embedding_fingerprint"] == embedding_fingerprint(encoder)  # a baseline's record too
    assert rec["method_card"]["preprocess"]["image_size"] == encoder.card.preprocess.image_size
    assert main(["submit", "examples.my_encoder:build", "--name", "fp-enc", "--check", "--tasks", "mock"]) == 0
    printed = capsys.readouterr().out
    assert f"embedding fingerprint: {embedding_fingerprint(build())['sha256']} " in printed
    assert "would score: ['mock']" in printed and not list((tmp_path / "synthetic" / "mock").glob("*fp-enc*"))
