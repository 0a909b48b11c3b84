"""Stopping rules for :func:`fastgrad.fit`.

After every step ``fit`` asks each rule whether to stop; the first that answers True names
the reason (``result.stopped_by``).  A rule sees a :class:`StepState`.

A custom rule is any callable ``rule(state) -> bool`` (a Python or NumPy bool: any other answer,
such as ``"no"`` or NaN, which would read as true, is a TypeError naming the rule); its ``name``
attribute (or, for a function, its ``__name__``) becomes ``stopped_by``.  A rule with state of its own may define
``reset()``, which ``fit`` calls before the first step.  Custom rules run in the Python loop.

Note on the walkthrough: its E4–E6 loops test ``tf.abs(L_t, L_{t-1}) <= margin``, which
TensorFlow reads as ``|L_t| <= margin`` (the second argument is the op's *name*): that is
:class:`LossBelow`, not :class:`LossDelta`.  E7 and E8 test ``tf.abs(L_t - L_{t-1})``:
:class:`LossDelta`.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

from ._validation import nonneg_float, positive_int

__all__ = ["StepState", "Rule", "WeightDelta", "LossDelta", "LossBelow", "Plateau", "MaxSteps", "MaxEpochs",
           "rule_name", "MAX_COUNT", "MONITORS"]

#: what LossDelta, LossBelow and Plateau may watch: each step's batch loss, or the validation loss
MONITORS = ("loss", "val_loss")

#: the largest step count or patience a rule takes (the native loop counts steps in 64 bits)
MAX_COUNT = 2**62


def _monitor(monitor: str) -> str:
    if monitor not in MONITORS:
        raise ValueError(f"monitor: expected 'loss' or 'val_loss', got {monitor!r}")
    return monitor


def count(name: str, v: int) -> int:
    """A positive int of at most MAX_COUNT (a step count or a patience)."""
    if type(v) is int and 0 < v <= MAX_COUNT:
        return v  # the common case in one test (fit checks its rules on every call)
    v = positive_int(name, v)
    if v > MAX_COUNT:
        raise ValueError(f"{name}: expected at most 2**62, got {v!r}")
    return v


class StepState:
    """What a stopping rule or callback sees after step ``step``.

    step : updates made so far (1 after the first step).
    loss : the loss of this step's batch, before this step's update.
    prev_loss : the previous step's batch loss (None at step 1).
    grad_norm : the global L2 norm of this step's gradient.
    weight_delta : max |θ_t − θ_{t−1}| over every parameter.
    model : the model, holding the weights after this step's update.
    val_loss : the validation loss after this step's update, when the run validated after this
        step (``fit(..., validation_data=...)``), else None.
    epoch_steps : the steps in an epoch of this run (ceil(samples / batch); 1 for full batch).
    learning_rate : the learning rate of this step's update.
    """

    __slots__ = ("step", "loss", "prev_loss", "grad_norm", "weight_delta", "model", "val_loss", "epoch_steps",
                 "learning_rate")

    def __init__(self, step: int, loss: float, prev_loss: Optional[float], grad_norm: float,
                 weight_delta: float, model: Any = None, val_loss: Optional[float] = None,
                 epoch_steps: int = 1, learning_rate: Optional[float] = None) -> None:
        self.step = step
        self.loss = loss
        self.prev_loss = prev_loss
        self.grad_norm = grad_norm
        self.weight_delta = weight_delta
        self.model = model
        self.val_loss = val_loss
        self.epoch_steps = epoch_steps
        self.learning_rate = learning_rate

    def __repr__(self) -> str:
        return (f"StepState(step={self.step}, loss={self.loss!r}, prev_loss={self.prev_loss!r}, "
                f"grad_norm={self.grad_norm!r}, weight_delta={self.weight_delta!r}, val_loss={self.val_loss!r})")


class Rule:
    """Base of the built-in rules.  ``name`` is what ``stopped_by`` reports."""

    name = "rule"

    def reset(self) -> None:  # pragma: no cover - stateless rules need nothing
        pass

    def __call__(self, state: StepState) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError


class WeightDelta(Rule):
    """Stop when ``max |θ_t − θ_{t−1}| <= tol`` over all parameters (E1's rule)."""

    name = "weight_delta"

    def __init__(self, tol: float) -> None:
        self.tol = nonneg_float("tol", tol)

    def __call__(self, state: StepState) -> bool:
        return state.weight_delta <= self.tol

    def __repr__(self) -> str:
        return f"WeightDelta({self.tol!r})"


def _monitor_repr(rule) -> str:
    return "" if rule.monitor == "loss" else f", monitor={rule.monitor!r}"


class LossDelta(Rule):
    """Stop when ``|L_t − L_{t−1}| <= tol`` (needs two steps).

    On a stochastic (minibatch) loss this can fire by chance far from the minimum: two
    batches of similar loss are enough.  Prefer :class:`Plateau` or :class:`LossBelow` there.
    ``monitor="val_loss"``: the same test on consecutive validation losses (the one before
    training excluded), made only after the steps that validate.
    """

    name = "loss_delta"

    def __init__(self, tol: float, monitor: str = "loss") -> None:
        self.tol = nonneg_float("tol", tol)
        self.monitor = _monitor(monitor)
        self.reset()

    def reset(self) -> None:
        self.prev: Optional[float] = None  # the previous validation loss (monitor="val_loss")

    def __call__(self, state: StepState) -> bool:
        if self.monitor == "loss":
            return state.prev_loss is not None and abs(state.loss - state.prev_loss) <= self.tol
        v = state.val_loss
        if v is None:
            return False
        fires = self.prev is not None and abs(v - self.prev) <= self.tol
        self.prev = v
        return fires

    def __repr__(self) -> str:
        return f"LossDelta({self.tol!r}{_monitor_repr(self)})"


class LossBelow(Rule):
    """Stop when ``L_t <= tol`` (what the walkthrough's ``tf.abs(L_t, L_{t-1}) <= margin`` tests);
    with ``monitor="val_loss"``, when a validation loss is."""

    name = "loss_below"

    def __init__(self, tol: float, monitor: str = "loss") -> None:
        self.tol = nonneg_float("tol", tol)
        self.monitor = _monitor(monitor)

    def __call__(self, state: StepState) -> bool:
        if self.monitor == "loss":
            return state.loss <= self.tol
        return state.val_loss is not None and state.val_loss <= self.tol

    def __repr__(self) -> str:
        return f"LossBelow({self.tol!r}{_monitor_repr(self)})"


class Plateau(Rule):
    """Stop when the best loss seen has not improved by more than ``tol`` for ``patience`` steps.

    A step improves when ``L_t < best − tol``; then ``best = L_t`` and the count restarts.
    Robust to noisy minibatch losses, unlike :class:`LossDelta`.  ``monitor="val_loss"``
    watches the validation loss instead (Keras's ``EarlyStopping(monitor="val_loss")``), and
    ``patience`` counts validations, not steps.
    """

    name = "plateau"

    def __init__(self, tol: float, patience: int, monitor: str = "loss") -> None:
        self.tol = nonneg_float("tol", tol)
        self.patience = count("patience", patience)
        self.monitor = _monitor(monitor)
        self.reset()

    def reset(self) -> None:
        self.best = math.inf
        self.wait = 0

    def __call__(self, state: StepState) -> bool:
        value = state.loss if self.monitor == "loss" else state.val_loss
        if value is None:
            return False
        if value < self.best - self.tol:
            self.best = value
            self.wait = 0
            return False
        self.wait += 1
        return self.wait >= self.patience

    def __repr__(self) -> str:
        return f"Plateau({self.tol!r}, patience={self.patience!r}{_monitor_repr(self)})"


class MaxSteps(Rule):
    """Stop after ``n`` updates."""

    name = "max_steps"

    def __init__(self, n: int) -> None:
        self.n = count("n", n)

    def __call__(self, state: StepState) -> bool:
        return state.step >= self.n

    def __repr__(self) -> str:
        return f"MaxSteps({self.n!r})"


class MaxEpochs(Rule):
    """Stop after ``n`` epochs of ``ceil(samples / batch)`` steps each (full batch: n steps)."""

    name = "max_epochs"

    def __init__(self, n: int) -> None:
        self.n = count("n", n)

    def __call__(self, state: StepState) -> bool:
        return state.step >= self.n * state.epoch_steps

    def __repr__(self) -> str:
        return f"MaxEpochs({self.n!r})"


def rule_name(rule: Callable[[StepState], bool]) -> str:
    """The name ``stopped_by`` reports for ``rule``."""
    name = getattr(rule, "name", None)
    if isinstance(name, str):
        return name
    return getattr(rule, "__name__", type(rule).__name__)
