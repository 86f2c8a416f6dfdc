"""Multi-process pretraining: 2 gloo CPU processes give 1 process's loss curve at the same global batch.

The processes are launched like a multi-task submitit job (or torchrun): each gets RANK /
WORLD_SIZE / MASTER_ADDR / MASTER_PORT and calls ``RunJob(request, stage="pretrain")``, which
joins the process group (``harness.dispatch.jobs._join_process_group``) and pretrains through
``harness.dispatch.runner.pretrain_only`` (rank 0 alone takes the cache lock and tells the others).

The image-text and EHR methods (``region-word``, ``mlm-mvm``, ``msn-ehr``) need reports / EHR
columns, which the mock task lacks: their ranks call ``harness.dispatch.pretraining.pretrained_checkpoint`` (what
``pretrain_only`` calls after preparing the data) on in-memory studies. Every 2-process run is checked
to have been written once (one done.json, checkpoint and final, one log line per step). The exact check
of the cross-rank negatives is ``test_gathered_matching_losses_and_gradients_equal_one_process``.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest

from harness.dispatch.runner import RunRequest

GLOBAL_BATCH = 8


def _mock_ready() -> bool:
    try:
        from harness.catalog import METHODS
        from harness.data import roots  # noqa: F401

        METHODS.get("random")
        return (Path(__file__).resolve().parent.parent / "tasks" / "mock.yaml").exists()
    except Exception:  # noqa: BLE001 - any missing piece means "not yet"
        return False


needs_mock = pytest.mark.skipif(not _mock_ready(), reason="the mock task / data roots are not importable yet")


class TinyDDP:
    """A test method: a linear autoencoder (a per-sample loss, so DDP's gradient mean is exact)."""

    def __init__(self) -> None:
        from harness.encoders import MethodCard, Preprocess

        self.card = MethodCard(name="test-ddp", paper="harness tests", preprocess=Preprocess(16, 1, (0.5,), (0.5,)))
        self.profiles = {"smoke": {"image_size": 16, "steps": 5, "dim": 4, "seed": 0}}

    def pretrain(self, request):
        import torch

        from baselines.common import distributed
        from baselines.common.sampling import StepSampler
        from baselines.common.train import TrainConfig, Trainer

        info = distributed.info()
        request.workdir.mkdir(parents=True, exist_ok=True)
        (request.workdir / f"rank{info.rank}-of-{info.world_size}").touch()  # proof of the process group
        torch.manual_seed(request.config["seed"])
        model = torch.nn.Linear(16 * 16, request.config["dim"], bias=False)
        images = torch.as_tensor(request.data.images[:], dtype=torch.float32).flatten(1) / 255.0
        sampler = StepSampler(len(images), GLOBAL_BATCH // info.world_size, seed=request.seed, rank=info.rank,
                              world_size=info.world_size)
        trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.5),
                          TrainConfig(steps=request.config["steps"], seed=request.seed, log_every=1, progress=False),
                          request.workdir)

        def batch_fn(ctx):
            return images[torch.as_tensor(sampler.indices(ctx.step))]

        def step_fn(model, batch, ctx):
            z = model(batch)  # (B, dim); model is DDP-wrapped on 2 processes
            weight = model.module.weight if hasattr(model, "module") else model.weight
            return (z @ weight - batch).pow(2).mean()

        return trainer.fit(step_fn, batch_fn, sampler=sampler)

    def load(self, checkpoint, config):  # pragma: no cover - only pretraining is exercised
        raise NotImplementedError


def _register() -> None:
    from harness.catalog import METHODS

    if "test-ddp" not in METHODS:
        METHODS.add("test-ddp", TinyDDP)


def _worker(rank: int, world_size: int, port: int, cache: str, method: str, overrides: list[str]) -> None:
    import torch

    from harness.dispatch import jobs

    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), HARNESS_CACHE=cache)
    _register()
    req = RunRequest(method=method, task="mock", profile="smoke", overrides=overrides, progress=False, device="cpu")
    jobs.RunJob(req, stage="pretrain")()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _loss_curve(tmp_path: Path, world_size: int, method: str, overrides: list[str], monkeypatch) -> list[float]:
    """Pretrain on ``world_size`` processes (one: in this process) and read the logged loss per step."""
    import torch.multiprocessing as mp

    cache = tmp_path / f"cache-{world_size}"
    if world_size == 1:
        from harness.dispatch import jobs

        monkeypatch.setenv("HARNESS_CACHE", str(cache))
        _register()
        req = RunRequest(method=method, task="mock", profile="smoke", overrides=overrides, progress=False,
                         device="cpu")
        jobs.RunJob(req, stage="pretrain")()
    else:  # fork: the children start with torch and harness already imported (seconds, not tens)
        mp.start_processes(_worker, args=(world_size, _free_port(), str(cache), method, overrides),
                           nprocs=world_size, join=True, start_method="fork")
    [log] = list((cache / "pretrain").rglob("log.jsonl"))
    if world_size > 1:
        _assert_written_once(cache, steps=len(log.read_text().splitlines()))
    if method == "test-ddp":
        assert sorted(p.name for p in log.parent.glob("rank*")) == [f"rank{r}-of-{world_size}"
                                                                    for r in range(world_size)]
    return [json.loads(line)["loss"] for line in log.read_text().splitlines()]


@needs_mock
def test_two_gloo_processes_match_one_process(tmp_path, monkeypatch):
    one = _loss_curve(tmp_path, 1, "test-ddp", [], monkeypatch)
    two = _loss_curve(tmp_path, 2, "test-ddp", [], monkeypatch)
    assert len(one) == len(two) == 5
    np.testing.assert_allclose(two, one, rtol=1e-4, atol=1e-6)
    assert one[-1] < one[0]  # it trained


@needs_mock
@pytest.mark.slow
def test_moco_two_gloo_processes_match_one_process(tmp_path, monkeypatch):
    try:
        from harness.catalog import METHODS

        METHODS.get("moco")
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"baselines.moco is not importable yet: {exc}")
    one = _loss_curve(tmp_path, 1, "moco", [], monkeypatch)
    two = _loss_curve(tmp_path, 2, "moco", [], monkeypatch)
    assert len(one) == len(two) > 0
    # Not float-exact, by design of MoCo: each rank's query BatchNorm normalises its own half of the
    # global batch (4 of 8 images here) while one process normalises all 8, and the shuffled key BN
    # splits differ likewise. Measured: at most ~9 % relative on the first steps of the smoke run.
    np.testing.assert_allclose(two, one, rtol=0.15, atol=1e-3)


# ---------------------------------------------------------------- negatives from the global batch (unit level)

WORLD = 2
PAIRS = 6  # global batch of the unit test: 3 pairs per rank


def _join(rank: int, world_size: int, port: int) -> None:
    import torch

    from baselines.common import distributed

    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    distributed.init_from_env(backend="gloo")


def _spawn(fn, world_size: int, *args) -> None:
    import torch.multiprocessing as mp

    mp.start_processes(fn, args=(world_size, _free_port(), *args), nprocs=world_size, join=True, start_method="fork")


def _matching_case(rows: slice) -> dict:
    """region-word's ITM terms and mlm-mvm's contrastive term for ``rows`` of a fixed global batch, backward done.

    Returns the loss terms, the inputs' gradients and the parameters' gradients averaged over the ranks (what
    DDP's all-reduce hands the optimiser). On one process (``rows`` = everything) nothing is gathered.
    """
    import torch

    from baselines.common import distributed
    from baselines.mlm_mvm import MLMMVMMethod
    from baselines.mlm_mvm.config import MLMMVMConfig
    from baselines.mlm_mvm.model import MLMMVMModel
    from baselines.region_word.config import PROFILES, RegionWordConfig
    from baselines.region_word.losses import matching_losses, total_loss

    g = torch.Generator().manual_seed(0)
    length, regions, width = 7, 5, 8
    raw = {"image": torch.randn(PAIRS, width, generator=g), "regions": torch.randn(PAIRS, regions, width, generator=g),
           "sentence": torch.randn(PAIRS, width, generator=g), "words": torch.randn(PAIRS, length, width, generator=g)}
    lengths = torch.tensor([7, 3, 5, 2, 6, 4])  # [CLS] + words; padding differs per pair
    attention = (torch.arange(length)[None] < lengths[:, None]).long()  # (PAIRS, L)
    mine = {k: v[rows].clone().requires_grad_(True) for k, v in raw.items()}
    torch.manual_seed(0)
    projections = torch.nn.ModuleDict({k: torch.nn.Linear(width, 16) for k in raw})  # stand-ins for the encoders
    cfg = RegionWordConfig(**{**PROFILES["smoke"], "batch_size": PAIRS})
    terms = matching_losses(*(projections[k](mine[k]) for k in raw), attention[rows], cfg,
                            torch.Generator().manual_seed(3))  # the same generator on every rank (negatives)
    total_loss({**terms, "mlm": torch.zeros(())}, cfg).backward()

    mcfg = MLMMVMConfig(**{**MLMMVMMethod.profiles["smoke"], "dropout": 0.0})
    torch.manual_seed(0)
    model = MLMMVMModel(mcfg, vocab_size=40, pad_id=0)
    images = torch.randn(PAIRS, 1, mcfg.image_size, mcfg.image_size, generator=g)[rows].requires_grad_(True)
    ids = torch.randint(5, 40, (PAIRS, length), generator=g) * attention
    itc = model.image_report_alignment(images, ids[rows], attention[rows])
    itc.backward()

    def averaged(module):  # DDP's gradient all-reduce (mean over ranks)
        return {n: distributed.all_reduce_mean(p.grad) for n, p in module.named_parameters() if p.grad is not None}

    return {"terms": {k: v.detach() for k, v in {**terms, "itc": itc}.items()},
            "input_grads": {**{k: v.grad for k, v in mine.items()}, "images": images.grad},
            "param_grads": {**averaged(projections), **{f"mlm_mvm.{n}": v for n, v in averaged(model).items()}}}


def _matching_worker(rank: int, world_size: int, port: int, out: str) -> None:
    import torch

    from baselines.common import distributed

    _join(rank, world_size, port)
    per_rank = PAIRS // world_size
    torch.save(_matching_case(slice(rank * per_rank, (rank + 1) * per_rank)), Path(out) / f"rank{rank}.pt")
    distributed.shutdown()


def test_gathered_matching_losses_and_gradients_equal_one_process(tmp_path):
    """region-word's sentence / word-region CE and triplets and mlm-mvm's contrastive term, 2 gloo ranks of 3
    pairs vs 1 process of 6: the same loss on every rank, the same DDP-averaged parameter gradients, and each
    rank's input gradient equal to its rows of one process's (up to the factor W: every rank's loss is the
    global loss, and DDP divides the summed gradient by W)."""
    import torch

    one = _matching_case(slice(None))
    _spawn(_matching_worker, WORLD, str(tmp_path))
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    assert set(one["terms"]) >= {"sent_i2t", "sent_t2i", "word_i2t", "word_t2i", "trip_sent_img", "trip_word_txt",
                                 "itc"}
    per_rank = PAIRS // WORLD
    for r, got in enumerate(ranks):
        for k, v in one["terms"].items():
            torch.testing.assert_close(got["terms"][k], v, rtol=1e-5, atol=1e-6, msg=f"rank {r} term {k}")
        for k, v in one["param_grads"].items():
            torch.testing.assert_close(got["param_grads"][k], v, rtol=1e-5, atol=1e-6, msg=f"rank {r} grad {k}")
        for k, v in one["input_grads"].items():
            torch.testing.assert_close(got["input_grads"][k] / WORLD, v[r * per_rank:(r + 1) * per_rank],
                                       rtol=1e-5, atol=1e-6, msg=f"rank {r} input grad {k}")
    # Local negatives only would be a different loss: the gather is what makes these equal.
    assert one["terms"]["sent_i2t"] > 0 and len(one["param_grads"]) > 8


# ---------------------------------------------------------------- image-text and EHR methods, end to end

REPORTS = ("no acute cardiopulmonary process.", "mild cardiomegaly without edema.",
           "small left pleural effusion with basilar atelectasis.", "right upper lobe consolidation, pneumonia.",
           "the lungs are clear. no pneumothorax.", "moderate pulmonary edema and bilateral effusions.")


def _studies(n: int = 16, size: int = 32):
    """In-memory training data with reports and MIMIC-IV-style EHR columns (the mock task has neither)."""
    import pandas as pd

    from harness.cohort import TrainingData
    from harness.data.images import ImageView
    from tests.support import ArrayStore

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
    frame = pd.DataFrame({
        "dataset": "mock", "image_id": [f"i{i}" for i in range(n)], "findings": [REPORTS[i % 6] for i in range(n)],
        "impression": "", "indication": "",
        "view": rng.choice(["PA", "AP"], n).astype(object), "orientation": "Erect", "ehr_available": True,
        "ehr_sex": rng.choice(["M", "F"], n).astype(object), "ehr_age": rng.integers(20, 90, n).astype(float),
        "ehr_age_over_89": False, "ehr_stay_expire": rng.integers(0, 2, n).astype(float),
        "ehr_icu_stay": rng.integers(0, 2, n).astype(float)})
    return TrainingData(dataset="mock", frame=frame, images=ImageView(ArrayStore(images), np.arange(n)),
                        data_source="synthetic", fingerprint=f"ddp-studies-{n}-{size}")


def _pretrain_via_runner(method: str, overrides: dict) -> None:
    """``pretraining.pretrained_checkpoint`` as ``RunJob(stage="pretrain")`` calls it, on ``_studies``."""
    from harness.catalog import METHODS
    from harness.dispatch.pretraining import pretrained_checkpoint

    impl = METHODS.get(method)()
    pretrained_checkpoint(impl, {**impl.profiles["smoke"], **overrides}, _studies(), "cpu", False, None)


def _pretrain_worker(rank: int, world_size: int, port: int, cache: str, method: str, overrides: dict) -> None:
    from baselines.common import distributed

    os.environ["HARNESS_CACHE"] = cache
    _join(rank, world_size, port)
    _pretrain_via_runner(method, overrides)
    distributed.shutdown()


def _pretrain_curves(tmp_path: Path, method: str, overrides: dict, monkeypatch) -> tuple[list[dict], list[dict]]:
    """The per-step log records of one process and of 2 gloo processes at the same global batch."""
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache-1"))
    _pretrain_via_runner(method, overrides)
    _spawn(_pretrain_worker, WORLD, str(tmp_path / "cache-2"), method, overrides)
    logs = []
    for cache in ("cache-1", "cache-2"):
        [log] = list((tmp_path / cache / "pretrain").rglob("log.jsonl"))
        logs.append([json.loads(line) for line in log.read_text().splitlines()])
    _assert_written_once(tmp_path / "cache-2", steps=len(logs[0]))
    return logs[0], logs[1]


def _assert_written_once(cache: Path, steps: int) -> None:
    """Rank 0 alone wrote the pretraining: one workdir, one done.json / checkpoint / final, one log line a step."""
    [workdir] = [d for d in (cache / "pretrain").glob("*/*") if d.is_dir()]
    names = sorted(p.name for p in workdir.iterdir())
    assert [n for n in names if n.endswith(".pt") or n == "done.json"] == ["checkpoint.pt", "done.json", "final.pt"]
    assert not [n for n in names if "tmp" in n], names  # no half-written file of a second writer
    assert len((workdir / "log.jsonl").read_text().splitlines()) == steps
    assert json.loads((workdir / "done.json").read_text())["checkpoint"] == "final.pt"


def _relative_gap(one: list[dict], two: list[dict], key: str) -> float:
    return max(abs(a[key] - b[key]) / abs(a[key]) for a, b in zip(one, two, strict=True))


# Why the end-to-end curves are close but not equal (the exact check is the unit test above): each rank
# augments only the images it loads (its own stream), normalises them with its own BatchNorm statistics and
# draws its own MVM / MSN masks, and the MLM / MVM losses are means over each rank's masked tokens. Dropout is
# set to 0 to take one source out. Tolerances are about 2x (3x for the smallest) the gaps measured on this
# machine with these seeds; the runs are deterministic on CPU, so a test fails only if the code changes.
# A CE with only the local batch's negatives starts near log(B/W) instead of log(B) (log 4 = 1.39 vs
# log 8 = 2.08 here), far outside the tolerance of the near-uniform terms checked tightly.


@pytest.mark.slow
def test_region_word_two_gloo_processes_match_one_process(tmp_path, monkeypatch):
    one, two = _pretrain_curves(tmp_path, "region-word", {"text_dropout": 0.0, "batch_size": 8}, monkeypatch)
    assert len(one) == len(two) == 3
    # Measured: total loss within 9.4 % (the word-region terms move most: BatchNorm over 4 images per rank
    # vs 8 and other crops), the sentence i2t CE within 0.1 % of one process's log(8)
    assert _relative_gap(one, two, "loss") < 0.2
    assert _relative_gap(one, two, "sent_i2t") < 0.01 and _relative_gap(one, two, "trip_sent_img") < 0.01
    assert abs(two[0]["sent_i2t"] - np.log(8)) < 0.05  # the global batch's 8 texts are the candidates


@pytest.mark.slow
def test_mlm_mvm_two_gloo_processes_match_one_process(tmp_path, monkeypatch):
    one, two = _pretrain_curves(tmp_path, "mlm-mvm", {"dropout": 0.0}, monkeypatch)
    assert len(one) == len(two) == 3
    # Measured: total loss within 3.2 % (per-rank MVM / MLM masks), contrastive term within 0.5 %
    assert _relative_gap(one, two, "loss") < 0.07
    assert _relative_gap(one, two, "itc") < 0.015
    assert abs(two[0]["itc"] - np.log(8)) < 0.1  # 8 paired studies per global batch are the candidates


@pytest.mark.slow
def test_msn_ehr_two_gloo_processes_match_one_process(tmp_path, monkeypatch):
    one, two = _pretrain_curves(tmp_path, "msn-ehr", {}, monkeypatch)
    assert len(one) == len(two) == 3
    # Measured: total loss within 6 % (per-rank token masks and projection-head BatchNorm); Sinkhorn and
    # ME-MAX already reduce over ranks (baselines.msn_ehr.losses)
    assert _relative_gap(one, two, "loss") < 0.12


def _tokenizer_worker(rank: int, world_size: int, port: int, workdir: str) -> None:
    import datetime
    import time

    import torch.distributed as dist

    from baselines.common.text import workdir_tokenizer

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=20))  # a mismatch fails, not hangs
    if rank == 1:
        time.sleep(2)  # rank 0 has trained and saved the tokenizer before this rank gets here
    texts = [f"small left pleural effusion number {i} no pneumothorax" for i in range(40)]
    tokenizer = workdir_tokenizer(texts, 60, 16, Path(workdir))
    dist.barrier()  # had rank 1 skipped the tokenizer's barrier, rank 0 would wait here until the timeout
    Path(workdir, f"vocab{rank}").write_text(str(tokenizer.vocab_size))
    dist.destroy_process_group()


def test_every_rank_takes_the_same_tokenizer_branch(tmp_path):
    """A slow rank must not find rank 0's new tokenizer file and skip the barrier (it hung CI once)."""
    _spawn(_tokenizer_worker, WORLD, str(tmp_path))
    assert (tmp_path / "vocab0").read_text() == (tmp_path / "vocab1").read_text()
    assert (tmp_path / "tokenizer.json").is_file()
