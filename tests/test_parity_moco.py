"""MoCo v2 parity: the harness's MoCo against an independent transcription of the authors' code.

Read: facebookresearch/moco at commit 132aea9, ``moco/builder.py`` (``MoCo.__init__``,
``_momentum_update_key_encoder``, ``_dequeue_and_enqueue``, ``_batch_shuffle_ddp``,
``_batch_unshuffle_ddp``, ``forward``) and ``main_moco.py`` (``nn.CrossEntropyLoss`` on the
returned logits and labels, then ``optimizer.step()``); the optimiser is MoCo-CXR's
(stanfordmlgroup/MoCo-CXR 9ff5795, ``moco_pretraining/moco/main_moco.py --optimizer adam``:
``torch.optim.Adam(model.parameters(), lr, betas=(0.9, 0.999), weight_decay)``).

The reference's math, in my words (``reference_step`` below writes it out again, without the
project's code; only the networks themselves are shared):

1. q = the query encoder's output for the query images, L2-normalised per row.
2. Without gradient: every key-encoder parameter becomes m * itself + (1 - m) * the query
   encoder's (parameters only, never buffers), BEFORE the keys are computed.
3. Shuffle BN on W GPUs: gather all key images (the global batch), draw ONE random permutation
   (``torch.randperm`` on every rank, rank 0's broadcast), give GPU g the slice
   ``perm.view(W, -1)[g]``; each GPU encodes its slice (its BatchNorm sees only that slice),
   L2-normalises, the keys are gathered again and each GPU takes back its own images with
   ``argsort(perm).view(W, -1)[rank]``.
4. Logits: column 0 is q . k of the same image, columns 1..K are q . queue; all divided by T.
   Labels are all 0 (the positive is column 0); the loss is the mean cross-entropy.
5. Enqueue: the keys of all GPUs (gathered, rank order) overwrite the queue columns
   [ptr, ptr + global batch); ptr moves on by the global batch modulo K (K must be a multiple).

On one process the harness emulates step 3 by cutting the permuted batch into
``shuffle_bn_splits`` sub-batches (W virtual GPUs for the keys; the queries stay one batch, as on
one GPU): with splits = 1 that is the reference on one GPU, exactly (MoCo-CXR's one-GPU scripts);
with splits = W the keys are exactly the reference's W-GPU keys. Under torchrun the harness shuffles
across ranks; ``test_shuffle_bn_across_two_gloo_ranks_matches_the_reference`` runs 2 real ranks.
"""

from __future__ import annotations

import copy
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from baselines.common.backbones import CnnBackbone
from baselines.common.train import StepContext
from baselines.moco.config import MoCoConfig
from baselines.moco.model import MoCo
from baselines.moco.pretrain import build_optimizer, moco_step

B, DIM, K, M, T = 8, 8, 16, 0.9, 0.2  # K = 2 global batches: the third step wraps the pointer
CFG = MoCoConfig(lr=1e-2, weight_decay=1e-4, K=K, m=M, T=T, dim=DIM, batch_size=B)
ATOL = 1e-6


def bn_backbone() -> CnnBackbone:
    """BatchNorm in both stages, so which images share a BatchNorm batch changes the keys.

    No conv bias before a BatchNorm (as in ResNets): its gradient is 0 up to rounding, which Adam would
    scale up to lr-sized steps of noise.
    """
    torch.manual_seed(0)
    trunk = nn.Sequential(nn.Conv2d(3, 6, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(6), nn.ReLU(),
                          nn.Conv2d(6, 12, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(12), nn.ReLU())
    return CnnBackbone("tiny-bn", trunk, num_features=12, in_chans=3, stride=4)


def fixed_views(step: int, batch: int = B) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + step)
    base = torch.randn(batch, 3, 8, 8, generator=g)
    return base + 0.3 * torch.randn(base.shape, generator=g), base + 0.3 * torch.randn(base.shape, generator=g)


# ---------------------------------------------------------------- the reference, transcribed


def ref_momentum_update(enc_q: nn.Module, enc_k: nn.Module, m: float) -> None:
    with torch.no_grad():
        for param_q, param_k in zip(enc_q.parameters(), enc_k.parameters(), strict=True):
            param_k.data = param_k.data * m + param_q.data * (1.0 - m)


def ref_shuffled_keys(enc_k: nn.Module, x_gather: torch.Tensor, idx_shuffle: torch.Tensor, world: int
                      ) -> list[torch.Tensor]:
    """Steps 3 of the docstring for every (virtual) GPU: the keys each rank ends up with, in its own order."""
    idx_unshuffle = torch.argsort(idx_shuffle)
    k_per_gpu = [F.normalize(enc_k(x_gather[idx_shuffle.view(world, -1)[g]]), dim=1) for g in range(world)]
    k_gather = torch.cat(k_per_gpu)  # concat_all_gather: rank order
    return [k_gather[idx_unshuffle.view(world, -1)[r]] for r in range(world)]


def ref_logits(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float
               ) -> tuple[torch.Tensor, torch.Tensor]:
    l_pos = torch.einsum("nc,nc->n", q, k).unsqueeze(-1)
    l_neg = torch.einsum("nc,ck->nk", q, queue.clone().detach())
    logits = torch.cat([l_pos, l_neg], dim=1) / temperature
    return logits, torch.zeros(logits.shape[0], dtype=torch.long)


def ref_dequeue_and_enqueue(state: dict, keys: torch.Tensor) -> None:
    batch_size = keys.shape[0]
    ptr = state["ptr"]
    assert state["queue"].shape[1] % batch_size == 0
    state["queue"][:, ptr:ptr + batch_size] = keys.T
    state["ptr"] = (ptr + batch_size) % state["queue"].shape[1]


def reference_step(state: dict, im_q: torch.Tensor, im_k: torch.Tensor, world: int) -> dict:
    """One iteration of main_moco's loop with builder.MoCo on ``world`` GPUs' keys (queries as one batch)."""
    q = F.normalize(state["enc_q"](im_q), dim=1)
    with torch.no_grad():
        ref_momentum_update(state["enc_q"], state["enc_k"], M)
        idx_shuffle = torch.randperm(im_k.shape[0])  # drawn from the global RNG, as the reference draws it
        k = torch.cat(ref_shuffled_keys(state["enc_k"], im_k, idx_shuffle, world))
    logits, labels = ref_logits(q, k, state["queue"], T)
    ref_dequeue_and_enqueue(state, k)
    loss = nn.CrossEntropyLoss()(logits, labels)
    state["optimizer"].zero_grad()
    loss.backward()
    state["optimizer"].step()
    return {"loss": loss.detach(), "logits": logits.detach(), "labels": labels, "keys": k}


def reference_state(model: MoCo) -> dict:
    """The reference's model, started from the harness model's initial weights and queue."""
    enc_q, enc_k = copy.deepcopy(model.encoder_q), copy.deepcopy(model.encoder_k)
    optimizer = torch.optim.Adam(enc_q.parameters(), CFG.lr, betas=(0.9, 0.999), weight_decay=CFG.weight_decay)
    return {"enc_q": enc_q, "enc_k": enc_k, "queue": model.queue.clone(), "ptr": 0, "optimizer": optimizer}


# ---------------------------------------------------------------- one process


@pytest.mark.parametrize("splits", [1, 2, 4])
def test_three_updates_match_the_reference(splits):
    """Loss, logits, labels, key momentum, shuffled keys, queue and pointer (wrapping), Adam update: 3 steps."""
    model = MoCo(bn_backbone, dim=DIM, K=K, m=M, T=T, shuffle_bn_splits=splits).train()
    ref = reference_state(model)
    optimizer = build_optimizer(model, CFG)
    ctx = StepContext(step=0, total_steps=3, seed=0)
    with torch.no_grad():  # the query encoder as after an earlier step: the first momentum update must move k
        for p in model.encoder_q.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
        for p_h, p_r in zip(model.encoder_q.parameters(), ref["enc_q"].parameters(), strict=True):
            p_r.copy_(p_h)
    for step in range(3):
        im_q, im_k = fixed_views(step)
        torch.manual_seed(step)  # each draws the shuffle from the global RNG at the same point
        logits, labels = copy.deepcopy(model)(im_q, im_k)  # the forward alone, on a copy of this state
        torch.manual_seed(step)
        loss, extras = moco_step(model, {"views": [im_q, im_k]}, ctx)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step == 0 and splits > 1:  # not vacuous: the BatchNorm batches the keys see change the keys
            with torch.no_grad():
                state = copy.deepcopy(ref["enc_k"])
                perm = torch.randperm(B, generator=torch.Generator().manual_seed(0))
                one, split = ref_shuffled_keys(state, im_k, perm, 1), ref_shuffled_keys(state, im_k, perm, splits)
            assert (torch.cat(one) - torch.cat(split)).abs().max() > 1e-3  # both in the batch's own order
        torch.manual_seed(step)
        want = reference_step(ref, im_q, im_k, world=splits)

        assert logits.shape == (B, 1 + K) and torch.equal(labels, want["labels"])
        torch.testing.assert_close(logits, want["logits"], rtol=0, atol=ATOL / T)
        torch.testing.assert_close(loss.detach(), want["loss"], rtol=0, atol=ATOL)
        assert extras["top1"].item() == (want["logits"].argmax(1) == 0).float().mean().item()
        assert int(model.queue_ptr) == ref["ptr"] == (step + 1) * B % K
        torch.testing.assert_close(model.queue, ref["queue"], rtol=0, atol=ATOL)
        for (name, p_h), p_r in zip(model.encoder_q.named_parameters(), ref["enc_q"].parameters(), strict=True):
            torch.testing.assert_close(p_h, p_r, rtol=0, atol=ATOL, msg=f"query {name} after step {step}")
        for (name, p_h), p_r in zip(model.encoder_k.named_parameters(), ref["enc_k"].parameters(), strict=True):
            torch.testing.assert_close(p_h, p_r, rtol=0, atol=ATOL, msg=f"key {name} after step {step}")
        for (name, b_h), b_r in zip(model.encoder_k.named_buffers(), ref["enc_k"].buffers(), strict=True):
            torch.testing.assert_close(b_h, b_r, rtol=0, atol=ATOL, msg=f"key buffer {name} after step {step}")


# ---------------------------------------------------------------- two processes (gloo)

WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ref_concat_all_gather(tensor: torch.Tensor) -> torch.Tensor:
    import torch.distributed as dist

    gathered = [torch.ones_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, tensor)
    return torch.cat(gathered, dim=0)


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    """Rank ``rank`` of the global batch: the harness forward, then builder.MoCo's forward with real collectives."""
    import torch.distributed as dist

    from baselines.common import distributed

    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    distributed.init_from_env(backend="gloo")
    model = MoCo(bn_backbone, dim=DIM, K=K, m=M, T=T, shuffle_bn_splits=2).train()  # the same init on every rank
    ref = reference_state(model)
    im_q, im_k = fixed_views(0)
    mine = slice(rank * B // world, (rank + 1) * B // world)
    torch.manual_seed(7)
    logits, _ = model(im_q[mine], im_k[mine])

    torch.manual_seed(7)  # builder.MoCo.forward, _batch_shuffle_ddp and _batch_unshuffle_ddp, transcribed
    with torch.no_grad():
        q = F.normalize(ref["enc_q"](im_q[mine]), dim=1)
        ref_momentum_update(ref["enc_q"], ref["enc_k"], M)
        x_gather = _ref_concat_all_gather(im_k[mine])
        idx_shuffle = torch.randperm(x_gather.shape[0])
        dist.broadcast(idx_shuffle, src=0)
        idx_unshuffle = torch.argsort(idx_shuffle)
        k = F.normalize(ref["enc_k"](x_gather[idx_shuffle.view(world, -1)[rank]]), dim=1)
        k = _ref_concat_all_gather(k)[idx_unshuffle.view(world, -1)[rank]]
        ref_logits_, _ = ref_logits(q, k, ref["queue"], T)
        ref_dequeue_and_enqueue(ref, _ref_concat_all_gather(k))
    torch.save({"logits": logits.detach(), "ref_logits": ref_logits_, "queue": model.queue.clone(),
                "ref_queue": ref["queue"], "ptr": int(model.queue_ptr), "ref_ptr": ref["ptr"]},
               Path(out) / f"rank{rank}.pt")
    distributed.shutdown()


def test_shuffle_bn_across_two_gloo_ranks_matches_the_reference(tmp_path):
    """2 gloo ranks of 4: the cross-rank shuffle gives the reference's logits and queue on every rank, and the
    single-process emulation (shuffle_bn_splits=2, the same permutation) enqueues exactly those keys."""
    import torch.multiprocessing as mp

    mp.start_processes(_ddp_worker, args=(WORLD, _free_port(), str(tmp_path)), nprocs=WORLD, join=True,
                       start_method="fork")
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    one = MoCo(bn_backbone, dim=DIM, K=K, m=M, T=T, shuffle_bn_splits=WORLD).train()
    im_q, im_k = fixed_views(0)
    torch.manual_seed(7)
    one(im_q, im_k)
    for r, got in enumerate(ranks):
        torch.testing.assert_close(got["logits"], got["ref_logits"], rtol=0, atol=ATOL / T, msg=f"rank {r} logits")
        torch.testing.assert_close(got["queue"], got["ref_queue"], rtol=0, atol=ATOL, msg=f"rank {r} queue")
        assert got["ptr"] == got["ref_ptr"] == B  # every rank enqueued the global batch
        torch.testing.assert_close(got["queue"], one.queue, rtol=0, atol=ATOL, msg=f"rank {r} vs one process")
    assert not torch.allclose(ranks[0]["logits"], ranks[1]["logits"])  # each rank scored its own queries
