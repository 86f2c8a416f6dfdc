"""Exponential moving averages of a trained branch: the update and the momentum schedules.

An EMA ("momentum", "target", "teacher") branch is never trained by gradient; after each
optimiser step its parameters move towards the trained branch's::

    theta_ema <- m * theta_ema + (1 - m) * theta_online

Only parameters are averaged, never buffers (BatchNorm statistics follow the EMA branch's own
forward passes), as in MoCo's ``moco/builder.py``, MSN's ``src/msn_train.py`` and lightly's
``update_momentum``.

Schedules of ``m`` over a run (``ema_momentum``):

- ``constant``: ``m`` at every step (MoCo; the CXR-EHR-MSN code's ``update_momentum(..., 0.996)``);
- ``linear``: from ``start`` towards ``final`` in equal increments, stretched over 1.25 x the
  run so the last step's ``m`` stays below ``final`` (facebookresearch/msn ``msn_train.py``:
  0.996 -> 1.0 over ``1.25 * epochs * iterations_per_epoch`` steps).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

EMA_SCHEDULES = ("constant", "linear")
MSN_STRETCH = 1.25  # MSN lays its schedules out over 1.25 x the training steps


def ema_momentum(step: int, total_steps: int, start: float, schedule: str = "constant", final: float = 1.0,
                 stretch: float = MSN_STRETCH) -> float:
    """The EMA momentum of the update after optimiser step ``step`` (0-based).

    Args:
        step: the step just taken, 0 for the first (its update uses ``start``).
        total_steps: the run's length in optimiser steps.
        start: ``m`` at step 0 (and at every step for ``constant``).
        schedule: ``constant`` or ``linear`` (see the module docstring).
        final: where ``linear`` heads (reached at ``stretch * total_steps``, past the run's end).
        stretch: how much longer than the run the ``linear`` ramp is laid out.

    Returns:
        The momentum in ``[start, final]``.

    Raises:
        ValueError: an unknown schedule.
    """
    if schedule == "constant":
        return start
    if schedule == "linear":
        return start + (final - start) * step / (stretch * max(1, total_steps))
    raise ValueError(f"EMA schedule must be one of {EMA_SCHEDULES}, got {schedule!r}")


@torch.no_grad()
def ema_update(ema_parameters: Iterable[nn.Parameter], online_parameters: Iterable[nn.Parameter],
               momentum: float) -> None:
    """``theta_ema <- m * theta_ema + (1 - m) * theta_online``, parameter by parameter, in place.

    Args:
        ema_parameters: the EMA branch's parameters.
        online_parameters: the trained branch's, in the same order.
        momentum: ``m``.

    Raises:
        ValueError: the two lists differ in length.
    """
    for ema, online in zip(ema_parameters, online_parameters, strict=True):
        ema.mul_(momentum).add_(online.detach(), alpha=1.0 - momentum)
