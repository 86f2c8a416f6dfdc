"""The shared training stack: sampler, augmentations, seeding, checkpoints, exact resume after SIGKILL, DDP."""

from __future__ import annotations

import json
import os
import runpy
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from baselines.common.data import AugmentConfig, ViewBatches, augment
from baselines.common.sampling import StepSampler
from baselines.common.seeding import rng_state, seed_all, set_rng_state
from baselines.common.train import CHECKPOINT, FINAL, StepContext, TrainConfig, Trainer, load_checkpoint
from harness.encoders import Preprocess

REPO = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- sampler
def test_sampler_ranks_split_the_global_batch_and_epochs_cover_everything():
    one = StepSampler(10, 4, seed=3)
    ranks = [StepSampler(10, 2, seed=3, rank=r, world_size=2) for r in range(2)]
    for step in range(6):
        np.testing.assert_array_equal(np.concatenate([s.indices(step) for s in ranks]), one.indices(step))
    stream = np.concatenate([one.indices(s) for s in range(5)])  # 20 items = 2 epochs
    assert sorted(stream[:10]) == list(range(10)) and sorted(stream[10:]) == list(range(10))
    assert not np.array_equal(stream[:10], stream[10:])  # each epoch its own permutation
    np.testing.assert_array_equal(StepSampler(10, 4, seed=3).indices(4), one.indices(4))  # pure in (seed, step)
    assert not np.array_equal(StepSampler(10, 4, seed=4).indices(0), one.indices(0))


def test_sampler_smaller_than_a_batch_and_refuses_a_changed_dataset():
    tiny = StepSampler(3, 8, seed=0)
    assert len(tiny.indices(0)) == 8 and set(tiny.indices(0)) == {0, 1, 2}
    with pytest.raises(ValueError, match="num_samples"):
        StepSampler(11, 4, seed=0).load_state_dict(StepSampler(10, 4, seed=0).state_dict())


# ---------------------------------------------------------------- seeding
def test_rng_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    seed_all(5)
    torch.save({"rng": rng_state()}, tmp_path / "r.pt")
    expected = (torch.rand(3), np.random.rand(3), __import__("random").random())
    seed_all(99)
    set_rng_state(torch.load(tmp_path / "r.pt", weights_only=True)["rng"])
    got = (torch.rand(3), np.random.rand(3), __import__("random").random())
    torch.testing.assert_close(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])
    assert got[2] == expected[2]


# ---------------------------------------------------------------- augmentations
def test_identity_augmentation_returns_the_image_and_random_ones_are_seeded():
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, 16, 16), dtype=np.uint8))
    identity = AugmentConfig(scale=(1.0, 1.0), ratio=(1.0, 1.0), rotation=0, hflip=False, brightness=0, contrast=0)
    out = augment(images, identity, 16, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out[:, 0], images.float() / 255, atol=1e-5, rtol=0)

    cfg = AugmentConfig()
    a = augment(images, cfg, 12, torch.Generator().manual_seed(1))
    b = augment(images, cfg, 12, torch.Generator().manual_seed(1))
    c = augment(images, cfg, 12, torch.Generator().manual_seed(2))
    assert a.shape == (3, 1, 12, 12) and torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1


def test_flip_only_mirrors_the_image():
    image = torch.arange(16, dtype=torch.uint8).view(1, 4, 4).repeat(64, 1, 1) * 10
    flip = AugmentConfig(scale=(1.0, 1.0), ratio=(1.0, 1.0), rotation=0, hflip=True, brightness=0, contrast=0)
    out = augment(image, flip, 4, torch.Generator().manual_seed(0))[:, 0] * 255
    flipped = torch.isclose(out, image.flip(-1).float(), atol=1e-3).flatten(1).all(1)
    kept = torch.isclose(out, image.float(), atol=1e-3).flatten(1).all(1)
    assert (flipped | kept).all() and 10 < int(flipped.sum()) < 54  # about half of 64 flipped


def test_view_batches_are_normalised_views_of_the_sampled_images():
    images = np.random.default_rng(0).integers(0, 256, (10, 20, 20), dtype=np.uint8)
    sampler = StepSampler(10, 4, seed=0)
    batches = ViewBatches(images, sampler, (AugmentConfig(), AugmentConfig()), Preprocess(16, 3))
    batch = batches(StepContext(step=2, total_steps=5, seed=0))
    assert [v.shape for v in batch["views"]] == [(4, 3, 16, 16)] * 2
    np.testing.assert_array_equal(batch["indices"].numpy(), sampler.indices(2))
    assert not torch.equal(batch["views"][0], batch["views"][1])  # two different views


# ---------------------------------------------------------------- the loop
_SCRIPT = textwrap.dedent('''
    import os, signal, sys
    import numpy as np, torch
    from torch import nn
    from baselines.common.data import AugmentConfig, ViewBatches
    from baselines.common.sampling import StepSampler
    from baselines.common.train import TrainConfig, Trainer, warmup_cosine

    torch.set_num_threads(1)
    workdir, kill_at = sys.argv[1], int(sys.argv[2])
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Dropout(0.3),
                          nn.Linear(4 * 10 * 10, 3))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    images = np.random.default_rng(0).integers(0, 256, (20, 14, 14), dtype=np.uint8)
    sampler = StepSampler(len(images), 6, seed=7)
    batches = ViewBatches(images, sampler, (AugmentConfig(),),
                          __import__("harness.encoders").encoders.Preprocess(12, 1, (0.5,), (0.25,)))

    def step_fn(model, batch, ctx):
        if ctx.step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no atexit: a real kill -9
        extra = torch.rand(1).item()  # global RNG in the loss: must be restored on resume too
        return model(batch["views"][0]).pow(2).mean() * (1 + 0.01 * extra)

    trainer = Trainer(model, optimizer, TrainConfig(steps=12, seed=7, checkpoint_every=4, log_every=1,
                                                    progress=False), workdir,
                      scheduler=warmup_cosine(optimizer, 12, warmup_steps=3), meta={"method": "test"})
    trainer.fit(step_fn, batches, sampler=sampler)
''')


def _run(script: Path, workdir: Path, kill_at: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, str(script), str(workdir), str(kill_at)], env=env, capture_output=True,
                          text=True, timeout=120)


def _run_here(script: Path, *args: str) -> None:
    """The same script in this process (saves a torch import; CPU results do not depend on it)."""
    argv, sys.argv = sys.argv, [str(script), *args]
    try:
        runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.argv = argv


def test_resume_after_sigkill_gives_identical_weights(tmp_path):
    script = tmp_path / "train_tiny.py"
    script.write_text(_SCRIPT)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    _run_here(script, str(straight), "-1")

    killed = _run(script, resumed, 10)  # a separate process, killed by SIGKILL at step 10
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert load_checkpoint(resumed / CHECKPOINT)["step"] == 8 and not (resumed / FINAL).exists()
    _run_here(script, str(resumed), "-1")

    a, b = load_checkpoint(straight / FINAL), load_checkpoint(resumed / FINAL)
    assert a["step"] == b["step"] == 12
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    full_a, full_b = load_checkpoint(straight / CHECKPOINT), load_checkpoint(resumed / CHECKPOINT)
    assert torch.equal(full_a["rng"]["torch"], full_b["rng"]["torch"])
    steps = [json.loads(line)["step"] for line in (resumed / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 13))  # the lines after step 8 of the killed run were dropped, then redone
    assert not list(resumed.glob(".*tmp*"))  # atomic writes leave no temp files
    assert json.loads((resumed / "run.json").read_text())["meta"] == {"method": "test"}


def test_finished_run_is_not_repeated_and_seed_mismatch_is_refused(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    x = torch.randn(8, 2)

    def fit(seed: int, steps: int) -> Path:
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        trainer = Trainer(model, opt, TrainConfig(steps=steps, seed=seed, progress=False), tmp_path)
        return trainer.fit(lambda m, b, ctx: m(b).pow(2).mean(), lambda ctx: x)

    fit(0, 3)
    before = model.weight.detach().clone()
    fit(0, 3)  # resumes at step 3 of 3: nothing to do
    assert torch.equal(model.weight, before)
    with pytest.raises(ValueError, match="seed"):
        fit(1, 3)


def test_non_finite_loss_names_the_step(tmp_path):
    model = torch.nn.Linear(2, 1)
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), TrainConfig(steps=5, progress=False),
                      tmp_path)
    with pytest.raises(FloatingPointError, match="step 2"):
        trainer.fit(lambda m, b, ctx: m(b).sum() * (float("nan") if ctx.step == 2 else 1.0),
                    lambda ctx: torch.ones(1, 2))


# ---------------------------------------------------------------- DDP (2 gloo processes)
_DDP_SCRIPT = textwrap.dedent('''
    import sys, torch
    from baselines.common import distributed
    from baselines.common.sampling import StepSampler
    from baselines.common.train import TrainConfig, Trainer

    torch.set_num_threads(1)
    info = distributed.init_from_env()
    workdir = sys.argv[1]
    # all_gather_with_grad: the gradient of every rank's use of my slice comes back to me
    x = torch.full((2, 3), float(info.rank + 1), requires_grad=True)
    gathered = distributed.all_gather_with_grad(x)  # (2 * world, 3)
    (gathered * torch.arange(gathered.shape[0]).view(-1, 1)).sum().backward()
    expected = info.world_size * torch.arange(2 * info.rank, 2 * info.rank + 2).float().view(-1, 1).expand(2, 3)
    assert gathered.shape == (2 * info.world_size, 3) and torch.equal(x.grad, expected), x.grad

    torch.manual_seed(0)
    model = torch.nn.Linear(5, 1)
    data = torch.randn(24, 5)
    target = data @ torch.arange(5.0)
    sampler = StepSampler(24, 8 // info.world_size, seed=0, rank=info.rank, world_size=info.world_size)
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.05), TrainConfig(steps=6, seed=0,
                      progress=False, log_every=1), workdir)
    batch = lambda ctx: (data[sampler.indices(ctx.step)], target[sampler.indices(ctx.step)])
    trainer.fit(lambda m, b, ctx: (m(b[0]).squeeze(1) - b[1]).pow(2).mean(), batch, sampler=sampler)
    torch.save(model.state_dict(), f"{workdir}/rank{info.rank}.pt")
    distributed.shutdown()
''')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_ranks_train_like_one_process_with_the_global_batch(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(_DDP_SCRIPT)
    base = {**os.environ, "PYTHONPATH": str(REPO), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path / "two")], stderr=subprocess.PIPE, text=True,
                              env={**base, "RANK": str(r), "WORLD_SIZE": "2", "LOCAL_RANK": str(r)})
             for r in range(2)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errors
    _run_here(script, str(tmp_path / "one"))  # one process, same global batch
    single = torch.load(tmp_path / "one" / "rank0.pt", weights_only=True)
    ranks = [torch.load(tmp_path / "two" / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for name in single:
        assert torch.equal(ranks[0][name], ranks[1][name])  # DDP keeps replicas identical
        torch.testing.assert_close(ranks[0][name], single[name], rtol=1e-5, atol=1e-6)  # grad mean = global batch
    final = load_checkpoint(tmp_path / "two" / FINAL)
    for name in single:
        assert torch.equal(final["model"][name], ranks[0][name])
    log = (tmp_path / "two" / "log.jsonl").read_text().splitlines()
    assert len(log) == 6  # rank 0 alone writes the log
