"""Reading torch pickles weights-only: no class or function named in the file is ever imported or run.

``torch.load(weights_only=True)`` refuses any pickle that names a class outside torch's
own allowlist, which is right for a plain state dict but refuses most real checkpoints:
a Lightning ``.ckpt`` (its ``hyper_parameters`` are an ``AttributeDict``), DINO's
``checkpoint.pth`` (its ``args`` are an ``argparse.Namespace``), a timm training
checkpoint, or torchxrayvision's released files, which are whole pickled models.
``restricted_load`` reads such files with a restricted unpickler (the pattern of the
``pickle`` documentation's "Restricting Globals"):

- the globals torch itself allows under ``weights_only`` (tensor and storage rebuilding,
  ``OrderedDict``, dtypes, ...) resolve to the real objects;
- the globals of an explicit ``allow`` map resolve to the objects given there (the
  torchxrayvision route passes exactly the classes its released files need);
- every other global becomes an inert ``Placeholder`` subclass named after it: calling it,
  building it or setting its state only records the arguments. Nothing of the file's
  modules is imported, so nothing of them runs.

The caller then decides what the placeholders mean (``placeholders`` lists their
names): harmless metadata next to the weights (``args``, ``hyper_parameters``), a
whole pickled model whose tensors ``module_state`` recovers from its ``_parameters`` /
``_buffers`` / ``_modules``, or a payload (a placeholder where a tensor should be).
"""

from __future__ import annotations

import io
import pickle
import types
from typing import Any

_MAX_DEPTH = 64  # module trees deeper than this are not models
# Python 2 module names that protocol-2 pickles still use (pickle's own fix_imports mapping, applied here
# because find_class is overridden)
_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}


class Placeholder(dict):
    """Stands for a class or function named in a pickle; records how the pickle used it, runs nothing.

    A ``dict`` so that pickled dict subclasses (``AttributeDict``) keep their items.
    """

    qualname = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self.args, self.kwargs, self.state, self.items_ = args, kwargs, None, []

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def append(self, value: Any) -> None:
        self.items_.append(value)

    def extend(self, values: Any) -> None:
        self.items_.extend(values)

    def __call__(self, *args: Any, **kwargs: Any) -> Placeholder:  # a pickled function applied (REDUCE)
        return type(self)(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<placeholder for {self.qualname}>"


def _torch_safe_globals() -> dict[str, Any]:
    """What torch allows under ``weights_only`` (its vetted list), by ``module.name``."""
    from torch import _weights_only_unpickler as wo

    return dict(wo._get_allowed_globals())


def _unpickler_class(allow: dict[str, Any], seen: list[str]) -> type:
    safe = _torch_safe_globals()
    classes: dict[str, type] = {}

    class RestrictedUnpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            full = f"{_PY2_MODULES.get(module, module)}.{name}"
            if full in allow:
                return allow[full]
            if full in safe:
                return safe[full]
            if full not in classes:
                classes[full] = type(f"Placeholder[{full}]", (Placeholder,), {"qualname": full})
                seen.append(full)
            return classes[full]

    return RestrictedUnpickler


def restricted_load(path: str, allow: dict[str, Any] | None = None) -> tuple[Any, list[str]]:
    """The object a ``torch.save`` file holds, read without running any of its code (module docstring).

    Args:
        path: a torch.save zip archive or legacy pickle (checked by ``harness.encoders.weights``).
        allow: ``"module.Name"`` -> the object to use for it (an explicit allowlist).

    Returns:
        The loaded object (tensors on CPU) and the names of the globals replaced by placeholders,
        in the order met.

    Raises:
        pickle.UnpicklingError, EOFError, RuntimeError, ValueError: a damaged file (the caller words them).
    """
    import warnings

    import torch

    seen: list[str] = []
    unpickler = _unpickler_class(dict(allow or {}), seen)
    module = types.ModuleType("harness_restricted_pickle")
    module.Unpickler = unpickler
    module.load = lambda fh, **kw: unpickler(fh, **kw).load()
    module.loads = lambda data, **kw: unpickler(io.BytesIO(data), **kw).load()
    module.__version__ = pickle.format_version
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # weights_only=False hands unpickling to ``module.Unpickler``: the restriction is ours, not torch's
            obj = torch.load(path, map_location="cpu", weights_only=False, pickle_module=module)
    except RuntimeError as exc:
        if "magic number" not in str(exc):
            raise
        with open(path, "rb") as fh:  # a plain pickle.dump, not torch's legacy format
            obj = unpickler(fh).load()
    return obj, seen


def placeholder_name(obj: Any) -> str | None:
    """The global a placeholder stands for, or None for anything else."""
    return obj.qualname if isinstance(obj, Placeholder) else None


def _module_dict(obj: Any) -> dict[str, Any] | None:
    """A module's ``__dict__`` as pickled: a real ``nn.Module`` or a placeholder built from its state."""
    import torch

    if isinstance(obj, torch.nn.Module):
        return vars(obj)
    if isinstance(obj, Placeholder) and isinstance(obj.state, dict) and "_parameters" in obj.state:
        return obj.state
    return None


def module_state(obj: Any) -> dict[str, Any] | None:
    """The state dict of a pickled module (real or placeholder), recovered from its tree; None if it is none.

    Parameters and persistent buffers, in ``state_dict`` order and naming (``a.b.weight``).
    """
    import torch

    if _module_dict(obj) is None:
        return None
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str, depth: int) -> None:
        attrs = _module_dict(node)
        if attrs is None or depth > _MAX_DEPTH:
            return
        non_persistent = set(attrs.get("_non_persistent_buffers_set") or ())
        for name, value in (attrs.get("_parameters") or {}).items():
            if isinstance(value, torch.Tensor):
                out[prefix + name] = value.detach()
        for name, value in (attrs.get("_buffers") or {}).items():
            if isinstance(value, torch.Tensor) and name not in non_persistent:
                out[prefix + name] = value.detach()
        for name, child in (attrs.get("_modules") or {}).items():
            if child is not None:
                walk(child, f"{prefix}{name}.", depth + 1)

    walk(obj, "", 0)
    return out
