"""Scoring your own encoder exactly like the baselines: ``python -m harness submit``.

::

    python -m harness submit examples.my_encoder:build --name my-enc            # every capable task
    python -m harness submit my-plugin-encoder --name my-enc                   # an installed entry point
    python -m harness submit --arch resnet50 --weights r50.safetensors --name my-r50
    python -m harness submit timm:convnext_tiny --weights c.safetensors --name my-convnext

An encoder is any object with the capability methods it has (``encode_image`` +
``num_features``; optionally ``encode_image_regions`` + ``region_grid``,
``encode_text``, ``regenerate``; see ``harness.methods``) and a ``card``
(``MethodCard``: name, preprocessing, pretraining data). SPEC is one of:

- ``package.module:factory``: a zero-argument callable returning the encoder;
- the name of an installed plugin: an entry point in the ``harness.encoders`` group
  (``register_plugins()`` adds them to ``METHODS``, so ``harness ls methods`` lists them);
- ``timm:NAME`` / ``torchvision:NAME`` / ``torchxrayvision:NAME`` with ``--weights``, or
  ``--arch ARCH --weights FILE`` (``harness.adapters``: local weights only, never a download).

Before any scoring the encoder is checked (``check_encoder``: shapes, dtype, NaN/inf,
determinism and batch independence in eval mode). It then becomes an ordinary registered
method without pretraining (``SubmissionMethod``: ``pretrain`` returns None, ``load`` the
encoder), so the runner scores it through the same path as every baseline, on every task
whose ``requires`` it meets. Its card flows into the records (``method_card``), so the
leaderboard flags pretraining data that overlaps a task's evaluation data.

Local and Slurm jobs run in other processes: each ``RunRequest`` carries
``submission=submission_spec(...)``, a string from which ``ensure_registered`` rebuilds
the same registration there.
"""

from __future__ import annotations

import copy
import json
from importlib import metadata
from pathlib import Path
from typing import Any

from harness.adapters import SubmissionError, adapter_encoder, is_adapter_spec, load_state_dict
from harness.catalog import METHODS
from harness.methods import MethodCard, capabilities
from harness.registry import resolve_target

__all__ = ["ENTRY_POINT_GROUP", "SubmissionError", "SubmissionMethod", "capable_tasks", "check_encoder",
           "ensure_registered", "factory_for", "load_state_dict", "register_plugins", "submission_spec"]

ENTRY_POINT_GROUP = "harness.encoders"
BATCH_TOLERANCE = 1e-4  # float32 kernels may pick different algorithms per batch size


# ------------------------------------------------------------------------------------------ checks


def _check_tensor(name: str, out: Any, shape: tuple[int, ...]) -> list[str]:
    import torch

    if not isinstance(out, torch.Tensor):
        return [f"{name} must return a torch.Tensor; got {type(out).__name__}"]
    if tuple(out.shape) != shape:
        return [f"{name} must return {shape}; got {tuple(out.shape)}"]
    if not out.is_floating_point():
        return [f"{name} returned {out.dtype}; expected a floating-point tensor"]
    if not torch.isfinite(out).all():
        return [f"{name} returned NaN or inf"]
    return []


def _consistent(name: str, call: Any, x: Any, shape_of: Any) -> list[str]:
    """Shape/dtype/finiteness, then two identical calls equal, then batch-size independence."""
    import torch

    try:
        with torch.no_grad():
            a, b, half = call(x), call(x), call(x[:2])
    except Exception as exc:  # noqa: BLE001 - the user's code: report whatever it raised
        return [f"{name} raised {type(exc).__name__}: {exc}"]
    problems = _check_tensor(name, a, shape_of(len(x)))
    if problems:
        return problems
    if not torch.equal(a, b):
        return [f"{name} is not deterministic in eval mode (two identical calls differ)"]
    if not torch.allclose(half, a[:2], atol=BATCH_TOLERANCE, rtol=BATCH_TOLERANCE):
        return [f"{name} depends on the other images of the batch (batch of 2 != first 2 of 4)"]
    return []


def check_encoder(encoder: Any) -> list[str]:
    """Problems that stop scoring, one readable line each (empty when the encoder is usable).

    Runs every capability the encoder has on a fixed random batch of 4 shaped as its card's
    preprocess says, in eval mode: output shape and dtype, NaN/inf, two identical calls
    equal (bitwise), and the first 2 of a batch of 4 equal to a batch of 2 (within 1e-4).
    """
    import torch

    card = getattr(encoder, "card", None)
    if not isinstance(card, MethodCard):
        return ["the encoder has no `card` (harness.methods.MethodCard: name, preprocess, pretraining_data)"]
    caps = capabilities(encoder)
    if "image" not in caps:
        return ["the encoder has no encode_image(images) and num_features: every task needs images"]
    if hasattr(encoder, "eval"):
        encoder.eval()
    p = card.preprocess
    x = torch.randn(4, p.channels, p.image_size, p.image_size, generator=torch.Generator().manual_seed(0))
    problems = _consistent("encode_image", encoder.encode_image, x, lambda b: (b, int(encoder.num_features)))
    if "image_regions" in caps and not problems:
        h, w = encoder.region_grid
        with torch.no_grad():
            try:
                dim = encoder.encode_image_regions(x[:1]).shape[-1]
            except Exception as exc:  # noqa: BLE001
                return [f"encode_image_regions raised {type(exc).__name__}: {exc}"]
        problems += _consistent("encode_image_regions", encoder.encode_image_regions, x, lambda b: (b, h * w, dim))
    if "regeneration" in caps and not problems:
        mask = torch.zeros(4, 1, p.image_size, p.image_size, dtype=torch.bool)
        mask[..., : p.image_size // 2, :] = True
        problems += _consistent("regenerate", lambda im: encoder.regenerate(im, mask[: len(im)]), x,
                                lambda b: (b, p.channels, p.image_size, p.image_size))
    if "text" in caps:
        texts = ["no acute cardiopulmonary process", "small left effusion", "clear lungs", "cardiomegaly"]
        try:
            with torch.no_grad():
                t, t2 = encoder.encode_text(texts), encoder.encode_text(texts)
        except Exception as exc:  # noqa: BLE001
            return problems + [f"encode_text raised {type(exc).__name__}: {exc}"]
        if not isinstance(t, torch.Tensor) or t.ndim != 2 or t.shape[0] != 4 or not torch.isfinite(t).all():
            problems.append("encode_text must return a finite (B, D) float tensor")
        elif not torch.equal(t, t2):
            problems.append("encode_text is not deterministic in eval mode (two identical calls differ)")
    return problems


# ------------------------------------------------------------------------------------------ registration


class SubmissionMethod:
    """A submitted encoder as a ``harness.methods.Method``: no pretraining, ``load`` returns the encoder.

    The encoder is built and checked once per process; every ``load`` hands out a deep
    copy, so a protocol that trains it (fine-tuning) never changes the next run's weights.
    """

    def __init__(self, name: str, build: Any) -> None:
        self._build, self._encoder = build, None
        encoder = self._get()
        self.card = MethodCard(name=name, paper=encoder.card.paper, preprocess=encoder.card.preprocess,
                               pretraining_data=tuple(encoder.card.pretraining_data),
                               capabilities=tuple(sorted(capabilities(encoder))), notes=encoder.card.notes)
        config = {"image_size": encoder.card.preprocess.image_size}
        self.profiles = {"smoke": config, "small": config, "paper": config}

    def _get(self) -> Any:
        if self._encoder is None:
            encoder = self._build()
            problems = check_encoder(encoder)
            if problems:
                raise SubmissionError("the submitted encoder failed its checks: " + "; ".join(problems))
            self._encoder = encoder
        return self._encoder

    def pretrain(self, request: Any) -> None:
        return None

    def load(self, checkpoint: Path | None, config: dict[str, Any]) -> Any:
        return copy.deepcopy(self._get())


def _entry_point(name: str) -> Any:
    found = [ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    return found[0] if found else None


def factory_for(spec: str | None, arch: str | None = None, weights: str | None = None,
                pretraining_data: tuple[str, ...] | None = None) -> Any:
    """A zero-argument callable building the encoder from one of the SPEC forms (see the module docstring)."""
    if arch or is_adapter_spec(spec):
        target = arch or spec
        data = tuple(pretraining_data) if pretraining_data else ("unknown",)
        return lambda: adapter_encoder(target, weights, data)
    if weights:
        raise SubmissionError("--weights goes with --arch ARCH or a timm:/torchvision:/torchxrayvision: SPEC")
    if spec and ":" not in spec:
        ep = _entry_point(spec)
        if ep is None:
            raise SubmissionError(f"{spec!r} is neither 'package.module:factory' nor an installed "
                                  f"{ENTRY_POINT_GROUP!r} entry point")
        return ep.load()
    if not spec:
        raise SubmissionError("give a SPEC ('package.module:factory', a plugin name, timm:NAME) or --arch/--weights")
    try:
        target = resolve_target(spec)
    except (ImportError, AttributeError) as exc:
        raise SubmissionError(f"cannot import {spec!r}: {exc}") from None
    if not callable(target):
        raise SubmissionError(f"{spec!r} is not callable")
    return target


def submission_spec(spec: str | None, arch: str | None = None, weights: str | None = None,
                    pretraining_data: tuple[str, ...] | None = None) -> str:
    """A string that rebuilds the same factory in another process (``RunRequest.submission``)."""
    if arch or weights or is_adapter_spec(spec):
        return json.dumps({"arch": arch or spec, "weights": str(Path(weights).resolve()) if weights else None,
                           "pretraining_data": list(pretraining_data or ())})
    return str(spec)


def ensure_registered(name: str, submission: str) -> None:
    """Register ``name`` from a ``submission_spec`` string unless it is registered already (idempotent)."""
    if name in METHODS:
        return
    if submission.startswith("{"):
        parts = json.loads(submission)
        build = factory_for(None, parts["arch"], parts["weights"], tuple(parts.get("pretraining_data") or ()))
    else:
        build = factory_for(submission)
    METHODS.add(name, _once(name, build))


def _once(name: str, build: Any) -> Any:
    """A METHODS factory that builds and checks the submission once per process."""
    made: list[SubmissionMethod] = []

    def factory() -> SubmissionMethod:
        if not made:
            made.append(SubmissionMethod(name, build))
        return made[0]

    return factory


def register_plugins() -> list[str]:
    """Add every ``harness.encoders`` entry point to METHODS (idempotent); returns the names added."""
    added = []
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in METHODS:
            METHODS.add(ep.name, _once(ep.name, lambda ep=ep: ep.load()()))
            added.append(ep.name)
    return added


def capable_tasks(caps: set[str], names: list[str] | None = None, tasks_dir: str | None = None) -> list[Any]:
    """The tasks to score: ``names`` (each must be within ``caps``), else every non-mock task within them.

    Raises:
        SubmissionError: a named task requires a capability the encoder lacks (e.g. an
            image-only encoder named for retrieval): nothing is run.
    """
    from harness.runner import get_task
    from harness.tasks import load_task, task_files

    if names:
        tasks = [get_task(t, tasks_dir) for t in names]
        refused = {t.name: sorted(set(t.requires) - caps) for t in tasks if not set(t.requires) <= caps}
        if refused:
            raise SubmissionError(f"the encoder lacks capabilities for {sorted(refused)}: missing {refused} "
                                  f"(it has {sorted(caps)})")
        return tasks
    files = sorted(Path(tasks_dir).glob("*.yaml")) if tasks_dir else task_files()
    return [t for t in (load_task(p) for p in files) if t.dataset != "mock" and set(t.requires) <= caps]
