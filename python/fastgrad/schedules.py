"""Learning-rate schedules with Keras 3's arguments and formulas
(``keras/src/optimizers/schedules/learning_rate_schedule.py``), accepted wherever a learning rate
is.  A schedule maps the optimizer's ``iterations`` (updates made before this one) to the rate of
the next update; the loops compute it in C++ (csrc/optimizer.hpp), in the model's dtype, as Keras
computes it in its float type.  ``schedule(step)`` gives the value in float64.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import numpy as np

from ._validation import positive_float

__all__ = ["LearningRateSchedule", "ExponentialDecay", "InverseTimeDecay", "PiecewiseConstantDecay", "CosineDecay"]


def _number(name: str, v, low: float = -math.inf, low_open: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name}: expected a number, got {type(v).__name__}")
    v = float(v)
    if not math.isfinite(v) or v < low or (low_open and v == low):
        raise ValueError(f"{name}: expected a finite number {'>' if low_open else '>='} {low}, got {v!r}")
    return v


def _steps(name: str, v) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{name}: expected an int, got {type(v).__name__}")
    if v < 0:
        raise ValueError(f"{name}: expected an int >= 0, got {v}")
    return int(v)


class LearningRateSchedule:
    """Base of the schedules."""

    def _native(self) -> Tuple:
        raise NotImplementedError

    def __call__(self, step: int) -> float:
        """The learning rate after ``step`` updates, as the loops compute it (in float64)."""
        from . import _core

        return _core.learning_rate(self._native(), _steps("step", step), True)


class ExponentialDecay(LearningRateSchedule):
    """``initial_learning_rate * decay_rate ** (step / decay_steps)`` (the exponent floored
    with ``staircase``)."""

    def __init__(self, initial_learning_rate: float, decay_steps: float, decay_rate: float,
                 staircase: bool = False) -> None:
        self.initial_learning_rate = positive_float("initial_learning_rate", initial_learning_rate)
        self.decay_steps = _number("decay_steps", decay_steps, 0.0, low_open=True)
        self.decay_rate = _number("decay_rate", decay_rate, 0.0, low_open=True)
        self.staircase = bool(staircase)

    def _native(self) -> Tuple:
        return (1, self.initial_learning_rate, self.decay_steps, self.decay_rate, self.staircase, 0.0, 0.0, 0, [], [])

    def __repr__(self) -> str:
        return (f"ExponentialDecay({self.initial_learning_rate!r}, decay_steps={self.decay_steps!r}, "
                f"decay_rate={self.decay_rate!r}, staircase={self.staircase!r})")


class InverseTimeDecay(LearningRateSchedule):
    """``initial_learning_rate / (1 + decay_rate * step / decay_steps)`` (the ratio floored with
    ``staircase``)."""

    def __init__(self, initial_learning_rate: float, decay_steps: float, decay_rate: float,
                 staircase: bool = False) -> None:
        self.initial_learning_rate = positive_float("initial_learning_rate", initial_learning_rate)
        self.decay_steps = _number("decay_steps", decay_steps, 0.0, low_open=True)
        self.decay_rate = _number("decay_rate", decay_rate, 0.0)
        self.staircase = bool(staircase)

    def _native(self) -> Tuple:
        return (2, self.initial_learning_rate, self.decay_steps, self.decay_rate, self.staircase, 0.0, 0.0, 0, [], [])

    def __repr__(self) -> str:
        return (f"InverseTimeDecay({self.initial_learning_rate!r}, decay_steps={self.decay_steps!r}, "
                f"decay_rate={self.decay_rate!r}, staircase={self.staircase!r})")


class PiecewiseConstantDecay(LearningRateSchedule):
    """``values[0]`` while step <= boundaries[0], ``values[i]`` while boundaries[i-1] < step <=
    boundaries[i], ``values[-1]`` after the last boundary."""

    def __init__(self, boundaries: Sequence[int], values: Sequence[float]) -> None:
        b = [_number(f"boundaries[{i}]", v) for i, v in enumerate(boundaries)]
        if not b or any(x >= y for x, y in zip(b, b[1:])):
            raise ValueError("boundaries: expected a non-empty, increasing list")
        vals = [positive_float(f"values[{i}]", v) for i, v in enumerate(values)]
        if len(vals) != len(b) + 1:
            raise ValueError(f"values: expected one more than the {len(b)} boundaries, got {len(vals)}")
        self.boundaries, self.values = b, vals

    def _native(self) -> Tuple:
        return (3, self.values[0], 0.0, 0.0, False, 0.0, 0.0, 0, list(self.boundaries), list(self.values))

    def __repr__(self) -> str:
        return f"PiecewiseConstantDecay({self.boundaries!r}, {self.values!r})"


class CosineDecay(LearningRateSchedule):
    """Cosine decay from ``initial_learning_rate`` (or, after ``warmup_steps`` of linear warm-up,
    from ``warmup_target``) to ``alpha`` times it over ``decay_steps``:
    ``lr * ((1 - alpha) * 0.5 * (1 + cos(pi * min(step, decay_steps) / decay_steps)) + alpha)``."""

    def __init__(self, initial_learning_rate: float, decay_steps: int, alpha: float = 0.0,
                 warmup_target: Optional[float] = None, warmup_steps: int = 0) -> None:
        self.initial_learning_rate = _number("initial_learning_rate", initial_learning_rate, 0.0)
        self.decay_steps = _steps("decay_steps", decay_steps)
        if self.decay_steps == 0:
            raise ValueError("decay_steps: expected an int >= 1, got 0")
        self.alpha = _number("alpha", alpha, 0.0)
        self.warmup_target = None if warmup_target is None else positive_float("warmup_target", warmup_target)
        self.warmup_steps = _steps("warmup_steps", warmup_steps)
        if self.warmup_target is not None and self.warmup_steps == 0:
            raise ValueError("warmup_steps: expected an int >= 1 with a warmup_target")
        if self.warmup_target is None and self.initial_learning_rate == 0:
            raise ValueError("initial_learning_rate: expected a number > 0 without a warmup_target")

    def _native(self) -> Tuple:
        warm = self.warmup_target is not None
        return (4, self.initial_learning_rate, float(self.decay_steps), 0.0, warm, self.alpha,
                self.warmup_target if warm else 0.0, self.warmup_steps, [], [])

    def __repr__(self) -> str:
        extra = "" if self.warmup_target is None else f", warmup_target={self.warmup_target!r}, " \
                                                      f"warmup_steps={self.warmup_steps!r}"
        return f"CosineDecay({self.initial_learning_rate!r}, decay_steps={self.decay_steps!r}, alpha={self.alpha!r}{extra})"
