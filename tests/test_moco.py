"""MoCo v2: the momentum encoder is an EMA of the query encoder, the queue holds the last K keys, it learns."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from baselines.common.backbones import CnnBackbone
from baselines.common.train import load_checkpoint
from baselines.moco import MoCoMethod
from baselines.moco.model import MoCo
from baselines.moco.pretrain import queue_size
from harness.cohort import TrainingData
from harness.data.images import ImageView
from harness.encoders import PretrainRequest, capabilities
from harness.encoders.preprocess import to_model_input
from tests.support import ArrayStore


def tiny_backbone() -> CnnBackbone:
    trunk = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 16, 3, stride=2, padding=1))
    return CnnBackbone("tiny", trunk, num_features=16, in_chans=3, stride=4)


def training_data(n: int, size: int, seed: int = 0) -> TrainingData:
    images = np.random.default_rng(seed).integers(0, 256, (n, size, size), dtype=np.uint8)
    frame = pd.DataFrame({"dataset": "mock", "image_id": [f"i{i}" for i in range(n)]})
    return TrainingData(dataset="mock", frame=frame, images=ImageView(ArrayStore(images), np.arange(n)),
                        data_source="synthetic", fingerprint=f"test-{n}-{size}-{seed}")


def test_key_encoder_is_an_ema_of_the_query_encoder():
    torch.manual_seed(0)
    moco = MoCo(tiny_backbone, dim=4, K=8, m=0.9, T=0.2)
    for q, k in zip(moco.encoder_q.parameters(), moco.encoder_k.parameters(), strict=True):
        assert torch.equal(q, k) and not k.requires_grad  # starts as a copy, never trained by gradient
    with torch.no_grad():
        for p in moco.encoder_q.parameters():
            p.add_(torch.randn_like(p))  # as if an optimiser step had moved the query encoder
    before_q = [p.detach().clone() for p in moco.encoder_q.parameters()]
    before_k = [p.detach().clone() for p in moco.encoder_k.parameters()]
    moco(torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8))
    for q, k_old, k_new in zip(before_q, before_k, moco.encoder_k.parameters(), strict=True):
        torch.testing.assert_close(k_new, 0.9 * k_old + 0.1 * q)


def test_queue_holds_the_last_k_keys_and_logits_are_positive_then_queue():
    torch.manual_seed(0)
    moco = MoCo(tiny_backbone, dim=4, K=8, m=0.99, T=0.5, shuffle_bn_splits=1)
    keys = []
    for _ in range(3):
        im_q, im_k = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
        queue_before = moco.queue.clone()
        logits, labels = moco(im_q, im_k)
        with torch.no_grad():  # the keys just enqueued, recomputed with the key encoder as it now is
            k = F.normalize(moco.encoder_k(im_k), dim=1)  # (4, dim)
            q = F.normalize(moco.encoder_q(im_q), dim=1)
        keys.append(k)
        assert logits.shape == (4, 9) and torch.equal(labels, torch.zeros(4, dtype=torch.long))
        torch.testing.assert_close(logits[:, 0], (q * k).sum(1) / 0.5)  # column 0: the positive key
        torch.testing.assert_close(logits[:, 1:], q @ queue_before / 0.5)  # the rest: the queue before enqueue
    # 3 batches of 4 into a queue of 8: batch 3 overwrote batch 1 at the start, batch 2 stays at the end
    torch.testing.assert_close(moco.queue.T, torch.cat([keys[2], keys[1]]))
    assert int(moco.queue_ptr) == 4


@pytest.mark.parametrize("frozen", [False, True])
def test_frozen_batchnorm_statistics_stay_while_the_affine_weights_learn(frozen):
    torch.manual_seed(0)
    moco = MoCo(tiny_backbone, dim=4, K=8, m=0.9, T=0.2, freeze_bn_stats=frozen).train()
    bn = moco.encoder_q.backbone.trunk[1]
    assert bn.training is not frozen and moco.training  # train() keeps every BatchNorm in eval mode
    stats = (bn.running_mean.clone(), bn.running_var.clone())
    weight = bn.weight.detach().clone()
    optimizer = torch.optim.SGD(moco.parameters(), lr=0.5)
    logits, labels = moco(torch.randn(4, 3, 8, 8) + 2, torch.randn(4, 3, 8, 8) + 2)
    F.cross_entropy(logits, labels).backward()
    optimizer.step()
    assert not torch.equal(bn.weight.detach(), weight)  # the scale is trained either way
    assert torch.equal(bn.running_mean, stats[0]) is frozen and torch.equal(bn.running_var, stats[1]) is frozen


def test_queue_must_divide_by_the_batch():
    moco = MoCo(tiny_backbone, dim=4, K=6, shuffle_bn_splits=1)
    with pytest.raises(ValueError, match="multiple of the global batch 4"):
        moco(torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8))


def test_loss_decreases_on_a_tiny_set():
    torch.manual_seed(0)
    moco = MoCo(tiny_backbone, dim=8, K=16, m=0.9, T=0.2)
    dataset = torch.rand(32, 3, 12, 12)
    optimizer = torch.optim.Adam(moco.parameters(), lr=3e-3)
    losses = []
    for step in range(80):
        images = dataset[8 * (step % 4):8 * (step % 4 + 1)]  # the queue then holds the other images' keys
        noise = 0.05 * torch.randn(2, *images.shape)  # two "views": the image plus a little noise
        logits, labels = moco(images + noise[0], images + noise[1])
        loss = F.cross_entropy(logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[2:12])  # after the random queue is flushed


def test_pretrain_smoke_then_load_the_query_encoder(tmp_path):
    method = MoCoMethod()
    config = method.profiles["smoke"]
    data = training_data(20, config["image_size"])
    request = PretrainRequest(data=data, config=config, workdir=tmp_path, seed=0, device="cpu", progress=False)
    final = method.pretrain(request)
    ckpt = load_checkpoint(final)
    assert ckpt["step"] == config["steps"] and ckpt["meta"]["queue_size_used"] == 8  # K 64 capped at 20 // 4, one batch
    assert ckpt["meta"]["data"]["fingerprint"] == data.fingerprint and ckpt["meta"]["card"]["name"] == "moco"
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, config["steps"] + 1)) and all("top1" in r for r in log)

    encoder = method.load(final, config)
    prefix = "encoder_q.backbone."
    for name, tensor in encoder.backbone.state_dict().items():
        assert torch.equal(tensor, ckpt["model"][prefix + name]), name
    x = to_model_input(data.images[np.arange(3)], encoder.card.preprocess)
    with torch.no_grad():
        assert encoder.encode_image(x).shape == (3, 512)
    assert {"image", "image_regions", "trainable"} <= capabilities(encoder)
    assert method.pretrain(request) == final  # a finished run is reused, not repeated
    assert load_checkpoint(final)["step"] == config["steps"]


def test_unknown_config_key_is_an_error():
    method = MoCoMethod()
    with pytest.raises(ValueError, match="did you mean 'K'"):
        method.load(None, {**method.profiles["smoke"], "k": 5})


def test_paper_profile_is_moco_cxrs_scripts_and_the_card_says_the_queue_cap():
    """MoCo-CXR 9ff5795 (docs/methods.md section 5.1): flip, RandomRotation(10), a crop, no photometric change;
    Adam lr 1e-4 wd 1e-4, batch 16, 20 epochs, x0.1 at 12/18/24, T 0.2, m 0.999, dim 128, queue 24,576."""
    method = MoCoMethod()
    cfg = method.config(method.profiles["paper"])
    assert (cfg.brightness, cfg.contrast, cfg.rotation, cfg.hflip) == (0.0, 0.0, 10.0, True)
    assert (cfg.lr, cfg.weight_decay, cfg.batch_size, cfg.epochs, cfg.lr_decay_epochs) == (
        1e-4, 1e-4, 16, 20.0, (12.0, 18.0, 24.0))
    assert (cfg.T, cfg.m, cfg.dim, cfg.K, cfg.mlp, cfg.init) == (0.2, 0.999, 128, 24576, True, "imagenet")
    notes = method.card_for(cfg).notes
    assert "queue capped at a quarter of the training images" in notes and "training-set size" not in notes
    assert queue_size(cfg, 1000, 16) == 240  # a quarter (250) rounded down to a multiple of the global batch
