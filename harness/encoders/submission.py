"""Scoring your own encoder exactly like the baselines: ``python -m harness submit``.

::

    python -m harness submit examples.my_encoder:build --name my-enc            # every capable task
    python -m harness submit my-plugin-encoder --name my-enc                   # an installed entry point
    python -m harness submit --arch resnet50 --weights r50.safetensors --name my-r50
    python -m harness submit timm:convnext_tiny --weights c.safetensors --name my-convnext
    python -m harness submit hf:~/models/rad-dino --name rad-dino                  # a transformers directory
    python -m harness submit open_clip:~/models/biomedclip --name biomedclip      # open_clip's local layout

An encoder is any object with the capability methods it has (``encode_image`` +
``num_features``; optionally ``encode_image_regions`` + ``region_grid``,
``encode_text``, ``regenerate``; see ``harness.encoders.capabilities``) and a ``card``
(``MethodCard``: name, preprocessing, pretraining data). SPEC is one of:

- ``package.module:factory``: a zero-argument callable returning the encoder;
- the name of an installed plugin: an entry point in the ``harness.encoders`` group
  (``register_plugins()`` adds them to ``METHODS``, so ``harness ls methods`` lists them);
- ``timm:NAME`` / ``torchvision:NAME`` / ``torchxrayvision:NAME`` with ``--weights``,
  ``--arch ARCH --weights FILE``, ``hf:DIR``, ``open_clip:DIR`` or ``open_clip:ARCH --weights FILE``
  (``harness.encoders.public``: local files only, never a download), with the options of
  ``harness.encoders.public.options.RouteOptions`` (checkpoint section, key prefix, preprocessing).

A submission may also name a text model for the image+indication task (``--text-model DIR``,
a local BERT-style Hugging Face directory): it becomes that protocol's ``text_model``
argument in every run of a task whose protocol takes one (``SubmissionMethod.protocol_args``),
and part of the submission's identity.

Before any scoring the encoder is checked (``check_encoder``: what it declares, then
shapes, dtype, NaN/inf, determinism and batch independence in eval mode, and image and
text in one space). It then becomes an ordinary registered method without pretraining
(``SubmissionMethod``: ``pretrain`` returns None, ``load`` the encoder), so the runner
scores it through the same path as every baseline, on every task whose ``requires`` it
meets. Its card flows into the records (``method_card``), so the leaderboard flags
pretraining data that overlaps a task's evaluation data; ``--pretraining-data`` and card
values are checked against the known datasets and splits (``harness.encoders.provenance``).

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

from harness.catalog import METHODS
from harness.encoders import MethodCard, capabilities
from harness.encoders.check import check_encoder
from harness.encoders.errors import SubmissionError
from harness.encoders.provenance import check_pretraining_data
from harness.encoders.public import is_adapter_spec, library_of, public_encoder
from harness.encoders.public.options import PREPROCESS_OPTIONS, RouteOptions
from harness.encoders.weights import one_line
from harness.registry import resolve_target

ENTRY_POINT_GROUP = "harness.encoders"


# ------------------------------------------------------------------------------------------ registration


class SubmissionMethod:
    """A submitted encoder as a ``harness.encoders.Method``: no pretraining, ``load`` returns the encoder.

    The encoder is built and checked once per process; every ``load`` hands out a deep
    copy, so a protocol that trains it (fine-tuning) never changes the next run's weights.
    Its config (stored in every record) is the card's image size and ``submission``, the
    identity of what was submitted (``submission_identity``): with the weights hash it tells
    a rerun of the same encoder from a different one under the same name.
    """

    def __init__(self, name: str, build: Any, identity: str = "", protocol_args: dict[str, Any] | None = None
                 ) -> None:
        self._build, self._encoder, self._sha, self._fingerprint = build, None, None, None
        encoder = self._get()
        self.card = MethodCard(name=name, paper=encoder.card.paper, preprocess=encoder.card.preprocess,
                               pretraining_data=tuple(encoder.card.pretraining_data),
                               capabilities=tuple(sorted(capabilities(encoder))), notes=encoder.card.notes)
        # the image cache stores images at the side before any crop (Preprocess.stored_size)
        config = {"image_size": encoder.card.preprocess.stored_size, "submission": identity}
        self.profiles = {"smoke": config, "small": config, "paper": config}
        # protocol arguments this submission sets wherever a task's protocol takes them (--text-model)
        self.protocol_args = dict(protocol_args or {})

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

    def fingerprint(self) -> dict[str, Any]:
        """The encoder's embedding fingerprint (``harness.encoders.fingerprint``), computed once."""
        from harness.encoders.fingerprint import embedding_fingerprint

        if self._fingerprint is None:
            self._fingerprint = embedding_fingerprint(self._get())
        return self._fingerprint

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
                pretraining_data: tuple[str, ...] | None = None, options: RouteOptions | None = None) -> Any:
    """A zero-argument callable building the encoder from one of the SPEC forms (see the module docstring).

    Raises:
        SubmissionError: the SPEC does not import, names no callable, or names an encoder
            object instead of the factory that returns one.
    """
    if arch or is_adapter_spec(spec):
        target = arch or spec
        if options is None:
            data = tuple(pretraining_data) if pretraining_data else ("unknown",)
            options = RouteOptions(weights=weights, pretraining_data=data)
        return lambda: public_encoder(target, options)
    if weights:
        raise SubmissionError("--weights goes with --arch ARCH or a timm:/torchvision:/torchxrayvision:/open_clip: "
                              "SPEC")
    if spec and ":" not in spec:
        ep = _entry_point(spec)
        if ep is None:
            raise SubmissionError(f"{spec!r} is neither 'package.module:factory' nor an installed "
                                  f"{ENTRY_POINT_GROUP!r} entry point")
        return _import(spec, ep.load)
    if not spec:
        raise SubmissionError("give a SPEC ('package.module:factory', a plugin name, timm:NAME, hf:DIR, "
                              "open_clip:DIR) or --arch/--weights")
    target = _import(spec, lambda: resolve_target(spec))
    if hasattr(target, "encode_image") and not isinstance(target, type):
        raise SubmissionError(f"{spec!r} is an encoder object ({type(target).__name__}), not a factory: name a "
                              "zero-argument function that returns it")
    if not callable(target):
        raise SubmissionError(f"{spec!r} is not callable")
    return target


def _route_options(parts: dict[str, Any]) -> RouteOptions:
    """The ``RouteOptions`` of a public submission's spec (older specs: weights and pretraining data only)."""
    data = tuple(parts.get("pretraining_data") or ()) or ("unknown",)
    return RouteOptions(weights=parts.get("weights"), pretraining_data=data,
                        checkpoint_key=parts.get("checkpoint_key"), key_prefix=parts.get("key_prefix"),
                        preprocess=dict(parts.get("preprocess") or {}))


def submission_spec(spec: str | None, arch: str | None = None, weights: str | None = None,
                    pretraining_data: tuple[str, ...] | None = None, *, checkpoint_key: str | None = None,
                    key_prefix: str | None = None, preprocess: dict[str, Any] | None = None,
                    text_model: str | None = None) -> str:
    """A string that rebuilds the same factory in another process (``RunRequest.submission``).

    Raises:
        SubmissionError: ``--pretraining-data``, ``--checkpoint-key``, ``--key-prefix`` or a
            preprocessing option with a SPEC that is not a public encoder (code submissions
            declare them in their card), or a value that is not a known DATASET:SPLIT.
    """
    preprocess = {k: v for k, v in (preprocess or {}).items() if v is not None}
    unknown = sorted(set(preprocess) - set(PREPROCESS_OPTIONS))
    if unknown:
        raise SubmissionError(f"unknown preprocessing option(s) {unknown}; known: {list(PREPROCESS_OPTIONS)}")
    extra = {"text_model": text_model} if text_model else {}
    if arch or weights or is_adapter_spec(spec):
        data = check_pretraining_data(tuple(pretraining_data or ()), "--pretraining-data")
        parts: dict[str, Any] = {"arch": _absolute(arch or spec),
                                 "weights": str(Path(weights).resolve()) if weights else None,
                                 "pretraining_data": list(data)}
        if checkpoint_key:
            parts["checkpoint_key"] = checkpoint_key
        if key_prefix:
            parts["key_prefix"] = key_prefix
        if preprocess:
            parts["preprocess"] = dict(sorted(preprocess.items()))
        return json.dumps({**parts, **extra})
    if pretraining_data:
        raise SubmissionError("--pretraining-data goes with weights files (--weights); a code or plugin submission "
                              "declares what it saw in its card's pretraining_data")
    given = [f"--{k.replace('_', '-')}" for k, v in (("checkpoint_key", checkpoint_key), ("key_prefix", key_prefix))
             if v] + [f"--{k.replace('_', '-')}" for k in sorted(preprocess)]
    if given:
        raise SubmissionError(f"{', '.join(given)} go(es) with public encoders (timm:, torchvision:, torchxrayvision:, "
                              "hf:, open_clip:); a code or plugin submission declares its preprocessing in its card")
    return json.dumps({"spec": str(spec), **extra}) if extra else str(spec)


def _absolute(arch: str | None) -> str | None:
    """``hf:DIR`` / ``open_clip:DIR`` with DIR absolute, so that a job started elsewhere finds it."""
    library = library_of(arch)
    if library is None or arch is None:
        return arch
    name = arch.split(":", 1)[1]
    path = Path(name).expanduser()
    return f"{library}:{path.resolve()}" if path.is_dir() else arch


def _arch_identity(arch: str) -> str:
    """A model directory's route by its folder's name: where it lies is not what it is (its weights hash is)."""
    library = library_of(arch)
    if library in ("hf", "open_clip") and Path(arch.split(":", 1)[1]).is_absolute():
        return f"{library}:{Path(arch.split(':', 1)[1]).name}"
    return arch


def submission_identity(submission: str) -> str:
    """What was submitted, without where the weights file lies (their content is the weights hash)."""
    if submission.startswith("{"):
        parts = json.loads(submission)
        out: dict[str, Any] = ({"spec": parts["spec"]} if "spec" in parts else
                               {"arch": _arch_identity(parts["arch"]), **_route_options(parts).identity()})
        if not parts.get("pretraining_data") and "arch" in out:
            out["pretraining_data"] = []
        if parts.get("text_model"):
            out["text_model"] = Path(str(parts["text_model"])).name
        return json.dumps(out, sort_keys=True)
    return submission


def _text_model_args(submission: str) -> dict[str, Any]:
    """The protocol arguments a submission sets (``--text-model``: ``text_model``)."""
    if submission.startswith("{"):
        text_model = json.loads(submission).get("text_model")
        if text_model:
            return {"text_model": str(text_model)}
    return {}


def check_text_model(path: str) -> str:
    """``--text-model``: a local BERT-style Hugging Face directory with its fast tokenizer; the resolved path.

    Raises:
        SubmissionError: not a model directory, no ``tokenizer.json``, or a model without the
            two segment embeddings the image+indication transformer uses (``token_type_ids``).
    """
    from harness import text

    try:
        directory = text.model_dir(path)
    except FileNotFoundError as exc:
        raise SubmissionError(f"--text-model {path}: {exc}") from None
    config = directory / "config.json"
    if not config.is_file():
        raise SubmissionError(f"--text-model {path}: no config.json in {directory}: not a transformers model "
                              "directory")
    if not (directory / text.TOKENIZER_FILE).is_file():
        raise SubmissionError(f"--text-model {path}: no {text.TOKENIZER_FILE} in {directory} (save the fast "
                              "tokenizer with tokenizer.save_pretrained)")
    try:
        cfg = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SubmissionError(f"--text-model {config}: not readable JSON ({exc})") from None
    if int(cfg.get("type_vocab_size") or 0) < 2:
        raise SubmissionError(f"--text-model {path}: {cfg.get('model_type', 'the model')!r} has no second segment "
                              "embedding (type_vocab_size < 2): the image+indication task needs a BERT-style model")
    return str(Path(path).resolve()) if not str(path).startswith(text.PACKAGE_PREFIX) else str(path)


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
        build = (factory_for(parts["spec"]) if "spec" in parts else
                 factory_for(None, parts["arch"], options=_route_options(parts)))
    else:
        build = factory_for(submission)
    METHODS.add(name, _once(name, build, submission_identity(submission), _text_model_args(submission)))
    _SUBMITTED[name] = submission


def _once(name: str, build: Any, identity: str, protocol_args: dict[str, Any] | None = None) -> Any:
    """A METHODS factory that builds and checks the submission once per process."""
    made: list[SubmissionMethod] = []

    def factory() -> SubmissionMethod:
        if not made:
            made.append(SubmissionMethod(name, build, identity, protocol_args))
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
    from harness.tasks import get_task, load_task, task_files

    if names:
        tasks = [get_task(t, tasks_dir) for t in names]
        refused = {t.name: sorted(set(t.requires) - caps) for t in tasks if not set(t.requires) <= caps}
        if refused:
            raise SubmissionError(f"the encoder lacks capabilities for {sorted(refused)}: missing {refused} "
                                  f"(it has {sorted(caps)})")
        return tasks
    files = sorted(Path(tasks_dir).glob("*.yaml")) if tasks_dir else task_files()
    return [t for t in (load_task(p) for p in files) if t.dataset != "mock" and set(t.requires) <= caps]


def text_model_tasks(tasks: list[Any]) -> list[Any]:
    """The tasks whose protocol takes a ``text_model`` argument (what ``--text-model`` sets)."""
    from harness.protocols.args import declared

    return [t for t in tasks if (decl := declared(t.protocol)) is not None and "text_model" in decl.args]
