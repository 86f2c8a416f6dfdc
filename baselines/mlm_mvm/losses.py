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


def random_masking(noise: torch.Tensor, ratio: float) -> torch.Tensor:
    """MAE's per-sample random masking: ``(B, L)`` noise -> ``(B, L)`` bool, True = hidden.

    Each row keeps its ``int(L * (1 - ratio))`` positions of smallest noise and hides the
    rest (MAE ``random_masking``: argsort of the noise, the first ``len_keep`` kept), so at
    least one position is hidden for any ``ratio`` in (0, 1).
    """
    keep = int(noise.shape[1] * (1 - ratio))
    rank = noise.argsort(dim=1).argsort(dim=1)  # (B, L): each position's place in its row's noise order
    return rank >= keep


def multiscale_patch_mask(batch: int, grid: int, scales: tuple[int, ...], ratio: float,
                          generator: torch.Generator) -> torch.Tensor:
    """``(B, N)`` bool: per image, one scale ``s`` (in patches) and ``ratio`` of its ``s x s`` cells hidden.

    Mixing cell sizes is the "multi-scale" of masked vision modelling: small holes are
    filled from neighbouring texture, large ones need anatomy (where the ribs, the heart
    border or an effusion should be). Which cells: MAE's per-sample random masking
    (``random_masking``) over the ``ceil(G / s)^2`` cells, the noise drawn for the images of
    each scale in the order of ``scales``; with one scale nothing is chosen first, so the draws
    are MAE's own ``rand(B, L)`` (``tests/test_parity_mlm_mvm.py``).
    """
    masks = torch.zeros(batch, grid, grid, dtype=torch.bool)
    choice = (torch.randint(len(scales), (batch,), generator=generator) if len(scales) > 1
              else torch.zeros(batch, dtype=torch.long))
    for k, s in enumerate(int(s) for s in scales):
        rows = torch.nonzero(choice == k).flatten()
        if not len(rows):
            continue
        cells = math.ceil(grid / s)
        hidden = random_masking(torch.rand(len(rows), cells * cells, generator=generator), ratio)  # (n, cells^2)
        full = hidden.view(-1, cells, cells).repeat_interleave(s, 1).repeat_interleave(s, 2)  # (n, cells*s, cells*s)
        masks[rows] = full[:, :grid, :grid]
    return masks.flatten(1)  # (B, N)


def masked_patch_loss(predicted: torch.Tensor, target: torch.Tensor, patch_mask: torch.Tensor,
                      norm: str = "l1") -> torch.Tensor:
    """Mean pixel error over the hidden patches only; visible patches are not scored.

    ``predicted, target (B, N, P), patch_mask (B, N) bool``. ``norm`` "l1": SimMIM's L1 (the
    default); "l2": MAE's ``forward_loss`` (squared error, no ``norm_pix_loss``: see ``MLMMVMConfig.mvm_loss``).
    """
    diff = predicted.float() - target.float()
    error = (diff.abs() if norm == "l1" else diff.square()).mean(dim=-1)  # (B, N), mean per patch
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
