"""What every experiment module shares: the :class:`Experiment` it returns, the replay measure
:func:`max_deviation`, the one-weight model of E1-E5, and the number formats of the stories."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, Generic, Sequence, TypeVar

import numpy as np

import fastgrad as fg

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    from ..results import FitResult, History

__all__ = ["Experiment", "max_deviation", "one_weight", "steps_arg", "g", "exact_list", "vec"]

F = TypeVar("F")


@dataclass
class Experiment(Generic[F]):
    """One experiment's outcome.

    id, title : "E4" and what the experiment shows.
    facts : the figures the story prints, a dataclass of the experiment's own (``E4Facts`` ...).
    results : the fit results by run name ("run" is the experiment's main run).
    data : the ``x`` and ``y`` the runs trained on.
    models : the trained models by run name, where the story needs them.
    """

    id: str
    title: str
    facts: F
    results: Dict[str, "FitResult"] = field(default_factory=dict)
    data: Dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    models: Dict[str, Any] = field(default_factory=dict, repr=False)


def max_deviation(result: "FitResult", tf_history: "History", y: Any) -> Dict[str, float]:
    """How far a run and its TensorFlow replay drift apart, as relative figures.

    ``weights``: max over recorded steps and elements of |ours − TF|, relative to the largest
    |TF value| of that parameter over the run (the parameter's scale).
    ``loss``: max over steps of |√L_t − √L^TF_t| (the RMS residual, in the units of y),
    relative to the RMS of ``y``.
    ``loss_strict``: max over steps of |L_t − L^TF_t| / |L^TF_t|.  Shown for completeness: once
    a loss is a small difference of large numbers (or reaches 0, as noise-free data allows)
    this ratio measures rounding in the cancellation, not disagreement between the two; it is
    not a useful bound in float32 (nor, near 0, in float64).

    Only the steps where both runs are finite are compared (a run that diverged, up to where it
    did); a figure with no such step is NaN, never 0.  ``tf_history`` must have the run's steps
    (``fastgrad.oracle.replay(result, x, y)``), and its weights when the run recorded them.
    """
    tiny = np.finfo(np.float64).tiny
    ours, theirs = np.asarray(result.history.loss, np.float64), np.asarray(tf_history.loss, np.float64)
    if ours.shape != theirs.shape:
        raise ValueError(f"tf_history: expected the run's {len(ours)} steps, got {len(theirs)}")
    if result.history.weights is not None and tf_history.weights is None:
        raise ValueError("tf_history: expected recorded weights, as the run has (oracle.replay records them)")
    y = np.asarray(y, dtype=np.float64)
    out = {"loss": 0.0, "loss_strict": 0.0, "weights": 0.0}
    both = np.isfinite(ours) & np.isfinite(theirs)
    if len(ours):
        if not both.any():
            out["loss"] = out["loss_strict"] = float("nan")
        else:
            o, t = ours[both], theirs[both]
            out["loss"] = float(np.abs(np.sqrt(o) - np.sqrt(t)).max() / max(np.sqrt(np.mean(y**2)), tiny))
            out["loss_strict"] = float((np.abs(o - t) / np.maximum(np.abs(t), tiny)).max())
    if result.history.weights is not None:
        rows = result.history.weight_steps
        for w_ours, w_tf in zip(result.history.weights, tf_history.weights):
            a = w_ours.reshape(len(w_ours), -1).astype(np.float64)
            b = w_tf[rows].reshape(len(rows), -1).astype(np.float64)
            fine = np.isfinite(a).all(axis=1) & np.isfinite(b).all(axis=1)
            if not fine.any():
                out["weights"] = float("nan")
                break
            scale = max(float(np.abs(b[fine]).max()), tiny)
            out["weights"] = max(out["weights"], float(np.abs(a[fine] - b[fine]).max() / scale))
    return out


def one_weight(w0: float = 2.0, dtype: str = "float32") -> fg.Dense:
    """The walkthrough's first model: ``Dense(1, use_bias=False)`` holding the one weight ``w0``."""
    layer = fg.Dense(1, use_bias=False, dtype=dtype)
    layer.set_weights([np.array([[w0]])])
    return layer


def steps_arg(steps: Any) -> int:
    """``steps`` as a run length, from 1 to ``fastgrad.stop.MAX_COUNT``; else TypeError or
    ValueError naming the argument."""
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral):
        raise TypeError(f"steps: expected a positive int, got {steps!r}")
    if not 0 < steps <= fg.stop.MAX_COUNT:
        raise ValueError(f"steps: expected a positive int of at most 2**62, got {steps!r}")
    return int(steps)


def g(v: float, digits: int = 4) -> str:
    """A short number: 0, 1.5, 2.6e-04, 6.959e+04."""
    v = float(v)
    if v == 0:
        return "0"
    if not math.isfinite(v):
        return str(v)
    return f"{v:.{digits}g}"


def exact_list(values: Sequence[float]) -> str:
    """Exact floats, as Python writes them: [2.0, 1.5, 1.25]."""
    return "[" + ", ".join(repr(float(v)) for v in values) + "]"


def vec(values: Sequence[float], digits: int = 4) -> str:
    """Fixed-point numbers: [3.0000, 2.0000]."""
    return "[" + ", ".join(f"{float(v):.{digits}f}" for v in values) + "]"
