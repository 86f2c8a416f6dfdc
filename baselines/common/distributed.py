"""torch.distributed in one place, every helper a no-op on a single process.

Models and losses call these helpers instead of ``torch.distributed`` directly,
so the same code runs in a CPU unit test (one process), under ``torchrun`` and
under submitit/Slurm (STYLE 3.6: "route collectives through one module").

Start-up (once, in the entry point, never at import)::

    info = init_from_env()          # torchrun or submitit/Slurm env vars; no-op otherwise
    ...
    shutdown()

Environment recognised, in order:

- ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` / ``MASTER_ADDR`` / ``MASTER_PORT``
  (torchrun, or anything that exports them);
- ``SLURM_PROCID`` / ``SLURM_NTASKS`` inside a submitit job: submitit's
  ``TorchDistributedEnvironment().export()`` fills in the torchrun variables.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _export_submitit_env() -> None:
    """Inside a multi-task submitit job, export the torchrun variables."""
    if "RANK" in os.environ or int(os.environ.get("SLURM_NTASKS", "1")) <= 1:
        return
    try:
        from submitit.helpers import TorchDistributedEnvironment

        TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    except RuntimeError:  # Slurm variables but not a submitit job: the user must export RANK etc.
        pass


def init_from_env(backend: str | None = None) -> DistInfo:
    """Initialise the default process group from the environment when it names >1 process.

    Args:
        backend: ``"nccl"`` / ``"gloo"``; default nccl when CUDA is available, gloo otherwise.

    Returns:
        This process's rank, world size and local rank (``DistInfo()`` on one process).
    """
    if dist.is_available() and dist.is_initialized():
        return info()
    _export_submitit_env()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, init_method="env://")
    return info()


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def info() -> DistInfo:
    return DistInfo(rank(), world_size(), int(os.environ.get("LOCAL_RANK", "0")) if is_initialized() else 0)


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def shutdown() -> None:
    if is_initialized():
        dist.destroy_process_group()


@torch.no_grad()
def concat_all_gather(tensor: torch.Tensor) -> torch.Tensor:
    """``(B, ...)`` per rank -> ``(world * B, ...)`` in rank order, no gradient (MoCo's keys)."""
    if not is_initialized():
        return tensor
    gathered = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(gathered, tensor.contiguous())
    return torch.cat(gathered, dim=0)


class _AllGatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums every rank's gradient for this rank's slice.

    Contrastive losses that use other ranks' samples as negatives need the
    gradient of those terms to flow back to the rank that produced them.
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        gathered = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, tensor.contiguous())
        ctx.batch = tensor.shape[0]
        return torch.cat(gathered, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = dist.get_rank() * ctx.batch
        return grad[start:start + ctx.batch]


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """``(B, ...)`` per rank -> ``(world * B, ...)``, differentiable (contrastive negatives)."""
    if not is_initialized():
        return tensor
    return _AllGatherWithGrad.apply(tensor)


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """Mean over ranks (for logging a loss that every rank computed)."""
    if not is_initialized():
        return value
    value = value.detach().clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / world_size()


@torch.no_grad()
def broadcast(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Rank ``src``'s tensor on every rank (in place; returned for chaining)."""
    if is_initialized():
        dist.broadcast(tensor, src=src)
    return tensor


def broadcast_object(obj: object, src: int = 0) -> object:
    """Rank ``src``'s Python object on every rank."""
    if not is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
