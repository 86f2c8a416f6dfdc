"""From a checkpoint file to the flat state dict of one model: sections, prefixes, Lightning, pickled modules.

Checkpoints from other codebases rarely are a flat ``{name: tensor}`` file:

- **nested sections**: ``{"state_dict": ...}`` (MoCo, Lightning), ``{"model": ...}`` (timm,
  DeiT, MAE), ``{"teacher": ..., "student": ...}`` (DINO: the teacher is what DINO
  evaluates), ``{"encoder": ...}``; ``read_weights`` descends into the first of ``SECTIONS``
  present (at most ``MAX_NESTING`` levels), or into ``checkpoint_key`` (dotted) when given;
- **key prefixes**: DDP's ``module.``, ``torch.compile``'s ``_orig_mod.`` (stripped when every
  key has them), or a sub-model's path such as MoCo's ``module.encoder_q.`` (``key_prefix``:
  only the keys under it are kept, without it);
- **metadata objects** next to the weights (Lightning's ``hyper_parameters``, DINO's
  ``args``, NumPy scalars): ``torch.load(weights_only=True)`` refuses the whole file for them,
  so such a file is read again with ``harness.encoders.unpickle.restricted_load``, where they
  become inert placeholders and nothing of theirs runs;
- **whole pickled models** (``torch.save(model)``): refused here, with the command that
  converts them (``harness convert-weights``, which recovers the tensors from the module
  tree without running its code, ``convert``), except where a route passes an explicit
  ``allow`` list of the exact classes it accepts (torchxrayvision's released files).

``fit_state`` then loads the tensors into the architecture: classifier heads the harness
removed are dropped from the file, shapes are compared first (``weights.describe_mismatches``),
and a refusal lists the missing and unexpected keys, with the ``--key-prefix`` that would make
them fit when one does.
"""

from __future__ import annotations

import pickle
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.encoders.errors import SubmissionError
from harness.encoders.weights import _check_format, _refuse, describe_mismatches, one_line, shape_mismatches

SECTIONS = ("state_dict", "model", "model_state_dict", "model_state", "teacher", "encoder", "backbone", "module",
            "net", "network", "ema", "student")
MAX_NESTING = 3
WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DDP / DataParallel, torch.compile: stripped when every key has one
CONVERT_HINT = "convert it once with `harness convert-weights {path} --out {out}` (reads its tensors without " \
               "running its code) and submit that file"


@dataclass
class Loaded:
    """A flat state dict and what was done to get it (``notes``, for the card)."""

    tensors: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def _convert_hint(path: Path) -> str:
    return CONVERT_HINT.format(path=path, out=path.with_suffix(".safetensors").name)


def _torch_object(path: Path, kind: str, allow: dict[str, Any] | None) -> tuple[Any, list[str]]:
    """The object of a torch file: ``weights_only=True`` first; a refusal of a global -> restricted reading."""
    import warnings

    import torch

    from harness.encoders.unpickle import restricted_load

    if allow is None:
        try:
            with warnings.catch_warnings():  # torch warns about pickle protocols: noise next to our one line
                warnings.simplefilter("ignore")
                return torch.load(path, map_location="cpu", weights_only=True), []
        except pickle.UnpicklingError:
            pass  # a global or a call torch refuses: read it again with every global inert (below)
        except (EOFError, RuntimeError) as exc:
            _damaged(path, kind, exc)
        except (AttributeError, TypeError, ValueError) as exc:
            raise SubmissionError(f"{path}: refused: not a plain tensor file ({one_line(exc)[:160]}). Save the "
                                  "weights with safetensors or torch.save(model.state_dict())") from None
    try:
        return restricted_load(str(path), allow)
    except (EOFError, RuntimeError) as exc:
        _damaged(path, kind, exc)
    except (pickle.UnpicklingError, AttributeError, TypeError, ValueError, IndexError, KeyError) as exc:
        raise _refuse(path, "a damaged or unsupported pickle (" + one_line(exc)[:160] + ")") from None
    raise AssertionError("unreachable")  # pragma: no cover


def _damaged(path: Path, kind: str, exc: BaseException) -> None:
    if isinstance(exc, RuntimeError) and "EOF" not in str(exc):  # torch words a cut file "unexpected EOF"
        what = "pickle" if kind == "pickle" else "torch.save archive"
        raise SubmissionError(f"weights file {path} is a damaged {what} ({one_line(exc)[:160]}); save it again"
                              ) from None
    raise _refuse(path, f"{'a truncated pickle' if kind == 'pickle' else 'truncated'} (cut off in a copy or "
                        "download?)") from None


def read_object(path: str | Path, allow: dict[str, Any] | None = None) -> tuple[Any, list[str]]:
    """What a weights file holds (a dict of tensors, a checkpoint, a pickled model) and its placeholders.

    Args:
        path: the file; its format is read from its content (``harness.encoders.weights.sniff``).
        allow: an explicit allowlist for ``restricted_load`` (then used directly).

    Raises:
        SubmissionError: one line naming the file and what it is (see ``weights.load_state_dict``).
    """
    path = Path(path)
    if path.is_dir():
        raise SubmissionError(f"weights file {path} is a folder; pass the weights file inside it (.safetensors, "
                              ".pt, .pth or .bin)")
    if not path.is_file():
        raise SubmissionError(f"weights file {path} does not exist")
    kind = _check_format(path)
    if kind == "safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path)), []
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types; say it in one line
            raise _refuse(path, f"a damaged safetensors file ({' '.join(str(exc).split())[:160]})") from None
    return _torch_object(path, kind, allow)


def _is_tensor_dict(obj: Any) -> bool:
    import torch

    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _payload(path: Path, name: str) -> SubmissionError:
    return SubmissionError(f"{path}: refused: not a plain tensor file: it pickles {name}, so loading it would "
                           "execute code. Save the weights with safetensors or torch.save(model.state_dict())")


def _section(path: Path, obj: Any, checkpoint_key: str | None, notes: list[str]) -> Any:
    """The part of ``obj`` that holds the weights (see the module docstring)."""
    if checkpoint_key:
        for part in checkpoint_key.split("."):
            if not isinstance(obj, dict) or part not in obj:
                sections = [str(k) for k in obj] if isinstance(obj, dict) else []
                raise SubmissionError(f"{path}: --checkpoint-key {checkpoint_key!r}: no section {part!r} there "
                                      f"(sections: {sections[:8]})")
            obj = obj[part]
        notes.append(f"section {checkpoint_key!r}")
        return obj
    path_taken = []
    for _ in range(MAX_NESTING):
        if not isinstance(obj, dict) or _is_tensor_dict(obj):
            break
        found = next((k for k in SECTIONS if isinstance(obj.get(k), dict)), None)
        if found is None:
            break
        path_taken.append(found)
        obj = obj[found]
    if path_taken:
        notes.append(f"section {'.'.join(path_taken)!r}")
    return obj


def _tensors(path: Path, obj: Any, placeholders: list[str]) -> dict[str, Any]:
    """``obj`` when it is a mapping of tensors, else the one-line reason it is not."""
    import torch

    from harness.encoders.unpickle import placeholder_name

    name = placeholder_name(obj)
    if name is not None:  # a whole pickled object where the weights should be
        raise SubmissionError(f"{path}: refused: not a plain tensor file: it pickles {name}, so loading it would "
                              f"execute code (a whole pickled model?); {_convert_hint(path)}")
    if not isinstance(obj, dict):
        raise SubmissionError(f"{path}: expected a state dict of tensors, got {type(obj).__name__}")
    bad = next(((k, v) for k, v in obj.items() if not isinstance(v, torch.Tensor)), None)
    if bad is None:
        if not obj:
            raise SubmissionError(f"{path}: holds no tensors (an empty state dict)")
        return obj
    if placeholder_name(bad[1]) is not None:  # a payload in place of a tensor
        raise _payload(path, placeholder_name(bad[1]))
    sections = [str(k) for k, v in obj.items() if isinstance(v, dict)]
    hint = (f"; it looks like a training checkpoint with sections {sections[:4]}: pass --checkpoint-key SECTION "
            "(the one holding the model's tensors)") if sections else ""
    raise SubmissionError(f"{path}: expected a state dict of tensors; entry {str(bad[0])!r} is "
                          f"{type(bad[1]).__name__}{hint}")


def strip_prefix(state: dict[str, Any], prefix: str, where: str, notes: list[str]) -> dict[str, Any]:
    """The tensors under ``prefix``, without it; the others are dropped (counted in ``notes``).

    Raises:
        SubmissionError: no key starts with ``prefix`` (the keys' own first parts are listed).
    """
    kept = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not kept:
        raise SubmissionError(f"{where}: --key-prefix {prefix!r}: no key starts with it (keys start with "
                              f"{key_starts(state)})")
    notes.append(f"keys under {prefix!r} ({len(kept)} of {len(state)} tensors)")
    return kept


def key_starts(state: dict[str, Any], show: int = 5) -> list[str]:
    """The first distinct beginnings of the keys (``module.encoder_q.``, ``blocks.``), for messages."""
    starts: list[str] = []
    for key in state:
        parts = key.split(".")
        head = []
        for part in parts[:min(2, max(1, len(parts) - 1))]:  # at most 2 parts, never the tensor's own name
            if part.isdigit():
                break
            head.append(part)
        start = ".".join(head) + ("." if len(parts) > len(head) else "")
        if start not in starts:
            starts.append(start)
    return starts[:show]


def _strip_wrappers(state: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    changed = True
    while changed:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if state and all(k.startswith(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items()}
                notes.append(f"prefix {prefix!r} stripped")
                changed = True
    return state


def read_weights(path: str | Path, checkpoint_key: str | None = None, key_prefix: str | None = None,
                 model_classes: frozenset[str] | None = None) -> Loaded:
    """The flat state dict of one model in ``path`` (see the module docstring).

    Args:
        path: a safetensors file, a torch file (state dict, checkpoint, Lightning ``.ckpt``).
        checkpoint_key: the section holding the weights (dotted, e.g. ``teacher``); default:
            the first of ``SECTIONS`` found.
        key_prefix: keep only the keys under this prefix, without it (e.g. ``module.encoder_q.``).
        model_classes: an explicit allowlist of ``module.Class`` names: with it, a whole pickled
            model naming only those classes is read (its module tree's tensors, none of its code
            run); one naming any other is refused with the classes and the ``convert-weights`` hint.

    Returns:
        The tensors and notes on what was read (section, prefix, objects ignored).

    Raises:
        SubmissionError: one line naming the file and what is wrong with it.
    """
    from harness.encoders.unpickle import module_state

    if path is None:
        raise SubmissionError("no weights file: pass --weights FILE")
    path = Path(path)
    obj, placeholders = read_object(path)
    notes: list[str] = []
    if model_classes is not None and module_state(obj) is not None:
        extra = [n for n in placeholders if n not in model_classes]
        if extra:
            raise SubmissionError(f"{path}: refused: a whole pickled model naming {len(extra)} class(es) outside "
                                  f"the allowlist of this route ({', '.join(extra[:3])}); {_convert_hint(path)}")
        obj, placeholders = module_state(obj), []
        notes.append(f"a whole pickled model ({len(model_classes)}-class allowlist), read by its module tree")
    obj = _section(path, obj, checkpoint_key, notes)
    state = _tensors(path, obj, placeholders)
    if placeholders:
        notes.append(f"ignored {len(placeholders)} pickled object type(s) outside the weights "
                     f"({', '.join(placeholders[:3])}{', ...' if len(placeholders) > 3 else ''})")
    return Loaded(_prefixes(state, key_prefix, path, notes), notes)


def _prefixes(state: dict[str, Any], key_prefix: str | None, path: Path, notes: list[str]) -> dict[str, Any]:
    """``key_prefix`` as written (``module.encoder_q.``), or after the wrappers; else the wrappers stripped."""
    if key_prefix and any(k.startswith(key_prefix) for k in state):
        return strip_prefix(state, key_prefix, str(path), notes)
    state = _strip_wrappers(state, notes)
    return strip_prefix(state, key_prefix, str(path), notes) if key_prefix else state


# ------------------------------------------------------------------------------------------ fitting


def prefix_candidates(state: dict[str, Any], model_keys: list[str], top: int = 2) -> list[str]:
    """Prefixes whose removal would make most of the model's keys appear in ``state`` (best first)."""
    wanted = set(model_keys)
    counts: Counter[str] = Counter()
    for key in state:
        parts = key.split(".")
        for i in range(1, min(len(parts), 5)):
            if ".".join(parts[i:]) in wanted:
                counts[".".join(parts[:i]) + "."] += 1
    need = max(1, len(wanted) // 2)
    return [p for p, n in counts.most_common() if n >= need][:top]


def fit_state(net: Any, state: dict[str, Any], where: str, what: str, drop: tuple[str, ...] = (),
              notes: list[str] | None = None) -> None:
    """Load ``state`` into ``net`` exactly, or refuse in one line.

    Args:
        net: the architecture (``torch.nn.Module``), with the harness's head changes applied.
        state: the file's flat state dict.
        where: the file, for the message.
        what: the architecture, for the message (``timm:convnext_tiny``).
        drop: key prefixes of the file that the harness removed from the model (classifier
            heads) or that are not weights of the feature (torchxrayvision's ``op_threshs``):
            dropped when the model lacks them, counted in ``notes``.
        notes: where to say what was dropped.

    Raises:
        SubmissionError: tensors of another shape (both shapes listed), or keys missing or
            unexpected (the first ones listed, with the ``--key-prefix`` that would fit).
    """
    model_state = net.state_dict()
    dropped = [k for k in state if k not in model_state and k.startswith(drop)]
    if dropped and notes is not None:
        heads = sorted({next(d for d in drop if k.startswith(d)).rstrip(".") for k in dropped})
        notes.append(f"dropped {len(dropped)} tensor(s) of {', '.join(heads)} (not part of the feature)")
    state = {k: v for k, v in state.items() if k not in set(dropped)}
    mismatched = shape_mismatches(state, model_state)
    if mismatched:
        raise SubmissionError(f"{where}: does not fit {what}: {describe_mismatches(mismatched)}")
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        fits = prefix_candidates(state, list(model_state))
        hint = (f"; the keys fit after removing {' or '.join(repr(p) for p in fits)}: pass --key-prefix "
                f"{fits[0]}" if fits else "")
        raise SubmissionError(f"{where}: does not fit {what}: {len(missing)} key(s) missing {list(missing)[:4]}, "
                              f"{len(unexpected)} unexpected {list(unexpected)[:4]}{hint}")


def auto_prefix(state: dict[str, Any], model_keys: list[str], notes: list[str]) -> dict[str, Any]:
    """``state`` under the one prefix that holds every model key (Lightning's ``model.``), else unchanged.

    Two sub-models that both fit (MoCo's ``encoder_q`` and ``encoder_k``) are ambiguous: nothing
    is stripped, and ``fit_state``'s refusal names both prefixes.
    """
    wanted = set(model_keys)
    if wanted <= set(state):
        return state
    full = [p for p in prefix_candidates(state, model_keys, top=4)
            if wanted <= {k[len(p):] for k in state if k.startswith(p)}]
    if len(full) != 1:
        return state
    notes.append(f"keys under {full[0]!r} (the one sub-model that fits)")
    return {k[len(full[0]):]: v for k, v in state.items() if k.startswith(full[0])}


# ------------------------------------------------------------------------------------------ convert-weights


def convert(path: str | Path, out: str | Path, checkpoint_key: str | None = None,
            key_prefix: str | None = None) -> tuple[int, list[str]]:
    """Write the weights of ``path`` (any checkpoint, or a whole pickled model) as a flat safetensors file.

    The file is read with ``restricted_load``: every class it names becomes a placeholder, so
    none of its code runs, and a pickled model's tensors come from its module tree.

    Returns:
        The number of tensors written and the notes on what was read.

    Raises:
        SubmissionError: the file is not readable as weights, or ``out`` does not end in ``.safetensors``.
    """
    from safetensors.torch import save_file

    from harness.encoders.unpickle import module_state, placeholder_name
    from harness.storage import atomic_write

    path, out = Path(path), Path(out)
    if out.suffix != ".safetensors":
        raise SubmissionError(f"convert-weights: --out {out} must end in .safetensors")
    obj, placeholders = read_object(path, allow={})  # allow={}: always the restricted reader
    notes: list[str] = []
    state = module_state(obj)
    if state is not None:
        notes.append(f"the tensors of a pickled {placeholder_name(obj) or type(obj).__name__}, read by its "
                     "module tree (none of its code ran)")
        obj = state
    obj = _section(path, obj, checkpoint_key, notes)
    if module_state(obj) is not None:  # a section that is itself a pickled module (e.g. {"model": model})
        obj = module_state(obj)
    tensors = _tensors(path, obj, placeholders)
    tensors = _prefixes(tensors, key_prefix, path, notes)
    data = {k: v.detach().contiguous().clone() for k, v in tensors.items()}  # shared storages: one copy each

    def write(fh: Any) -> None:
        import os
        import tempfile

        with tempfile.TemporaryDirectory(dir=out.parent) as tmp:  # save_file wants a path
            name = os.path.join(tmp, "w.safetensors")
            save_file(data, name)
            with open(name, "rb") as src:
                fh.write(src.read())

    atomic_write(out, write)
    return len(data), notes
