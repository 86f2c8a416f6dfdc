"""Which samples each rank sees at each step: a pure function of (seed, step, rank).

``StepSampler`` is the DistributedSampler of this harness, made step-addressable
so that resuming needs nothing but the step number. Conceptually the data is an
endless stream of epochs, each a seeded permutation of ``range(num_samples)``;
step ``s`` takes the ``s``-th window of ``batch_size * world_size`` items from
that stream and rank ``r`` keeps its own contiguous slice. Windows may straddle
an epoch boundary, so every sample is seen once per epoch whatever the batch
size, and a dataset smaller than one global batch still works.

Example::

    sampler = StepSampler(num_samples=10, batch_size=4, seed=0)
    sampler.indices(0)   # array of 4 distinct indices in [0, 10)
    sampler.epoch(5)     # 2  (steps 0-1 are epoch 0, step 2 straddles 0/1, ...)
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from baselines.common.seeding import mix_seed


class StepSampler:
    """Deterministic per-step, per-rank indices (see the module docstring).

    Args:
        num_samples: dataset size.
        batch_size: per-rank batch size.
        seed: run seed; epoch ``e`` is ``permutation(seed, e)``.
        rank, world_size: this process's slice of every global batch.
    """

    def __init__(self, num_samples: int, batch_size: int, *, seed: int, rank: int = 0, world_size: int = 1) -> None:
        if num_samples <= 0:
            raise ValueError("StepSampler needs at least one sample")
        if batch_size <= 0 or not 0 <= rank < world_size:
            raise ValueError(f"bad batch_size={batch_size} / rank={rank} / world_size={world_size}")
        self.num_samples, self.batch_size, self.seed = num_samples, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self._perm = lru_cache(maxsize=4)(self._permutation)

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world_size

    def steps_per_epoch(self) -> float:
        return self.num_samples / self.global_batch

    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng(mix_seed(self.seed, epoch, 0x5A3)).permutation(self.num_samples)

    def epoch(self, step: int) -> int:
        """The epoch in which step ``step``'s global batch starts."""
        return step * self.global_batch // self.num_samples

    def indices(self, step: int) -> np.ndarray:
        """This rank's ``(batch_size,)`` int64 sample indices for ``step``."""
        start = step * self.global_batch + self.rank * self.batch_size
        positions = np.arange(start, start + self.batch_size, dtype=np.int64)
        epochs, offsets = np.divmod(positions, self.num_samples)
        out = np.empty(self.batch_size, dtype=np.int64)
        for e in np.unique(epochs):
            m = epochs == e
            out[m] = self._perm(int(e))[offsets[m]]
        return out

    def state_dict(self) -> dict:
        """What must match on resume (the position itself is the step number)."""
        return {"num_samples": self.num_samples, "batch_size": self.batch_size, "seed": self.seed,
                "world_size": self.world_size}

    def load_state_dict(self, state: dict) -> None:
        """Refuse to resume on different data or a different global batch (it would not be exact)."""
        mine = self.state_dict()
        diff = {k: (state.get(k), v) for k, v in mine.items() if state.get(k) != v}
        if diff:
            raise ValueError(f"cannot resume: sampler changed (checkpoint, now): {diff}")
