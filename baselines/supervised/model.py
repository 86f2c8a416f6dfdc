"""The supervised classifier: a backbone, a linear multi-label head, and BCE over the known labels.

What a CXR classifier paper trains (CheXNet, CheXpert): one network, one sigmoid per label, the mean
binary cross-entropy. A label the task's policy ignores (NaN target: an uncertain mention under
U-Ignore) contributes nothing to the loss rather than a made-up 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from baselines.common.backbones import Backbone


class SupervisedClassifier(nn.Module):
    """``backbone`` (the encoder the harness keeps) and ``head`` (one logit per label, dropped after training)."""

    def __init__(self, backbone: Backbone, num_labels: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.num_features, num_labels)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C, S, S) -> (B, L)`` logits."""
        return self.head(self.backbone(images))


def masked_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean BCE-with-logits over the entries whose target is known (1 or 0); NaN targets are left out.

    Args:
        logits: ``(B, L)``.
        targets: ``(B, L)`` with 1, 0 or NaN.

    Returns:
        A scalar; 0 (with a gradient path) when no entry is known.
    """
    known = ~torch.isnan(targets)  # (B, L)
    per_entry = F.binary_cross_entropy_with_logits(logits.float(), torch.nan_to_num(targets.float()),
                                                   reduction="none")  # (B, L)
    return (per_entry * known).sum() / known.sum().clamp(min=1)
