"""MoCo v2: momentum contrast with a queue of negative keys.

He et al., "Momentum Contrast for Unsupervised Visual Representation Learning",
CVPR 2020 (https://arxiv.org/abs/1911.05722); v2 (MLP head): Chen et al.,
arXiv 2003.04297. Follows the authors' ``moco/builder.py`` with two changes that
make it run anywhere: collectives go through ``baselines.common.distributed``
(no-ops on one process), and on one process the shuffle-BN trick shuffles the
keys into ``shuffle_bn_splits`` sub-batches instead of across GPUs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from baselines.common import distributed
from baselines.common.backbones import Backbone


class MoCoEncoder(nn.Module):
    """A backbone followed by MoCo's projection head (``fc`` in the original)."""

    def __init__(self, backbone: Backbone, dim: int, mlp: bool) -> None:
        super().__init__()
        self.backbone = backbone
        width = backbone.num_features
        # MoCo v2 replaces the linear fc by fc-relu-fc (hidden width = the backbone width)
        self.head = (nn.Sequential(nn.Linear(width, width), nn.ReLU(inplace=True), nn.Linear(width, dim)) if mlp
                     else nn.Linear(width, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))  # (B, dim)


class MoCo(nn.Module):
    """Build a MoCo model with a query encoder, a key encoder and a queue.

    Args:
        base_encoder: zero-argument factory for the backbone (called once; the key encoder is a copy).
        dim: feature dimension (default: 128).
        K: queue size; number of negative keys (default: 65536; MoCo-CXR 24576).
        m: momentum of updating the key encoder (default: 0.999).
        T: softmax temperature (default: 0.07; MoCo-CXR 0.2).
        mlp: use the 2-layer MLP head of MoCo v2.
        shuffle_bn_splits: sub-batches for the keys' BatchNorm on a single process.
        freeze_bn_stats: keep the backbones' BatchNorm running statistics (e.g. ImageNet's) fixed:
            BatchNorm layers stay in eval mode while the model trains (their affine weights still
            learn). Not in MoCo; a harness option for short runs from ImageNet weights (``MoCoConfig``).
    """

    def __init__(self, base_encoder: Callable[[], Backbone], dim: int = 128, K: int = 65536, m: float = 0.999,
                 T: float = 0.07, mlp: bool = True, shuffle_bn_splits: int = 1, freeze_bn_stats: bool = False) -> None:
        super().__init__()
        self.K, self.m, self.T, self.shuffle_bn_splits = K, m, T, shuffle_bn_splits
        self.freeze_bn_stats = freeze_bn_stats

        # create the encoders; the key encoder starts as an exact copy and is never updated by gradient
        self.encoder_q = MoCoEncoder(base_encoder(), dim, mlp)
        self.encoder_k = MoCoEncoder(base_encoder(), dim, mlp)
        self.encoder_k.load_state_dict(self.encoder_q.state_dict())
        for param_k in self.encoder_k.parameters():
            param_k.requires_grad = False

        # the queue of keys: (dim, K), each column a unit vector
        self.register_buffer("queue", F.normalize(torch.randn(dim, K), dim=0))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

    def train(self, mode: bool = True) -> MoCo:
        super().train(mode)
        if self.freeze_bn_stats:  # normalise with the stored statistics and never update them
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    @torch.no_grad()
    def _momentum_update_key_encoder(self) -> None:
        """Momentum update of the key encoder: theta_k <- m * theta_k + (1 - m) * theta_q."""
        for param_q, param_k in zip(self.encoder_q.parameters(), self.encoder_k.parameters(), strict=True):
            param_k.mul_(self.m).add_(param_q.detach(), alpha=1.0 - self.m)

    @torch.no_grad()
    def _dequeue_and_enqueue(self, keys: torch.Tensor) -> None:
        keys = distributed.concat_all_gather(keys)  # (world * B, dim): every rank enqueues the same keys
        batch_size = keys.shape[0]
        ptr = int(self.queue_ptr)
        if self.K % batch_size != 0:  # for simplicity, as in MoCo
            raise ValueError(f"MoCo queue size K={self.K} must be a multiple of the global batch {batch_size}")
        # replace the keys at ptr (dequeue and enqueue)
        self.queue[:, ptr:ptr + batch_size] = keys.T.to(self.queue.dtype)
        self.queue_ptr[0] = (ptr + batch_size) % self.K  # move pointer

    @torch.no_grad()
    def _shuffled_keys(self, im_k: torch.Tensor) -> torch.Tensor:
        """Keys computed with shuffled BatchNorm batches, returned in the original order.

        Without it, BatchNorm statistics let a query find its key by "cheating" on the
        batch composition (MoCo, section 3.3). Across GPUs (MoCo's ``_batch_shuffle_ddp``)
        each GPU normalises a random slice of the global batch; on one process the batch
        is permuted and split into ``shuffle_bn_splits`` sub-batches.
        """
        if distributed.world_size() > 1:
            return self._keys_shuffled_across_ranks(im_k)
        batch_size = im_k.shape[0]
        idx_shuffle = torch.randperm(batch_size).to(im_k.device)  # global RNG: saved in every checkpoint
        idx_unshuffle = torch.argsort(idx_shuffle)
        chunks = im_k[idx_shuffle].chunk(max(1, min(self.shuffle_bn_splits, batch_size)))
        k = torch.cat([self.encoder_k(chunk) for chunk in chunks])  # (B, dim)
        return k[idx_unshuffle]

    @torch.no_grad()
    def _keys_shuffled_across_ranks(self, im_k: torch.Tensor) -> torch.Tensor:
        """MoCo's ``_batch_shuffle_ddp`` + ``_batch_unshuffle_ddp`` (equal batch sizes on every rank)."""
        batch_this = im_k.shape[0]
        x_gather = distributed.concat_all_gather(im_k)  # (world * B, C, H, W)
        batch_all = x_gather.shape[0]
        # random shuffle index, drawn on rank 0 and broadcast so every rank agrees
        idx_shuffle = distributed.broadcast(torch.randperm(batch_all).to(im_k.device), src=0)
        idx_unshuffle = torch.argsort(idx_shuffle)
        rank = distributed.rank()
        k = self.encoder_k(x_gather[idx_shuffle.view(-1, batch_this)[rank]])  # (B, dim), a random slice
        k_gather = distributed.concat_all_gather(k)  # (world * B, dim) in shuffled order
        return k_gather[idx_unshuffle.view(-1, batch_this)[rank]]  # this rank's keys, original order

    def forward(self, im_q: torch.Tensor, im_k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Input:
            im_q: a batch of query images (B, C, H, W)
            im_k: a batch of key images (B, C, H, W), other views of the same images
        Output:
            logits (B, 1 + K), targets (B,) = 0: the positive key is column 0
        """
        # compute query features
        q = F.normalize(self.encoder_q(im_q).float(), dim=1)  # (B, dim)

        # compute key features
        with torch.no_grad():  # no gradient to keys
            self._momentum_update_key_encoder()  # update the key encoder
            k = F.normalize(self._shuffled_keys(im_k).float(), dim=1)  # (B, dim)

        # compute logits; Einstein sum is more intuitive
        l_pos = torch.einsum("nc,nc->n", q, k).unsqueeze(-1)  # positive logits: (B, 1)
        l_neg = torch.einsum("nc,ck->nk", q, self.queue.clone().detach().float())  # negative logits: (B, K)
        logits = torch.cat([l_pos, l_neg], dim=1) / self.T  # (B, 1 + K)
        labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)  # positives are the 0-th

        self._dequeue_and_enqueue(k)
        return logits, labels
