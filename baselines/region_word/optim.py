"""JoImTeRNet's two optimisers, one per encoder, as one AdamW with an image and a text group.

The authors' trainer (``JoImTeR/trainer_pretrain.py``) keeps ``optimizerI`` (the image encoder
with its region and global projections) and ``optimizerT`` (the text encoder with its word and
sentence projections and the MLM head), both AdamW with the same settings. After the backward
pass of an image-text (ITM) step it clips the image encoder's gradient norm and steps
``optimizerI``, then clips the text encoder's and steps ``optimizerT``; an MLM step clips and
steps the text side only, so the image weights do not move at all (no momentum, no weight
decay, no step count). A parameter the step's loss does not use has no gradient there
(``zero_grad`` sets it to None, PyTorch 2's default) and AdamW skips it: the MLM head on an ITM
step, the word and sentence projections on an MLM step. ``EncoderOptimizer`` does the same in
one optimiser (AdamW updates each parameter on its own, so two groups with the same settings
are the two optimisers):

- ``rest(params)`` names the parameters the next steps leave alone: their gradients are dropped
  before ``AdamW.step``. The step function sets them before the backward pass
  (``RegionWordModel.task_parameters``);
- then each group's gradient is clipped to ``clip`` on its own norm (not one global norm).

The unused loss is still multiplied by 0 rather than skipped (``losses.total_loss``: DDP needs
every parameter in the graph), so without ``rest`` AdamW would keep moving the unused parameters
on their momentum and weight decay. (Under PyTorch 1.x, where the authors trained, ``zero_grad``
left zero tensors and those parameters did drift that way; the harness follows the code's
intent and today's default.)
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


class EncoderOptimizer(torch.optim.AdamW):
    """AdamW over ``image`` and ``text`` parameter groups, clipped per group, some parameters resting on request."""

    def __init__(self, image_params: Iterable[nn.Parameter], text_params: Iterable[nn.Parameter], *, lr: float,
                 weight_decay: float, clip: float = 0.0) -> None:
        super().__init__([{"params": list(image_params), "name": "image"},
                          {"params": list(text_params), "name": "text"}], lr=lr, weight_decay=weight_decay)
        self.clip = float(clip)
        self._resting: set[int] = set()

    def rest(self, params: Iterable[nn.Parameter]) -> None:
        """Leave ``params`` (of this optimiser) out of the next steps, until called again."""
        ids = {id(p) for p in params}
        known = {id(p) for group in self.param_groups for p in group["params"]}
        if not ids <= known:
            raise ValueError(f"region-word: {len(ids - known)} parameter(s) to rest are not in the optimiser")
        self._resting = ids

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001, ANN201 (torch's signature)
        for group in self.param_groups:
            for p in group["params"]:
                if id(p) in self._resting:
                    p.grad = None  # AdamW skips it, as a parameter outside the authors' step's graph
            if self.clip > 0:
                nn.utils.clip_grad_norm_([p for p in group["params"] if p.grad is not None], self.clip)
        return super().step(closure)
