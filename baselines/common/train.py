"""The training loop every baseline shares: device-agnostic, AMP, DDP, exact resume.

A method supplies three things and the ``Trainer`` does the rest::

    from baselines.common.train import Trainer, TrainConfig, StepContext
    from baselines.common.sampling import StepSampler

    def batch_fn(ctx: StepContext):                   # which images, which augmentations
        idx = sampler.indices(ctx.step)                # pure function of (seed, step, rank)
        return augment(images[idx], generator=ctx.generator(0))

    def step_fn(model, batch, ctx: StepContext):      # the method's loss
        logits, labels = model(*batch)                 # `model` is DDP-wrapped when distributed
        return F.cross_entropy(logits, labels)        # or (loss, {"acc": ...}) to log more

    trainer = Trainer(model, optimizer, TrainConfig(steps=1000, seed=0, device="cuda"), workdir,
                      scheduler=scheduler, meta={"method": "moco", "config": config})
    final = trainer.fit(step_fn, batch_fn, sampler=sampler)   # -> workdir / "final.pt"

What ``fit`` guarantees:

- **Device-agnostic.** The model is moved with ``model.to(device)``; tensors in a
  batch (dict / list / tuple, nested) are moved too. On CUDA the step runs under
  ``torch.autocast`` (bf16 when the GPU supports it, else fp16 with a
  ``GradScaler``); on CPU in float32. ``TrainConfig.amp`` overrides ("off", "bf16", "fp16").
- **Exact resume.** Every ``checkpoint_every`` steps (and at the end) rank 0 writes
  ``workdir/checkpoint.pt`` atomically (temp file + ``os.replace``) with model,
  optimizer, scheduler, grad scaler, step, the global torch / numpy / python RNG
  states and the sampler's identity. ``fit`` on a workdir that holds one resumes
  from it; per-step randomness comes from ``ctx.generator(stream)``, a pure
  function of (seed, step, rank, stream), so a run killed with SIGKILL and
  restarted ends with bit-identical weights on CPU (tested).
- **Weights-only checkpoints.** Everything stored is tensors or plain types;
  ``load_checkpoint`` uses ``torch.load(weights_only=True)``. ``meta`` must be
  plain (dict/list/str/int/float/bool/None) too.
- **DDP-ready.** When ``torch.distributed`` is initialised (see
  ``baselines.common.distributed.init_from_env``) the model is wrapped in
  ``DistributedDataParallel``, only rank 0 writes files and the logged loss is the
  mean over ranks. Use ``StepSampler(..., rank=, world_size=)`` for the data split.
- **Logs.** ``workdir/log.jsonl``: one JSON object per ``log_every`` steps
  (``step``, ``loss``, ``lr``, ``steps_per_s`` and whatever the step returned);
  ``workdir/run.json``: the train config and ``meta``. Progress (``harness.progress``: a bar on a terminal,
  log lines elsewhere) when ``progress``.

Outputs: ``final.pt`` = ``{"format", "step", "model", "meta"}`` (the encoder's
weights, what ``Method.load`` reads) next to the full ``checkpoint.pt``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from baselines.common import distributed
from baselines.common.config import TrainingConfig
from baselines.common.seeding import rng_state, seed_all, set_rng_state, step_generator
from harness.storage import atomic_write

CHECKPOINT = "checkpoint.pt"
FINAL = "final.pt"
LOG = "log.jsonl"
TRAIN_FORMAT = "harness-train/1"
WEIGHTS_FORMAT = "harness-weights/1"


@dataclass
class TrainConfig:
    """How to run the loop (the method's own hyperparameters live in its config)."""

    steps: int
    seed: int = 0
    device: str = "cpu"
    checkpoint_every: int = 100  # 0: only at the end; a SIGKILL loses at most this many steps
    log_every: int = 10
    amp: str = "auto"  # auto: bf16 (or fp16 + GradScaler) on CUDA, off elsewhere; or "off" / "bf16" / "fp16"
    grad_clip: float = 0.0  # max global grad norm; 0 disables
    progress: bool = True
    deterministic: bool = True  # torch.use_deterministic_algorithms during fit (CPU only; cheap there)

    def __post_init__(self) -> None:
        if self.steps < 0 or self.checkpoint_every < 0 or self.log_every <= 0:
            raise ValueError(f"bad TrainConfig: {self}")
        if self.amp not in ("auto", "off", "bf16", "fp16"):
            raise ValueError(f"amp must be auto/off/bf16/fp16, got {self.amp!r}")

    @classmethod
    def for_method(cls, cfg: TrainingConfig, request: Any, steps: int, *, grad_clip: float = 0.0) -> TrainConfig:
        """The loop settings of a method's pretraining: checkpoints, logs and autocast from its config,
        seed, device and progress from the request (``harness.encoders.PretrainRequest``).

        Args:
            cfg: the method's config.
            request: what ``Method.pretrain`` received.
            steps: the run's length (``cfg.total_steps`` of its data).
            grad_clip: max global grad norm (0: none), for the recipes that clip.

        Returns:
            The ``TrainConfig`` for ``Trainer``.
        """
        return cls(steps=steps, seed=request.seed, device=request.device, checkpoint_every=cfg.checkpoint_every,
                   log_every=cfg.log_every, amp=cfg.amp, grad_clip=grad_clip, progress=request.progress)


@dataclass
class StepContext:
    """What a step knows besides the batch. ``generator(stream)`` is this step's own RNG."""

    step: int
    total_steps: int
    seed: int
    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def generator(self, stream: int = 0) -> torch.Generator:
        """A CPU generator, a pure function of (seed, step, rank, stream): draw with it, then ``.to(device)``."""
        return step_generator(self.seed, self.step, self.rank, stream)

    @property
    def progress(self) -> float:
        """Fraction of training done at the start of this step, in [0, 1) (for schedules)."""
        return self.step / max(1, self.total_steps)


StepFn = Callable[[nn.Module, Any, StepContext], "torch.Tensor | tuple[torch.Tensor, dict[str, Any]]"]
BatchFn = Callable[[StepContext], Any]
AfterStepFn = Callable[[nn.Module, StepContext], None]


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor in a nested dict / list / tuple to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        moved = [to_device(v, device) for v in batch]
        return type(batch)(*moved) if hasattr(batch, "_fields") else type(batch)(moved)
    return batch


def autocast_dtype(device: torch.device, amp: str) -> torch.dtype | None:
    """The autocast dtype for ``amp`` on ``device``; None means full float32 (always on CPU)."""
    if device.type != "cuda" or amp == "off":
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` through ``harness.storage.atomic_write``: never a half-written file."""
    atomic_write(path, lambda fh: torch.save(obj, fh))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint written by this module (weights-only unpickling: no code runs)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return torch.load(path, map_location=map_location, weights_only=True)


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The model state dict of a ``final.pt`` or a ``checkpoint.pt``."""
    ckpt = load_checkpoint(path)
    if ckpt.get("format") not in (WEIGHTS_FORMAT, TRAIN_FORMAT):
        raise ValueError(f"{path}: not a harness checkpoint (format={ckpt.get('format')!r})")
    return ckpt["model"]


@contextlib.contextmanager
def _deterministic(enabled: bool) -> Iterator[None]:
    previous = torch.are_deterministic_algorithms_enabled()
    if enabled:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=True)


class Trainer:
    """Runs ``steps`` optimisation steps of a method's loss; see the module docstring.

    Args:
        model: the whole trainable module (e.g. MoCo with both encoders and the queue).
        optimizer: built over ``model``'s parameters (before or after construction: ``.to`` keeps them).
        config: loop settings.
        workdir: where checkpoints and logs go (created).
        scheduler: a ``torch.optim.lr_scheduler`` stepped once per step, or None.
        meta: plain data saved in every checkpoint and in ``run.json`` (method name, its config, card).
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, config: TrainConfig, workdir: str | Path,
                 *, scheduler: Any = None, meta: dict[str, Any] | None = None) -> None:
        self.config, self.workdir = config, Path(workdir)
        self.device = torch.device(config.device)
        self.model = model.to(self.device)
        self.optimizer, self.scheduler = optimizer, scheduler
        self.meta = dict(meta or {})
        self.dist = distributed.info()
        self.amp_dtype = autocast_dtype(self.device, config.amp)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.step = 0
        self.after_step: AfterStepFn | None = None

    # ------------------------------------------------------------------ state
    def state_dict(self, sampler: Any = None) -> dict:
        return {
            "format": TRAIN_FORMAT,
            "step": self.step,
            "model": unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": rng_state(),
            "sampler": sampler.state_dict() if hasattr(sampler, "state_dict") else None,
            "train_config": asdict(self.config),
            "meta": self.meta,
        }

    def load_state_dict(self, state: dict, sampler: Any = None) -> None:
        if state.get("format") != TRAIN_FORMAT:
            raise ValueError(f"not a training checkpoint (format={state.get('format')!r})")
        if state["train_config"]["seed"] != self.config.seed:
            raise ValueError(f"cannot resume: checkpoint seed {state['train_config']['seed']} != {self.config.seed}")
        if sampler is not None and state.get("sampler") is not None and hasattr(sampler, "load_state_dict"):
            sampler.load_state_dict(state["sampler"])
        unwrap(self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        self.step = int(state["step"])

    def save(self, sampler: Any = None) -> None:
        """Write ``checkpoint.pt`` (rank 0 only; every rank waits for it)."""
        if self.dist.is_main:
            atomic_save(self.state_dict(sampler), self.workdir / CHECKPOINT)
        distributed.barrier()

    def _resume_or_start(self, sampler: Any) -> None:
        path = self.workdir / CHECKPOINT
        state = None
        if path.is_file():
            try:
                state = load_checkpoint(path)  # CPU: RNG states must stay CPU tensors
            except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError, EOFError, UnpicklingError...
                # A damaged checkpoint (truncated copy, bad sector) is set aside, never trusted; an
                # intact one of another run still raises in load_state_dict below.
                aside = path.with_name(f"{CHECKPOINT}.corrupt")
                if self.dist.is_main:
                    os.replace(path, aside)
                warnings.warn(f"{path}: unreadable checkpoint ({type(exc).__name__}); moved to {aside.name}, "
                              "training from step 0", stacklevel=2)
        if state is not None:
            self.load_state_dict(state, sampler)
        else:
            seed_all(self.config.seed + self.dist.rank)
        self._truncate_log()

    def _truncate_log(self) -> None:
        """Drop log lines written after the checkpoint we resume from (they will be redone)."""
        log = self.workdir / LOG
        if not self.dist.is_main or not log.is_file():
            return
        keep = [line for line in log.read_text().splitlines() if line.strip()
                and json.loads(line).get("step", 0) <= self.step]
        log.write_text("".join(line + "\n" for line in keep))

    # ------------------------------------------------------------------ loop
    def _wrap_ddp(self) -> nn.Module:
        if not distributed.is_initialized():
            return self.model
        device_ids = ([self.device.index if self.device.index is not None else torch.cuda.current_device()]
                      if self.device.type == "cuda" else None)
        return nn.parallel.DistributedDataParallel(self.model, device_ids=device_ids)

    def _context(self) -> StepContext:
        return StepContext(step=self.step, total_steps=self.config.steps, seed=self.config.seed,
                           rank=self.dist.rank, world_size=self.dist.world_size, device=self.device)

    def _one_step(self, model: nn.Module, step_fn: StepFn, batch_fn: BatchFn) -> tuple[torch.Tensor, dict]:
        ctx = self._context()
        batch = to_device(batch_fn(ctx), self.device)
        amp = (torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype is not None
               else contextlib.nullcontext())
        with amp:
            out = step_fn(model, batch, ctx)
        loss, extras = (out if isinstance(out, tuple) else (out, {}))
        if not torch.isfinite(loss.detach()):
            raise FloatingPointError(f"non-finite loss {loss.item()} at step {self.step} (workdir {self.workdir})")
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        if self.config.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        if self.after_step is not None:
            self.after_step(unwrap(model), ctx)
        return loss.detach(), extras

    def fit(self, step_fn: StepFn, batch_fn: BatchFn, *, sampler: Any = None,
            after_step: AfterStepFn | None = None) -> Path:
        """Train to ``config.steps`` (resuming from ``workdir/checkpoint.pt``); return ``final.pt``.

        Args:
            step_fn: ``(model, batch, ctx) -> loss`` or ``(loss, {name: number})``; ``model`` may be DDP-wrapped.
            batch_fn: ``(ctx) -> batch`` for this rank; draw randomness from ``ctx.generator(0)``.
            sampler: optional object with ``state_dict``/``load_state_dict`` (e.g. ``StepSampler``):
                its identity is checked on resume so a run never resumes on different data.
            after_step: ``(unwrapped_model, ctx)`` after each optimiser step (e.g. an EMA target update).
        """
        self.after_step = after_step
        self.workdir.mkdir(parents=True, exist_ok=True)
        final = self.workdir / FINAL
        with _deterministic(self.config.deterministic and self.device.type == "cpu"):
            self._resume_or_start(sampler)
            if self.dist.is_main:
                (self.workdir / "run.json").write_text(json.dumps(
                    {"train_config": asdict(self.config), "meta": self.meta}, indent=2, sort_keys=True, default=str))
            self._loop(self._wrap_ddp(), step_fn, batch_fn, sampler)
        if self.dist.is_main:
            atomic_save({"format": WEIGHTS_FORMAT, "step": self.step, "model": unwrap(self.model).state_dict(),
                         "meta": self.meta}, final)
        distributed.barrier()
        return final

    def _loop(self, model: nn.Module, step_fn: StepFn, batch_fn: BatchFn, sampler: Any) -> None:
        cfg = self.config
        model.train()
        bar = None
        if cfg.progress and self.dist.is_main and self.step < cfg.steps:
            from harness.progress import progress

            bar = progress(cfg.steps, str(self.meta.get("method", "train")), unit="step", initial=self.step)
        window: list[tuple[torch.Tensor, dict]] = []
        tick = time.perf_counter()
        while self.step < cfg.steps:
            loss, extras = self._one_step(model, step_fn, batch_fn)
            self.step += 1
            window.append((loss, extras))
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                record = self._log(window, time.perf_counter() - tick)
                window, tick = [], time.perf_counter()
                if bar is not None:
                    bar.set_postfix(loss=f"{record['loss']:.4f}")
            if bar is not None:
                bar.update(1)
            if (cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0) or self.step == cfg.steps:
                self.save(sampler)
        if bar is not None:
            bar.close()

    def _log(self, window: list[tuple[torch.Tensor, dict]], seconds: float) -> dict:
        loss = distributed.all_reduce_mean(torch.stack([w[0].float() for w in window]).mean()).item()
        record: dict[str, Any] = {"step": self.step, "loss": loss,
                                  "lr": self.optimizer.param_groups[0]["lr"],
                                  "steps_per_s": len(window) / max(seconds, 1e-9)}
        for key in window[-1][1]:
            values = [float(w[1][key]) for w in window if key in w[1]]
            record[key] = sum(values) / len(values)
        if self.dist.is_main:
            with open(self.workdir / LOG, "a") as f:
                f.write(json.dumps(record) + "\n")
        return record


def warmup_cosine(optimizer: torch.optim.Optimizer, steps: int, warmup_steps: int = 0,
                  final_fraction: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up then cosine decay to ``final_fraction`` of the base lr (per step)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        t = (step - warmup_steps) / max(1, steps - warmup_steps)
        return final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def step_decay(optimizer: torch.optim.Optimizer, milestones: tuple[int, ...], gamma: float = 0.1
               ) -> torch.optim.lr_scheduler.LambdaLR:
    """Multiply the lr by ``gamma`` at each milestone step (MoCo-CXR's x0.1 at epochs 12/18/24)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: gamma ** sum(step >= m for m in milestones))
