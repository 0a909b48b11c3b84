"""Optimizers: the update rule a run applies to each parameter after its gradient, with Keras 3's
update rules exactly (keras-team/keras: ``keras/src/optimizers/sgd.py``, ``adam.py``,
``base_optimizer.py``), in both loops.

One update, as Keras's ``BaseOptimizer.apply`` orders it:

1. clip the gradients: ``clipnorm`` (each gradient to that L2 norm), else ``global_clipnorm`` (all
   of them together), else ``clipvalue`` (each element to [-v, v]); only one may be set;
2. weight decay: ``w <- w - w * weight_decay * lr``;
3. the rule (``SGD.update_step`` / ``Adam.update_step``);
4. ``iterations += 1``.

``lr`` is the learning rate at ``iterations`` (a :mod:`fastgrad.schedules` schedule, or a constant).
The state (``iterations``; momentum, velocities) lives in the optimizer object, as in Keras: a
second ``fit`` with the same optimizer continues where the first ended, a fresh optimizer starts
from zero.  An optimizer with per-parameter state (momentum, Adam) holds it for the first model it
trains; a fit of another model with it is a ValueError (make a new optimizer, or call
``reset()``).  Plain SGD keeps no per-parameter state and may train any model.
"""

from __future__ import annotations

import math
import weakref
from typing import Any, List, Optional, Tuple, Union

import numpy as np

from ._validation import positive_float
from .schedules import LearningRateSchedule

__all__ = ["Optimizer", "SGD", "Adam"]

LearningRate = Union[float, LearningRateSchedule]


def _optional_positive(name: str, v) -> Optional[float]:
    return None if v is None else positive_float(name, v)


def _fraction(name: str, v, low_open: bool = False) -> float:
    """A float in [0, 1) (or (0, 1) with low_open)."""
    if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name}: expected a number in [0, 1), got {type(v).__name__}")
    v = float(v)
    if not (0.0 < v < 1.0 if low_open else 0.0 <= v < 1.0):
        raise ValueError(f"{name}: expected a number in {'(0' if low_open else '[0'}, 1), got {v!r}")
    return v


class Optimizer:
    """Base of the optimizers: the learning rate (a positive float or a schedule), weight decay,
    one kind of gradient clipping, and the state (``iterations`` and the slots)."""

    #: csrc/optimizer.hpp OptKind
    _kind = -1

    def __init__(self, learning_rate: LearningRate, weight_decay: Optional[float] = None,
                 clipnorm: Optional[float] = None, clipvalue: Optional[float] = None,
                 global_clipnorm: Optional[float] = None, l2: Optional[float] = None) -> None:
        self.learning_rate = _check_learning_rate(learning_rate)
        # coupled L2 (not a Keras option): l2 * w added to each kernel's gradient before the
        # update, as scikit-learn's alpha / batch size (fastgrad.sklearn uses it)
        self.l2 = None if l2 is None else _nonneg("l2", l2)
        self.weight_decay = None if weight_decay is None else _nonneg("weight_decay", weight_decay)
        self.clipnorm = _optional_positive("clipnorm", clipnorm)
        self.clipvalue = _optional_positive("clipvalue", clipvalue)
        self.global_clipnorm = _optional_positive("global_clipnorm", global_clipnorm)
        if sum(c is not None for c in (self.clipnorm, self.clipvalue, self.global_clipnorm)) > 1:
            raise ValueError("clipnorm, clipvalue, global_clipnorm: expected at most one of them (as Keras)")
        self.reset()

    def reset(self) -> None:
        """Back to the start: iterations 0, no slots, bound to no model."""
        self.iterations = 0
        self._slots: Optional[List[List[np.ndarray]]] = None  # per slot kind, one array per parameter
        self._model_ref: Optional[weakref.ref] = None

    @property
    def variables(self) -> List[np.ndarray]:
        """The optimizer's state arrays (the slots, as Keras's ``optimizer.variables`` less
        ``iterations``)."""
        return [a for kind in (self._slots or []) for a in kind]

    # ---- what fit asks -------------------------------------------------------------------------
    def _slot_kinds(self) -> int:
        """How many arrays of state each parameter needs (0: none)."""
        return 0

    def _plain(self) -> bool:
        """Plain SGD at a constant rate: the fused update of the fast paths applies."""
        return False

    def _check_state_for(self, model: Any, params: Optional[List[np.ndarray]]) -> None:
        """Before anything changes: the slots, when there are any, are for this model (params:
        its parameters, None while it is unbuilt)."""
        if not self._slot_kinds() or self._slots is None:
            return
        # (an unpickled optimizer is bound to no model: its slots go to the first that fits them)
        bound = self._model_ref() if self._model_ref is not None else model
        same = bound is model and (params is None or len(self._slots[0]) == len(params) and all(
            s.shape == p.shape and s.dtype == p.dtype for s, p in zip(self._slots[0], params)))
        if not same:
            raise ValueError(
                f"optimizer: this {type(self).__name__} holds the momentum/velocity state of another model "
                "(or of this model at other shapes or dtype); use a new optimizer for this model, or call "
                "optimizer.reset() to start it from zero")

    def _slots_for(self, model: Any, params: List[np.ndarray]) -> List[List[np.ndarray]]:
        """The slot arrays (zeros the first time), bound to ``model``."""
        if self._slot_kinds() and self._slots is None:
            self._slots = [[np.zeros_like(p) for p in params] for _ in range(self._slot_kinds())]
        if self._slots is not None and self._model_ref is None:
            self._model_ref = weakref.ref(model)
        return self._slots or []

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_model_ref"] = None  # a weak reference does not pickle; the model is bound again on use
        return state

    def _native_config(self) -> Tuple:
        """(kind, (momentum, nesterov, weight_decay, clipnorm, clipvalue, global_clipnorm, beta_1,
        beta_2, epsilon, amsgrad), schedule) for the compiled loops; -1 stands for None."""
        raise NotImplementedError

    def _common(self) -> Tuple[float, float, float, float]:
        return _n(self.weight_decay), _n(self.clipnorm), _n(self.clipvalue), _n(self.global_clipnorm)

    def _rate_config(self) -> Tuple:
        lr = self.learning_rate
        if isinstance(lr, LearningRateSchedule):
            return lr._native()
        return (0, float(lr))

    def __repr__(self) -> str:
        args = [f"learning_rate={self.learning_rate!r}"]
        for name in self._shown():
            v = getattr(self, name)
            if v != _DEFAULTS.get(name):
                args.append(f"{name}={v!r}")
        return f"{type(self).__name__}({', '.join(args)})"

    def _shown(self) -> Tuple[str, ...]:
        return ("weight_decay", "clipnorm", "clipvalue", "global_clipnorm", "l2")


def _n(v) -> float:
    return -1.0 if v is None else float(v)


_DEFAULTS = {"l2": None, "momentum": 0.0, "nesterov": False, "weight_decay": None, "clipnorm": None, "clipvalue": None,
             "global_clipnorm": None, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7, "amsgrad": False}


def _nonneg(name: str, v) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name}: expected a non-negative number, got {type(v).__name__}")
    v = float(v)
    if not (v >= 0 and math.isfinite(v)):
        raise ValueError(f"{name}: expected a finite number >= 0, got {v!r}")
    return v


def _check_learning_rate(lr) -> LearningRate:
    if isinstance(lr, LearningRateSchedule):
        return lr
    if isinstance(lr, type) and issubclass(lr, LearningRateSchedule):
        raise TypeError(f"learning_rate: expected a schedule, got the class {lr.__name__}; make one")
    return positive_float("learning_rate", lr)


class SGD(Optimizer):
    """Stochastic gradient descent, as Keras 3's ``keras.optimizers.SGD`` (``sgd.py``
    ``update_step``): with ``momentum`` m,

        velocity <- m * velocity - lr * grad
        w <- w + velocity                                   (nesterov=False)
        w <- w + m * velocity - lr * grad                   (nesterov=True)

    and without it ``w <- w - lr * grad`` (the walkthrough's rule).
    """

    _kind = 0

    def __init__(self, learning_rate: LearningRate = 0.01, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: Optional[float] = None, clipnorm: Optional[float] = None,
                 clipvalue: Optional[float] = None, global_clipnorm: Optional[float] = None,
                 l2: Optional[float] = None) -> None:
        self.momentum = _fraction("momentum", momentum)
        if not isinstance(nesterov, (bool, np.bool_)):
            raise TypeError(f"nesterov: expected a bool, got {type(nesterov).__name__}")
        self.nesterov = bool(nesterov)
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, l2)

    def _slot_kinds(self) -> int:
        return 1 if self.momentum != 0 else 0

    def _plain(self) -> bool:
        return (self.momentum == 0 and self.weight_decay is None and self.clipnorm is None
                and self.clipvalue is None and self.global_clipnorm is None and self.l2 is None
                and not isinstance(self.learning_rate, LearningRateSchedule))

    def _native_config(self) -> Tuple:
        wd, cn, cv, gcn = self._common()
        return (0, (float(self.momentum), bool(self.nesterov), wd, cn, cv, gcn, 0.0, 0.0, 0.0, False, _n(self.l2)),
                self._rate_config())

    def _shown(self) -> Tuple[str, ...]:
        return ("momentum", "nesterov") + super()._shown()


class Adam(Optimizer):
    """Adam, as Keras 3's ``keras.optimizers.Adam`` (``adam.py`` ``update_step``), at step
    t = iterations + 1:

        alpha = lr * sqrt(1 - beta_2**t) / (1 - beta_1**t)
        m <- m + (grad - m) * (1 - beta_1);   v <- v + (grad**2 - v) * (1 - beta_2)
        v_hat <- max(v_hat, v) and v <- v_hat                (amsgrad=True)
        w <- w - (m * alpha) / (sqrt(v) + epsilon)

    (epsilon outside the square root and the bias correction folded into alpha, as Keras has them).
    """

    _kind = 1

    def __init__(self, learning_rate: LearningRate = 0.001, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-7, amsgrad: bool = False, weight_decay: Optional[float] = None,
                 clipnorm: Optional[float] = None, clipvalue: Optional[float] = None,
                 global_clipnorm: Optional[float] = None, l2: Optional[float] = None) -> None:
        self.beta_1 = _fraction("beta_1", beta_1)
        self.beta_2 = _fraction("beta_2", beta_2)
        self.epsilon = positive_float("epsilon", epsilon)
        if not isinstance(amsgrad, (bool, np.bool_)):
            raise TypeError(f"amsgrad: expected a bool, got {type(amsgrad).__name__}")
        self.amsgrad = bool(amsgrad)
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, l2)

    def _slot_kinds(self) -> int:
        return 3 if self.amsgrad else 2  # momentums, velocities (, velocity_hats)

    def _native_config(self) -> Tuple:
        wd, cn, cv, gcn = self._common()
        return (1, (0.0, False, wd, cn, cv, gcn, float(self.beta_1), float(self.beta_2), float(self.epsilon),
                    bool(self.amsgrad), _n(self.l2)), self._rate_config())

    def _shown(self) -> Tuple[str, ...]:
        return ("beta_1", "beta_2", "epsilon", "amsgrad") + super()._shown()
