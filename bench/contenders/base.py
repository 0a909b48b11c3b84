"""What every contender provides: a ``Contender`` that says whether it is installed and prepares a
``Runner`` for a workload; the runner's ``reset()`` is untimed, its ``run(steps, segments)`` timed."""

from __future__ import annotations

from typing import List, Tuple

import numpy as np

from workloads import Workload


class Runner:
    """One contender prepared for one workload.

    ``reset()`` puts the initial weights back (untimed).  ``run(steps, segments)`` trains from
    there and returns ``(losses, segment_end_times)``: the loss of every step and, when
    ``segments > 1``, ``perf_counter()`` at the end of each of ``segments`` equal stretches of
    steps (only Python-loop runners support segments).  ``weights()`` returns the final weights.
    """

    segmentable = False
    precompiled = False  # True: compiled for the run's length when prepared; one untimed full run, no short warm-ups
    label = ""  # the table's name for this row when it differs from the contender's (another optimizer)
    compare = True  # False: not the reference's training run, so its losses are not compared with it

    def reset(self) -> None:
        raise NotImplementedError

    def run(self, steps: int, segments: int = 1) -> Tuple[np.ndarray, List[float]]:
        raise NotImplementedError

    def weights(self) -> List[np.ndarray]:
        raise NotImplementedError


def segment_bounds(steps: int, segments: int) -> List[Tuple[int, int]]:
    """``segments`` stretches of steps, as equal as whole steps allow: [(first, end), ...]."""
    edges = np.linspace(0, steps, segments + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


class Contender:
    name = ""
    key = ""

    def available(self) -> Tuple[bool, str]:
        """(True, version) or (False, why it is skipped)."""
        return True, ""

    def supports(self, w: Workload) -> bool:
        """Plain SGD only, unless a contender builds other optimizers (``w.opt``)."""
        return w.opt.plain

    def prepare(self, w: Workload) -> Runner:
        raise NotImplementedError
