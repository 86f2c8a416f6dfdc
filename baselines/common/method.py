"""``BaselineMethod``: ``harness.encoders.Method`` written once for every baseline (template method).

A baseline's ``__init__.py`` says only what differs from the others: its name, paper
string, config class and profiles, and the bodies of three hooks::

    class MoCoMethod(BaselineMethod):
        name, paper, config_class, profiles = "moco", PAPER, MoCoConfig, PROFILES
        weights_prefix, weights_part = "encoder_q.backbone.", "MoCo query encoder"   # what load keeps

        def card_for(self, cfg): ...                          # the card of a config
        def train(self, request, cfg, card):                  # the package's training entry point
            from baselines.moco.pretrain import pretrain
            return pretrain(request, cfg, card=card)
        def build_encoder(self, cfg, weights, checkpoint): ...   # the encoder from those weights

What the base does, the same way for all:

- ``card``: the card of the ``small`` profile (the default on the synthetic world);
- ``config(values)``: the config dataclass of a profile dict (``from_dict``: an unknown key is an
  error naming it);
- ``pretrain(request)``: the config of ``request.config``, then ``train`` with the card as plain
  data (``card_meta``), so every checkpoint says what made it; a method that does not pretrain
  (``pretrains = False``: ``random``, ``imagenet``) returns None;
- ``load(checkpoint, config)``: the config, the checkpoint's model state dict (weights-only
  unpickling), the tensors under ``weights_prefix`` with the prefix removed, ``build_encoder``,
  in eval mode. A method that does not pretrain refuses a checkpoint.

The module also holds what a pretraining writes into its checkpoint's ``meta`` about the
method and the data (``card_meta``, ``data_meta``): aggregate counts only, never a row.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from baselines.common.config import from_dict
from baselines.common.train import load_checkpoint
from harness.encoders import MethodCard, PretrainRequest


def card_meta(card: MethodCard) -> dict[str, Any]:
    """The card as plain data for a checkpoint's ``meta`` (self-describing checkpoints).

    Args:
        card: the method card of the config being trained.

    Returns:
        Nested dicts and lists of plain values (tuples become lists).
    """

    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return list(map(plain, value)) if isinstance(value, (list, tuple)) else value

    return plain(dataclasses.asdict(card))


def data_meta(data: Any, **counts: Any) -> dict[str, Any]:
    """The ``data`` section of a checkpoint's ``meta``: which training data, and how much of it was used.

    Args:
        data: the request's ``TrainingData`` (dataset, fingerprint, data source).
        counts: the method's aggregate counts (images, pairs, skips ...), in the order given.

    Returns:
        ``{"dataset", "fingerprint", "data_source", **counts}``.
    """
    return {"dataset": data.dataset, "fingerprint": data.fingerprint, "data_source": data.data_source, **counts}


class BaselineMethod:
    """A registered baseline: ``harness.encoders.Method`` with hooks for what differs (see the module docstring).

    Class attributes a subclass sets:
        name: the registry name, used in error messages (``"moco"``).
        paper: the card's paper string.
        config_class: the config dataclass (extends ``baselines.common.config.MethodConfig``).
        profiles: ``smoke`` / ``small`` / ``paper`` -> the config as a plain dict.
        pretrains: False for a method whose ``pretrain`` returns None (nothing to learn).
        weights_prefix: the state-dict prefix of the tensors ``load`` keeps (the prefix removed);
            None keeps the whole state dict.
        weights_part: what those tensors are, for the error when a checkpoint has none.
        checkpoint_hint: appended to the error of a method that takes no checkpoint and is given one.
    """

    name: ClassVar[str]
    paper: ClassVar[str]
    config_class: ClassVar[type]
    profiles: ClassVar[dict[str, dict[str, Any]]]
    pretrains: ClassVar[bool] = True
    weights_prefix: ClassVar[str | None] = None
    weights_part: ClassVar[str] = ""
    checkpoint_hint: ClassVar[str] = ""

    def __init__(self) -> None:
        self.card: MethodCard = self.card_for(self.config(self.profiles["small"]))

    # ------------------------------------------------------------------ hooks
    def card_for(self, cfg: Any) -> MethodCard:
        """The method card of a config.

        Args:
            cfg: an instance of ``config_class``.

        Returns:
            The card: preprocessing, pretraining data, capabilities, notes.
        """
        raise NotImplementedError(f"{type(self).__name__}.card_for")

    def train(self, request: PretrainRequest, cfg: Any, card: dict[str, Any]) -> Path:
        """Run the package's pretraining (its ``pretrain.py`` entry point).

        Args:
            request: what ``pretrain`` received (training data, workdir, seed, device).
            cfg: the config of ``request.config``.
            card: ``card_meta`` of ``card_for(cfg)``, for the checkpoint's meta.

        Returns:
            The final checkpoint (``final.pt``).
        """
        raise NotImplementedError(f"{type(self).__name__}.train")

    def build_encoder(self, cfg: Any, weights: dict[str, torch.Tensor] | None, checkpoint: Path | None
                      ) -> nn.Module:
        """The encoder of a config (``load`` puts it in eval mode).

        Args:
            cfg: an instance of ``config_class``.
            weights: the checkpoint's model tensors, ``weights_prefix`` removed; None when the method
                does not pretrain.
            checkpoint: the checkpoint file, to find what was saved next to it (a tokenizer); None
                when the method does not pretrain.

        Returns:
            The encoder (a ``harness.encoders`` capability module with a ``card``).
        """
        raise NotImplementedError(f"{type(self).__name__}.build_encoder")

    # ------------------------------------------------------------------ the Method protocol
    def config(self, values: dict[str, Any]) -> Any:
        """The config dataclass of a profile dict.

        Raises:
            ValueError: an unknown key (with the closest field), or a value the config refuses.
        """
        return from_dict(self.config_class, values, what=f"{self.name} config")

    def pretrain(self, request: PretrainRequest) -> Path | None:
        """Pretrain on ``request.data`` into ``request.workdir``; the final checkpoint, or None (``pretrains``)."""
        if not self.pretrains:
            return None
        cfg = self.config(request.config)
        return self.train(request, cfg, card_meta(self.card_for(cfg)))

    def load(self, checkpoint: Path | None, config: dict[str, Any]) -> nn.Module:
        """The encoder of ``config`` (a ``harness.encoders.ImageEncoder`` module, in eval mode) from the
        checkpoint ``pretrain`` returned (None when it returned None).

        Raises:
            ValueError: a bad config; no checkpoint for a method that needs one, or one for a method
                that takes none; a checkpoint without the tensors under ``weights_prefix``.
            FileNotFoundError: the checkpoint file does not exist.
        """
        cfg = self.config(config)
        if not self.pretrains:
            if checkpoint is not None:
                raise ValueError(f"{self.name}: takes no checkpoint (got {checkpoint}){self.checkpoint_hint}")
            return self.build_encoder(cfg, None, None).eval()
        if checkpoint is None:
            raise ValueError(f"{self.name}: needs the checkpoint that pretrain returned (got None)")
        checkpoint = Path(checkpoint)
        return self.build_encoder(cfg, self.encoder_weights(checkpoint), checkpoint).eval()

    def encoder_weights(self, checkpoint: Path) -> dict[str, torch.Tensor]:
        """The checkpoint's model tensors under ``weights_prefix``, the prefix removed (all when it is None)."""
        state = load_checkpoint(checkpoint)["model"]
        prefix = self.weights_prefix
        if prefix is None:
            return state
        weights = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if not weights:
            raise ValueError(f"{checkpoint}: no {self.weights_part} ('{prefix}*') in this checkpoint")
        return weights
