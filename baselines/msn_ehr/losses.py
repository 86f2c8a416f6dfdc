"""The MSN loss: anchor predictions vs sharpened, Sinkhorn-balanced target predictions, plus ME-MAX.

Assran et al., "Masked Siamese Networks for Label-Efficient Learning", ECCV 2022
(https://arxiv.org/abs/2204.07141), as the CXR-EHR-MSN code uses it through
lightly's ``MSNLoss`` (temperature 0.1, 3 Sinkhorn iterations, ME-MAX weight 1,
target sharpening temperature 0.25). Written out step by step so each term can be
checked against the paper. Collectives go through ``baselines.common.distributed``
(no-ops on one process), so the loss runs in a CPU unit test.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from baselines.common import distributed


def prototype_probabilities(embeddings: torch.Tensor, prototypes: torch.Tensor, temperature: float) -> torch.Tensor:
    """``p = softmax(z . P^T / T)``: ``(N, D), (K, D) -> (N, K)``; both inputs already L2-normalised."""
    return F.softmax(embeddings @ prototypes.T / temperature, dim=1)


def sharpen(probabilities: torch.Tensor, temperature: float) -> torch.Tensor:
    """``p^(1/T)`` renormalised per row: a low T makes the targets more confident (MSN eq. 2)."""
    sharp = probabilities ** (1.0 / temperature)  # (N, K)
    return sharp / sharp.sum(dim=1, keepdim=True)


def _global_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over ranks (the Sinkhorn marginals are over the GLOBAL batch, as in MSN's AllReduce)."""
    return distributed.all_reduce_mean(tensor) * distributed.world_size()


@torch.no_grad()
def sinkhorn(probabilities: torch.Tensor, iterations: int = 3) -> torch.Tensor:
    """Sinkhorn-Knopp balancing of target assignments (SwAV / MSN): ``(B, K) -> (B, K)``.

    Alternately rescales the K prototype marginals to ``1/K`` and the B sample
    marginals to ``1/B``, so every prototype gets an equal share of the batch's
    mass (this stops all targets collapsing onto a few prototypes). Ends on the
    sample step and rescales by B: each returned row sums to exactly 1, and the
    column sums approach ``B/K`` as ``iterations`` grows.
    """
    Q = probabilities.T.float()  # (K, B)
    K = Q.shape[0]
    B = Q.shape[1] * distributed.world_size()  # global batch
    Q = Q / _global_sum(Q.sum())
    for _ in range(iterations):
        Q = Q / _global_sum(Q.sum(dim=1, keepdim=True)) / K  # each prototype's total mass -> 1/K
        Q = Q / Q.sum(dim=0, keepdim=True) / B  # each sample's total mass -> 1/B (columns are local)
    return (Q * B).T  # (B, K), rows sum to 1


def me_max(anchor_probabilities: torch.Tensor) -> torch.Tensor:
    """Mean-entropy maximisation: ``log K - H(p_bar)`` with ``p_bar`` the mean anchor prediction (>= 0).

    Zero exactly when the batch uses all K prototypes equally on average; minimising
    it keeps individual predictions confident yet the prototypes all in use (MSN eq. 4).
    Under DDP ``p_bar`` is the global mean, with gradient through this rank's part.
    """
    p_bar = anchor_probabilities.mean(dim=0)  # (K,)
    if distributed.is_initialized():
        p_bar = p_bar + (distributed.all_reduce_mean(p_bar) - p_bar.detach())
    entropy = -(p_bar * torch.log(p_bar.clamp_min(1e-12))).sum()
    return math.log(p_bar.shape[0]) - entropy


class MSNLoss(nn.Module):
    """``H(p_target, p_anchor) + lambda * (log K - H(mean p_anchor))``.

    Args:
        temperature: softmax temperature of anchor AND target predictions (0.1).
        sharpen_temperature: target sharpening temperature (0.25).
        sinkhorn_iterations: Sinkhorn-Knopp steps on the targets (3; 0 = none).
        me_max_weight: lambda of the ME-MAX regulariser (1.0).
    """

    def __init__(self, temperature: float = 0.1, sharpen_temperature: float = 0.25, sinkhorn_iterations: int = 3,
                 me_max_weight: float = 1.0) -> None:
        super().__init__()
        self.temperature, self.sharpen_temperature = temperature, sharpen_temperature
        self.sinkhorn_iterations, self.me_max_weight = sinkhorn_iterations, me_max_weight

    def forward(self, anchors: torch.Tensor, targets: torch.Tensor, prototypes: torch.Tensor
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """
        Input:
            anchors: (V * B, D) anchor embeddings, view-major (rows v*B .. v*B+B-1 are view v)
            targets: (B, D) target embeddings (one per image)
            prototypes: (K, D)
        Output:
            loss (scalar), and its parts {"cross_entropy", "me_max", "target_entropy"} (detached)
        """
        num_views = anchors.shape[0] // targets.shape[0]
        if num_views * targets.shape[0] != anchors.shape[0]:
            raise ValueError(f"{anchors.shape[0]} anchors are not a whole number of views of {targets.shape[0]}")
        # Step 1: L2-normalise everything (cosine similarities to the prototypes); float32 for the softmaxes
        anchors = F.normalize(anchors.float(), dim=1)  # (V*B, D)
        targets = F.normalize(targets.float(), dim=1)  # (B, D)
        prototypes = F.normalize(prototypes.float(), dim=1)  # (K, D)

        # Step 2: anchor predictions, with gradient
        anchor_probs = prototype_probabilities(anchors, prototypes, self.temperature)  # (V*B, K)

        # Step 3: target predictions, no gradient: sharpen, balance with Sinkhorn, one per anchor view
        with torch.no_grad():
            target_probs = prototype_probabilities(targets, prototypes, self.temperature)  # (B, K)
            target_probs = sharpen(target_probs, self.sharpen_temperature)
            if self.sinkhorn_iterations > 0:
                target_probs = sinkhorn(target_probs, self.sinkhorn_iterations)
            target_probs = target_probs.repeat(num_views, 1)  # (V*B, K), view-major like the anchors

        # Step 4: cross-entropy H(target, anchor) plus the ME-MAX regulariser
        cross_entropy = -(target_probs * torch.log(anchor_probs.clamp_min(1e-12))).sum(dim=1).mean()
        regulariser = me_max(anchor_probs)
        loss = cross_entropy + self.me_max_weight * regulariser
        target_entropy = -(target_probs * torch.log(target_probs.clamp_min(1e-12))).sum(dim=1).mean()
        return loss, {"cross_entropy": cross_entropy.detach(), "me_max": regulariser.detach(),
                      "target_entropy": target_entropy}
