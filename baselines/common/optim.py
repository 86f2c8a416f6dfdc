"""Which parameters weight decay applies to: the optimiser's parameter groups.

Recipes disagree on it, and the difference is a recipe setting, not an accident of how the
optimiser was built:

- ``all``: one group, every trained parameter decayed (``torch.optim.AdamW(model.parameters(),
  weight_decay=wd)``: MoCo, MoCo-CXR, the CXR-EHR-MSN code);
- ``weights``: no decay on biases, on 1-D parameters (LayerNorm / BatchNorm scales), on
  parameters whose name contains ``bn`` (MSN names its head's BatchNorms ``bn1`` / ``bn2``),
  nor on the parameters passed as ``exclude`` (MSN's prototypes); everything else, position
  embeddings and class token included (they are 3-D), decayed (facebookresearch/msn
  ``src/msn_train.py`` ``init_opt``).

Frozen parameters (``requires_grad=False``) are left out of every group.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import nn

WEIGHT_DECAY_SCOPES = ("all", "weights")


def _exempt(name: str, param: nn.Parameter) -> bool:
    """MSN's rule: ``'bias' in name or 'bn' in name or p.ndim == 1``."""
    return "bias" in name or "bn" in name or param.ndim == 1


def weight_decay_groups(named_parameters: Iterable[tuple[str, nn.Parameter]], weight_decay: float, scope: str,
                        exclude: Iterable[nn.Parameter] = ()) -> list[dict[str, Any]]:
    """Parameter groups for a torch optimiser: who is decayed, as ``scope`` says.

    Args:
        named_parameters: ``model.named_parameters()`` (the order is kept within each group).
        weight_decay: the decay of the decayed group.
        scope: ``all`` or ``weights`` (see the module docstring).
        exclude: parameters never decayed under ``weights`` (MSN's prototypes); ignored under ``all``.

    Returns:
        ``[{"params": [...], "weight_decay": wd}]`` for ``all``; for ``weights`` that group and
        ``{"params": [...], "weight_decay": 0.0}``; an empty group is left out.

    Raises:
        ValueError: an unknown scope.
    """
    if scope not in WEIGHT_DECAY_SCOPES:
        raise ValueError(f"weight decay scope must be one of {WEIGHT_DECAY_SCOPES}, got {scope!r}")
    trained = [(n, p) for n, p in named_parameters if p.requires_grad]
    if scope == "all":
        return [{"params": [p for _, p in trained], "weight_decay": weight_decay}]
    excluded = {id(p) for p in exclude}
    decayed = [p for n, p in trained if not _exempt(n, p) and id(p) not in excluded]
    exempt = [p for n, p in trained if _exempt(n, p) or id(p) in excluded]
    groups = [{"params": decayed, "weight_decay": weight_decay}, {"params": exempt, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]
