"""Seeds and RNG states: explicit, per step, and storable in a weights-only checkpoint.

Two kinds of randomness in a training run:

- *per-step* randomness (which images, which crops, which masks) comes from
  ``step_generator(seed, step, rank)``: a fresh ``torch.Generator`` that is a
  pure function of its arguments, so a resumed run draws exactly what the
  uninterrupted run drew, with nothing to store;
- *global* randomness (dropout, drop-path, ``torch.randperm`` inside a library)
  comes from the torch / numpy / python global generators, seeded once by
  ``seed_all`` and saved in every checkpoint with ``rng_state()``.

Nothing here runs at import time.
"""

from __future__ import annotations

import random

import numpy as np
import torch


def mix_seed(*parts: int) -> int:
    """A well-spread 63-bit seed from integers (numpy SeedSequence, stable across platforms)."""
    state = np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts] + [len(parts)]).generate_state(2)
    return int((int(state[0]) << 31) ^ int(state[1])) & 0x7FFFFFFFFFFFFFFF


def seed_all(seed: int) -> None:
    """Seed python, numpy and torch global generators (call once, in the entry point)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def step_generator(seed: int, step: int, rank: int = 0, stream: int = 0) -> torch.Generator:
    """The CPU generator for one step of one rank; ``stream`` separates independent uses."""
    return torch.Generator().manual_seed(mix_seed(seed, step, rank, stream))


def rng_state() -> dict:
    """Global RNG states as tensors and plain types (``torch.load(weights_only=True)`` safe)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, py_state, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": int(version), "state": torch.tensor(py_state, dtype=torch.int64),
                   "gauss_next": gauss_next},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what ``rng_state`` returned."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
