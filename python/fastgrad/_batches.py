"""The batch indices of a run, drawn in C++ from its seed (private: fit draws them, and
``history.batches`` records them)."""

from __future__ import annotations

import numpy as np

from . import _core
from ._validation import nonneg_seed, positive_int

SAMPLINGS = ("random", "shuffle")
#: the most samples BatchStream draws from (a shuffle keeps a permutation of all of them)
MAX_SAMPLES = 2**48


def check_sampling(sampling) -> None:
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling: expected one of {SAMPLINGS}, got {sampling!r}")


class BatchStream:
    """The batch indices of a run, drawn from ``seed``.

    The draws are made in C++ (``csrc/sampler.hpp``): a xoshiro256** generator whose state is
    NumPy's ``SeedSequence(seed)``, exact bounded integers, and

    * ``sampling="random"``: every step draws ``batch_size`` distinct indices anew (Floyd's
      algorithm, or a partial Fisher-Yates shuffle for batches over 64);
    * ``"shuffle"``: each epoch is a fresh permutation cut into ``n // batch_size`` batches (a
      remainder of fewer than ``batch_size`` samples is left out of that epoch; it differs from
      epoch to epoch).

    Both loops draw from it in the same order, so a seed gives the same batches to both, and
    every run records its batches (``history.batches``) for replays.
    """

    #: chunk sizes (in steps) handed to the Python loop: they start small, so a short run draws
    #: little, and double up to MAX_CHUNK_STEPS.  The stream does not depend on them.
    FIRST_CHUNK_STEPS = 64
    MAX_CHUNK_STEPS = 8192

    def __init__(self, n: int, batch_size: int, sampling: str, seed: int) -> None:
        n = positive_int("n", n)
        if n > MAX_SAMPLES:
            raise ValueError(f"n: expected at most 2**48 samples, got {n}")
        batch_size = positive_int("batch_size", batch_size)
        if batch_size > n:
            raise ValueError(f"batch_size: expected at most n = {n}, got {batch_size}")
        check_sampling(sampling)
        seed = nonneg_seed("seed", seed, allow_none=False)
        self.n, self.k, self.sampling = n, batch_size, sampling
        self.sampler = sampler(n, batch_size, sampling, seed)
        self._cap = max(1, self.MAX_CHUNK_STEPS // batch_size)
        self._next = min(self.FIRST_CHUNK_STEPS, self._cap)

    def next_chunk(self) -> np.ndarray:
        """The next (steps, batch_size) int64 block of indices."""
        s = self._next
        self._next = min(2 * s, self._cap)
        out = np.empty((s, self.k), dtype=np.int64)
        self.sampler.fill(out)
        return out


def sampler(n: int, k: int, sampling: str, seed: int) -> _core.Sampler:
    """The C++ sampler of a run: its generator starts at NumPy's ``SeedSequence(seed)`` state."""
    if seed < 2**64:  # the state computed in C++ (NumPy's SeedSequence costs 20 µs)
        return _core.Sampler.from_seed(seed, n, k, sampling == "shuffle")
    state = np.random.SeedSequence(seed).generate_state(4, dtype=np.uint64)
    return _core.Sampler(state, n, k, sampling == "shuffle")
