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

Before any scoring the encoder is checked (``check_encoder``: what it declares, then
shapes, dtype, NaN/inf, determinism and batch independence in eval mode, and image and
text in one space). It then becomes an ordinary registered method without pretraining
(``SubmissionMethod``: ``pretrain`` returns None, ``load`` the encoder), so the runner
scores it through the same path as every baseline, on every task whose ``requires`` it
meets. Its card flows into the records (``method_card``), so the leaderboard flags
pretraining data that overlaps a task's evaluation data; ``--pretraining-data`` and card
values are checked against the known datasets and splits (``harness.provenance``).

Names (``--name``): letters, digits and ``. + - _`` (``check_name``); never a registered
method (a baseline such as ``random``, or an installed plugin that is not this
submission); never an earlier, different submission: records under ``--results`` whose
method is the name but whose weights hash or submission config differ
(``refuse_earlier_submission``). The same encoder again under its name is a rerun.

Local and Slurm jobs run in other processes: each ``RunRequest`` carries
``submission=submission_spec(...)``, a string from which ``ensure_registered`` rebuilds
the same registration there.
"""

from __future__ import annotations

import copy
import json
import re
from importlib import metadata
from pathlib import Path
from typing import Any

from harness.adapters import SubmissionError, adapter_encoder, is_adapter_spec, load_state_dict, one_line
from harness.catalog import METHODS
from harness.methods import MethodCard, Preprocess, capabilities
from harness.provenance import check_pretraining_data
from harness.registry import resolve_target

__all__ = ["ENTRY_POINT_GROUP", "SubmissionError", "SubmissionMethod", "capable_tasks", "check_encoder", "check_name",
           "ensure_registered", "factory_for", "load_state_dict", "refuse_earlier_submission", "register_plugins",
           "submission_identity", "submission_spec"]

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


def _input(x: Any, p: Preprocess) -> str:
    return f"on a {tuple(x.shape)} batch: card.preprocess says {p.image_size} px, {p.channels} channel(s)"


def _consistent(name: str, call: Any, x: Any, shape_of: Any, p: Preprocess) -> list[str]:
    """Shape/dtype/finiteness, then two identical calls equal, then batch-size independence."""
    import torch

    try:
        with torch.no_grad():
            a, b, half = call(x), call(x), call(x[:2])
    except Exception as exc:  # noqa: BLE001 - the user's code: report whatever it raised
        # the input is named: the usual cause is a size or channel count the model refuses
        return [f"{name} raised {one_line(exc)} ({_input(x, p)})"]
    problems = _check_tensor(name, a, shape_of(len(x)))
    if problems:
        return problems
    if not torch.equal(a, b):
        return [f"{name} is not deterministic in eval mode (two identical calls differ)"]
    if not torch.allclose(half, a[:2], atol=BATCH_TOLERANCE, rtol=BATCH_TOLERANCE):
        return [f"{name} depends on the other images of the batch (batch of 2 != first 2 of 4)"]
    return []


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _declared(encoder: Any, caps: set[str]) -> list[str]:
    """What the encoder declares (card, sizes, grid, pretraining data) before any of it is called."""
    card = encoder.card
    if not isinstance(card.preprocess, Preprocess):
        return [f"card.preprocess must be a harness.methods.Preprocess; got {type(card.preprocess).__name__}"]
    problems = []
    if not _positive_int(encoder.num_features):
        problems.append(f"num_features must be a positive int; got {encoder.num_features!r}")
    if "image_regions" in caps:
        grid = encoder.region_grid
        if not (isinstance(grid, tuple | list) and len(grid) == 2 and all(_positive_int(g) for g in grid)):
            problems.append(f"region_grid must be (h, w), two positive ints; got {grid!r}")
    try:
        check_pretraining_data(tuple(card.pretraining_data), "card.pretraining_data")
    except SubmissionError as exc:
        problems.append(str(exc))
    except TypeError:
        problems.append(f"card.pretraining_data must be a tuple of 'dataset:split' strings; got "
                        f"{card.pretraining_data!r}")
    return problems


def _hashable(encoder: Any) -> list[str]:
    from harness.features import weights_sha256

    try:
        weights_sha256(encoder)
    except TypeError as exc:  # records and caches are keyed by this hash; without it nothing can be scored
        return [str(exc)]
    return []


def check_encoder(encoder: Any) -> list[str]:
    """Problems that stop scoring, one readable line each (empty when the encoder is usable).

    First what the encoder declares (a ``card`` with a ``Preprocess``, ``num_features`` and
    ``region_grid`` as positive ints, valid ``pretraining_data``, hashable weights), then every
    capability it has is run on a fixed random batch of 4 shaped as its card's preprocess
    says, in eval mode: output shape and dtype, NaN/inf, two identical calls equal (bitwise),
    and the first 2 of a batch of 4 equal to a batch of 2 (within 1e-4). A call that raises is
    reported with the input it was given (a size or channel count the model refuses).

    Image and text must share one space, exactly as the tasks that use both assume: the text
    features of an encoder with ``encode_text`` have ``num_features`` dimensions (retrieval
    compares them with the global image features), and an encoder with the
    ``localization`` capability (regions and text with ``joint_space = True``) has region
    features of the text's size (phrase grounding compares those).
    """
    import torch

    card = getattr(encoder, "card", None)
    if not isinstance(card, MethodCard):
        return ["the encoder has no `card` (harness.methods.MethodCard: name, preprocess, pretraining_data)"]
    caps = capabilities(encoder)
    if "image" not in caps:
        return ["the encoder has no encode_image(images) and num_features: every task needs images"]
    problems = _declared(encoder, caps) + _hashable(encoder)
    if problems:
        return problems
    if hasattr(encoder, "eval"):
        encoder.eval()
    p = card.preprocess
    x = torch.randn(4, p.channels, p.image_size, p.image_size, generator=torch.Generator().manual_seed(0))
    problems = _consistent("encode_image", encoder.encode_image, x, lambda b: (b, int(encoder.num_features)), p)
    region_dim = None
    if "image_regions" in caps and not problems:
        h, w = encoder.region_grid
        with torch.no_grad():
            try:
                out = encoder.encode_image_regions(x[:1])
                region_dim = int(out.shape[-1])
            except Exception as exc:  # noqa: BLE001
                return [f"encode_image_regions raised {one_line(exc)} ({_input(x[:1], p)})"]
        problems += _consistent("encode_image_regions", encoder.encode_image_regions, x,
                                lambda b: (b, h * w, region_dim), p)
    if "regeneration" in caps and not problems:
        mask = torch.zeros(4, 1, p.image_size, p.image_size, dtype=torch.bool)
        mask[..., : p.image_size // 2, :] = True
        problems += _consistent("regenerate", lambda im: encoder.regenerate(im, mask[: len(im)]), x,
                                lambda b: (b, p.channels, p.image_size, p.image_size), p)
    if "text" in caps:
        problems += _check_text(encoder, caps, region_dim)
    return problems


def _check_text(encoder: Any, caps: set[str], region_dim: int | None) -> list[str]:
    import torch

    texts = ["no acute cardiopulmonary process", "small left effusion", "clear lungs", "cardiomegaly"]
    try:
        with torch.no_grad():
            t, t2 = encoder.encode_text(texts), encoder.encode_text(texts)
    except Exception as exc:  # noqa: BLE001
        return [f"encode_text raised {one_line(exc)}"]
    if (not isinstance(t, torch.Tensor) or t.ndim != 2 or t.shape[0] != 4 or not t.is_floating_point()
            or not torch.isfinite(t).all()):
        return ["encode_text must return a finite (B, D) float tensor"]
    if not torch.equal(t, t2):
        return ["encode_text is not deterministic in eval mode (two identical calls differ)"]
    dim = int(t.shape[1])
    if dim != int(encoder.num_features):  # retrieval's cosine of image and text features needs one size
        return [f"encode_text returns {dim} features but encode_image {encoder.num_features} (num_features): "
                "image and text must share one space for retrieval and zero-shot tasks"]
    if "localization" in caps and region_dim is not None and region_dim != dim:
        return [f"joint_space is claimed but encode_image_regions returns {region_dim} features and encode_text "
                f"{dim}: phrase grounding compares regions with text in one space"]
    return []


# ------------------------------------------------------------------------------------------ registration


class SubmissionMethod:
    """A submitted encoder as a ``harness.methods.Method``: no pretraining, ``load`` returns the encoder.

    The encoder is built and checked once per process; every ``load`` hands out a deep
    copy, so a protocol that trains it (fine-tuning) never changes the next run's weights.
    Its config (stored in every record) is the card's image size and ``submission``, the
    identity of what was submitted (``submission_identity``): with the weights hash it tells
    a rerun of the same encoder from a different one under the same name.
    """

    def __init__(self, name: str, build: Any, identity: str = "") -> None:
        self._build, self._encoder, self._sha = build, None, None
        encoder = self._get()
        self.card = MethodCard(name=name, paper=encoder.card.paper, preprocess=encoder.card.preprocess,
                               pretraining_data=tuple(encoder.card.pretraining_data),
                               capabilities=tuple(sorted(capabilities(encoder))), notes=encoder.card.notes)
        config = {"image_size": encoder.card.preprocess.image_size, "submission": identity}
        self.profiles = {"smoke": config, "small": config, "paper": config}

    def _get(self) -> Any:
        if self._encoder is None:
            try:
                encoder = self._build()
            except SubmissionError:
                raise
            except Exception as exc:  # noqa: BLE001 - the user's factory: say what it raised, in one line
                raise SubmissionError(f"building the submitted encoder raised {one_line(exc)}") from None
            problems = check_encoder(encoder)
            if problems:
                raise SubmissionError("the submitted encoder failed its checks: " + "; ".join(problems))
            self._encoder = encoder
        return self._encoder

    def weights_sha256(self) -> str:
        """The hash the records store for this encoder (``harness.features.weights_sha256``)."""
        from harness.features import weights_sha256

        if self._sha is None:
            self._sha = weights_sha256(self._get())
        return self._sha

    def pretrain(self, request: Any) -> None:
        return None

    def load(self, checkpoint: Path | None, config: dict[str, Any]) -> Any:
        return copy.deepcopy(self._get())


def _entry_point(name: str) -> Any:
    found = [ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    return found[0] if found else None


def _import(spec: str, load: Any) -> Any:
    try:
        return load()
    except Exception as exc:  # noqa: BLE001 - the user's module may raise anything while importing
        raise SubmissionError(f"cannot import {spec!r}: {exc if isinstance(exc, ImportError) else one_line(exc)}"
                              ) from None


def factory_for(spec: str | None, arch: str | None = None, weights: str | None = None,
                pretraining_data: tuple[str, ...] | None = None) -> Any:
    """A zero-argument callable building the encoder from one of the SPEC forms (see the module docstring).

    Raises:
        SubmissionError: the SPEC does not import, names no callable, or names an encoder
            object instead of the factory that returns one.
    """
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
        return _import(spec, ep.load)
    if not spec:
        raise SubmissionError("give a SPEC ('package.module:factory', a plugin name, timm:NAME) or --arch/--weights")
    target = _import(spec, lambda: resolve_target(spec))
    if hasattr(target, "encode_image") and not isinstance(target, type):
        raise SubmissionError(f"{spec!r} is an encoder object ({type(target).__name__}), not a factory: name a "
                              "zero-argument function that returns it")
    if not callable(target):
        raise SubmissionError(f"{spec!r} is not callable")
    return target


def submission_spec(spec: str | None, arch: str | None = None, weights: str | None = None,
                    pretraining_data: tuple[str, ...] | None = None) -> str:
    """A string that rebuilds the same factory in another process (``RunRequest.submission``).

    Raises:
        SubmissionError: ``--pretraining-data`` with a SPEC that is not a weights file (code
            submissions declare it in their card), or a value that is not a known DATASET:SPLIT.
    """
    if arch or weights or is_adapter_spec(spec):
        data = check_pretraining_data(tuple(pretraining_data or ()), "--pretraining-data")
        return json.dumps({"arch": arch or spec, "weights": str(Path(weights).resolve()) if weights else None,
                           "pretraining_data": list(data)})
    if pretraining_data:
        raise SubmissionError("--pretraining-data goes with weights files (--weights); a code or plugin submission "
                              "declares what it saw in its card's pretraining_data")
    return str(spec)


def submission_identity(submission: str) -> str:
    """What was submitted, without where the weights file lies (their content is the weights hash)."""
    if submission.startswith("{"):
        parts = json.loads(submission)
        return json.dumps({"arch": parts["arch"], "pretraining_data": parts.get("pretraining_data") or []},
                          sort_keys=True)
    return submission


NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
_SUBMITTED: dict[str, str] = {}  # name -> submission spec of every submission registered in this process


def check_name(name: str) -> None:
    """A submission name must make a file-name part and a leaderboard row of its own.

    Raises:
        SubmissionError: characters that would break record file names (spaces, slashes,
            ``__``, the records' separator) or more than 80 characters.
    """
    if not NAME_PATTERN.fullmatch(name) or "__" in name or len(name) > 80:
        raise SubmissionError(f"--name {name!r}: use letters, digits and . + - _ (no spaces, slashes or '__'; at "
                              "most 80 characters), starting with a letter or digit: it names record files")


def ensure_registered(name: str, submission: str) -> None:
    """Register ``name`` from a ``submission_spec`` string; again with the same spec is a no-op.

    Raises:
        SubmissionError: ``name`` is not a valid name (``check_name``), is a registered method
            that is not this submission (a baseline such as ``random`` or ``moco``: scoring
            under it would silently score that method), or is another submission here.
    """
    check_name(name)
    if name in _SUBMITTED:
        if _SUBMITTED[name] != submission:
            raise SubmissionError(f"--name {name!r} is already the submission {_SUBMITTED[name]!r}; a different "
                                  "encoder needs a name of its own")
        return
    if name in METHODS:
        raise SubmissionError(f"--name {name!r} is a registered method (`harness ls methods`); scoring under it "
                              "would mix this encoder with that method: choose a name of its own")
    if submission.startswith("{"):
        parts = json.loads(submission)
        build = factory_for(None, parts["arch"], parts["weights"], tuple(parts.get("pretraining_data") or ()))
    else:
        build = factory_for(submission)
    METHODS.add(name, _once(name, build, submission_identity(submission)))
    _SUBMITTED[name] = submission


def _once(name: str, build: Any, identity: str) -> Any:
    """A METHODS factory that builds and checks the submission once per process."""
    made: list[SubmissionMethod] = []

    def factory() -> SubmissionMethod:
        if not made:
            made.append(SubmissionMethod(name, build, identity))
        return made[0]

    return factory


def register_plugins() -> list[str]:
    """Add every ``harness.encoders`` entry point to METHODS (idempotent); returns the names added."""
    added = []
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in METHODS:
            METHODS.add(ep.name, _once(ep.name, lambda ep=ep: _import(ep.name, ep.load)(), ep.name))
            _SUBMITTED[ep.name] = ep.name  # its submission spec: `harness submit NAME --name NAME` reruns it
            added.append(ep.name)
    return added


def _config_differs(rec: dict[str, Any], config: dict[str, Any]) -> list[str]:
    theirs = (rec.get("config") or {}).get("method") or {}
    return [f"{k} {theirs[k]!r} there, {config[k]!r} here" for k in sorted(set(theirs) & set(config))
            if theirs[k] != config[k]]


def refuse_earlier_submission(name: str, results_dir: str | Path, method: SubmissionMethod) -> None:
    """Refuse ``name`` when records under ``results_dir`` hold it for a different encoder.

    Different: another weights hash, or another submission config (``SubmissionMethod``:
    image size, what was submitted). The same encoder again is fine (idempotent reruns).

    Args:
        name: the ``--name`` of this submission.
        results_dir: the ``--results`` directory its records will go to.
        method: this submission, built and checked.

    Raises:
        SubmissionError: naming a clashing record and what differs.
    """
    from harness.results import load_records, record_path

    sha, config = method.weights_sha256(), method.profiles["small"]
    records, _ = load_records(results_dir)
    clashes = [(r, ([f"weights sha256 {str(r.get('weights_sha256'))[:12]} there, {sha[:12]} here"]
                    if r.get("weights_sha256") != sha else []) + _config_differs(r, config))
               for r in records if r.get("method") == name]
    clashes = [(r, why) for r, why in clashes if why]
    if clashes:
        rec, why = clashes[0]
        raise SubmissionError(f"--name {name!r} is taken by an earlier, different submission: {len(clashes)} "
                              f"record(s) under {results_dir}, e.g. {record_path(Path(results_dir), rec)} "
                              f"({'; '.join(why)}); choose another --name, or remove those records to replace it")


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
