"""The pretraining tasks' losses: MLM, multi-scale masked vision modelling, image-report alignment, their sum.

The objective of one mixed step (``total_loss``; every weight a harness choice)::

    L = w_itc ITC + w_mvm mean(MVM_paired, MVM_image) + w_mlm mean(MLM_paired, MLM_text)

over the terms the step's parts produce (``MLMMVMModel.forward``): a paired part gives
MVM_paired, MLM_paired and, with the alignment heads, ITC; an image-only part MVM_image;
a text-only part MLM_text. A modality absent from the step contributes nothing.

Shapes: ``B`` images or reports, ``N`` patches (a ``G x G`` grid), ``T`` tokens,
``P`` pixels per patch (patch_size^2 x channels).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from baselines.common.text import IGNORE_INDEX
from baselines.mlm_mvm.config import MLMMVMConfig


def multiscale_patch_mask(batch: int, grid: int, scales: tuple[int, ...], ratio: float,
                          generator: torch.Generator) -> torch.Tensor:
    """``(B, N)`` bool: per image, one scale ``s`` (in patches) and ``ratio`` of its ``s x s`` cells hidden.

    Mixing cell sizes is the "multi-scale" of masked vision modelling: small holes are
    filled from neighbouring texture, large ones need anatomy (where the ribs, the heart
    border or an effusion should be). At least one cell is hidden in every image.
    """
    masks = torch.zeros(batch, grid, grid, dtype=torch.bool)
    choice = torch.randint(len(scales), (batch,), generator=generator)
    for b in range(batch):
        s = int(scales[int(choice[b])])
        cells = math.ceil(grid / s)
        hidden = torch.randperm(cells * cells, generator=generator)[:max(1, round(ratio * cells * cells))]
        cell_mask = torch.zeros(cells * cells, dtype=torch.bool)
        cell_mask[hidden] = True
        full = cell_mask.view(cells, cells).repeat_interleave(s, 0).repeat_interleave(s, 1)  # (cells*s, cells*s)
        masks[b] = full[:grid, :grid]
    return masks.flatten(1)  # (B, N)


def masked_patch_loss(predicted: torch.Tensor, target: torch.Tensor, patch_mask: torch.Tensor) -> torch.Tensor:
    """Mean L1 pixel error over the hidden patches only (SimMIM's loss); visible patches are not scored.

    ``predicted, target (B, N, P), patch_mask (B, N) bool``.
    """
    error = (predicted.float() - target.float()).abs().mean(dim=-1)  # (B, N)
    weight = patch_mask.float()
    return (error * weight).sum() / weight.sum().clamp_min(1.0)


def masked_language_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the selected tokens only; 0 (with a graph) when none was selected."""
    if not (labels != IGNORE_INDEX).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1),
                           ignore_index=IGNORE_INDEX)  # logits (..., V), labels (...)


def image_report_contrastive_loss(images: torch.Tensor, reports: torch.Tensor, temperature: float
                                  ) -> torch.Tensor:
    """Symmetric InfoNCE between ``(B, E)`` image and report vectors of the same pairs (diagonal positives)."""
    logits = F.normalize(images.float(), dim=-1) @ F.normalize(reports.float(), dim=-1).T / temperature  # (B, B)
    target = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def total_loss(terms: dict[str, torch.Tensor], cfg: MLMMVMConfig) -> torch.Tensor:
    """The objective ``L`` of the module docstring.

    Args:
        terms: the step's loss terms by name (``itc``, ``mvm_*``, ``mlm_*``).
        cfg: the weights ``weight_itc``, ``weight_mvm``, ``weight_mlm``.

    Returns:
        ``weight_itc`` x ITC + ``weight_mvm`` x mean MVM terms + ``weight_mlm`` x mean MLM terms.

    Raises:
        ValueError: a step without any term.
    """
    mvm = [v for k, v in terms.items() if k.startswith("mvm")]
    mlm = [v for k, v in terms.items() if k.startswith("mlm")]
    total = terms["itc"] * cfg.weight_itc if "itc" in terms else 0.0
    if mvm:
        total = total + cfg.weight_mvm * torch.stack(mvm).mean()
    if mlm:
        total = total + cfg.weight_mlm * torch.stack(mlm).mean()
    if not torch.is_tensor(total):
        raise ValueError("mlm-mvm: a step with no paired, image-only or text-only part")
    return total
