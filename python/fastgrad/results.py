"""What a run returns: :class:`FitResult` and its :class:`History`, and the divergence signals.

``History.to_dataframe`` and ``FitResult.plot`` import :mod:`fastgrad.plotting` when called
(matplotlib and pandas are optional); plotting imports these types only to annotate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import gcd
from typing import TYPE_CHECKING, Any, List, Optional, Tuple

import numpy as np

from . import _core
from ._validation import aligned
from .ops import ACTIVATIONS

if TYPE_CHECKING:
    import pandas
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["FitResult", "History", "DivergenceWarning", "DivergenceError"]


class DivergenceWarning(RuntimeWarning):
    """A run stopped because its loss, a gradient or a weight became NaN or infinite."""


class DivergenceError(ArithmeticError):
    """Raised by ``fit(..., on_divergence="raise")``; ``.result`` holds the partial run."""

    def __init__(self, message: str, result: FitResult) -> None:
        super().__init__(message)
        self.result = result

    def __reduce__(self):  # both arguments, so that it pickles (multiprocessing sends it back)
        return (type(self), (str(self), self.result))


@dataclass(eq=False)  # compared by identity: its fields are arrays
class History:
    """What happened at every step.

    loss : (steps,) the loss of step t's batch, before step t's update.
    grad_norm : (steps,) the global L2 norm of step t's gradient.
    batches : (steps, batch) the sample indices step t used; None for full batch.
    weights : one array per parameter (get_weights() order), (recorded, *shape); row 0 is
        the initial weights; None when weights were not recorded.
    weight_steps : (recorded,) the step after which each row of ``weights`` was taken.
    val_loss : (k,) the MSE on the validation data (``fit(..., validation_data=...)``): entry 0
        at the initial weights, then after every ``validate_every``-th step and after the last;
        None without validation data.
    val_steps : (k,) the step after which each validation loss was computed (0: before training).
    learning_rate : (steps,) the learning rate of each step's update, when it changes (a
        schedule); None for a constant rate.
    """

    loss: np.ndarray
    grad_norm: np.ndarray
    batches: Optional[np.ndarray]
    weights: Optional[List[np.ndarray]] = None
    weight_steps: Optional[np.ndarray] = None
    val_loss: Optional[np.ndarray] = None
    val_steps: Optional[np.ndarray] = None
    learning_rate: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return len(self.loss)

    def to_dataframe(self) -> pandas.DataFrame:
        """One row per step: loss, grad_norm, the batch indices (minibatch runs) and each recorded
        weight element after the step; needs pandas (see fastgrad.plotting.history_to_dataframe)."""
        from .plotting import history_to_dataframe

        return history_to_dataframe(self)


@dataclass(eq=False)  # compared by identity: its fields are arrays
class FitResult:
    """The outcome of :func:`fastgrad.fit`.

    stopped_by : "weight_delta" | "loss_delta" | "loss_below" | "plateau" | "max_steps" |
        "diverged" | "interrupted" | "max_epochs" | "batches_exhausted" (explicit batches ran out) |
        the name of a custom rule.
    steps : the number of updates made.
    final_loss : MSE on all of (x, y) at the final weights (computed on first access, from a
        copy of the final weights: a full pass over the data is paid only when asked for).
        Data of up to 4,096 elements (x and y together) is copied for it; larger data is kept
        by reference, so change it only after reading final_loss (a change to the 4,096
        elements of each array that are sampled, spread over every column, raises a
        RuntimeError; a change elsewhere is not seen).
    final_weights : copies of the weights the run ended with (get_weights() order).
    history : a :class:`History`.
    batch_size, sampling : the batches the run drew ("random" or "shuffle"); both None for a
        full-batch run.
    divergence : the divergence message, when ``stopped_by == "diverged"``.
    samples : the number of samples (rows of x) the run trained on.
    best_step : with ``restore_best=True``, the step after which the weights the run ended on
        were taken (the best monitored value); None otherwise, or when no step qualified.
    optimizer : the optimizer as the run started: ``{"class", "config" (Keras's argument names),
        "learning_rate" (a float, or {"class", "config"} of a schedule), "iterations"}``, what
        ``fastgrad.oracle.replay`` configures Keras's optimizer from.
    learning_rate : the rate of the first step.
    """

    stopped_by: str
    steps: int
    final_weights: List[np.ndarray] = field(repr=False)
    history: History
    seed: int
    learning_rate: float
    batch_size: Optional[int]
    sampling: Optional[str]
    dtype: str
    initial_weights: List[np.ndarray] = field(repr=False)
    model_spec: List[Tuple[str, bool]] = field(repr=False)
    divergence: Optional[str] = None
    seconds: float = 0.0
    loop: str = "python"
    samples: Optional[int] = None
    best_step: Optional[int] = None
    optimizer: Optional[dict] = field(default=None, repr=False)
    _data: Any = field(default=None, repr=False, compare=False)
    _final_loss: Optional[float] = field(default=None, repr=False, compare=False)

    @property
    def final_loss(self) -> float:
        if self._final_loss is None:
            x, y = _kept_data(self._data)
            self._final_loss = _loss_at(self.model_spec, self.final_weights, x, y)
            self._data = None  # the data is no longer held once the loss is known
        return self._final_loss

    def _final_loss_or_none(self) -> Optional[float]:
        """final_loss, or None when it cannot be computed (the data changed since the run)."""
        try:
            return self.final_loss
        except RuntimeError:
            return None

    def _summary(self) -> List[Tuple[str, str]]:
        """(label, value) rows of what a reader checks first: why and when it stopped, the loss
        at the start and the end, the validation loss, the time."""
        loss = self._final_loss_or_none()
        h = self.history
        rows = [("stopped by", self.stopped_by), ("steps", f"{self.steps:,}")]
        if len(h.loss):
            rows.append(("batch loss, first → last step", f"{h.loss[0]:.6g} → {h.loss[-1]:.6g}"))
        rows.append(("final loss (all of x)", "? (the data changed since the run)" if loss is None else f"{loss:.6g}"))
        if h.val_loss is not None and len(h.val_loss):
            rows.append(("validation loss, before → after", f"{h.val_loss[0]:.6g} → {h.val_loss[-1]:.6g}"))
        if self.best_step is not None:
            rows.append(("weights of step (restore_best)", f"{self.best_step:,}"))
        rows.append(("time", f"{self.seconds:.3g} s ({self.loop} loop)"))
        return rows

    def __repr__(self) -> str:
        loss = self._final_loss_or_none()
        shown = "? (the data changed since the run)" if loss is None else repr(loss)
        extra = ""
        if self.history.val_loss is not None and len(self.history.val_loss):
            extra += f", val_loss={float(self.history.val_loss[-1])!r}"
        if self.best_step is not None:
            extra += f", best_step={self.best_step}"
        first = f", first_loss={float(self.history.loss[0])!r}" if len(self.history.loss) else ""
        return (f"FitResult(stopped_by={self.stopped_by!r}, steps={self.steps}{first}, final_loss={shown}{extra}, "
                f"loop={self.loop!r}, seconds={self.seconds:.3g})")

    def _repr_html_(self) -> str:
        """The summary as a small table, for notebooks."""
        import html

        cells = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th><td style='text-align:left'>"
                        f"{html.escape(v)}</td></tr>" for k, v in self._summary())
        return f"<table><caption style='text-align:left'><b>fastgrad FitResult</b></caption>{cells}</table>"

    def plot(self, ax: Optional[Axes] = None) -> Figure:
        """Loss, gradient norm (and weights, when recorded) per step, with matplotlib."""
        from .plotting import plot_result

        return plot_result(self, ax=ax)


# FitResult.final_loss needs the (x, y) the run trained on.  Small data (up to KEEP_COPY_ELEMENTS
# elements in x and y together, the walkthrough's sizes) is copied: later changes to the caller's
# arrays cannot reach the copy.  Larger data is kept by reference (a copy would cost memory and
# time on every run: a sweep keeps many results), with at most KEEP_SAMPLE elements of each array,
# spread over every column, to see a change.  The kept data: a tuple (x, y, sample or None).
KEEP_COPY_ELEMENTS = 4096
KEEP_SAMPLE = 4096


def _keep_data(x: np.ndarray, y: np.ndarray) -> tuple:
    if x.size + y.size <= KEEP_COPY_ELEMENTS:
        return x.copy(), y.copy(), None
    return x, y, _data_sample(x, y)


def _sample_stride(size: int, width: int) -> int:
    """A stride that takes at most KEEP_SAMPLE elements of ``size`` and visits every one of the
    ``width`` columns (a stride sharing a factor with the width would skip some)."""
    stride = max(1, -(-size // KEEP_SAMPLE))
    while stride > 1 and gcd(stride, width) != 1:
        stride += 1
    return stride


def _data_sample(x: np.ndarray, y: np.ndarray) -> Tuple[bytes, bytes]:
    out = []
    for a in (x, y):
        flat = a.reshape(-1)  # a view: fit's arrays are C-contiguous
        out.append(flat[:: _sample_stride(flat.size, a.shape[-1])].tobytes())
    return out[0], out[1]


def _kept_data(kept: tuple) -> Tuple[np.ndarray, np.ndarray]:
    x, y, sample = kept if len(kept) == 3 else (*kept, None)  # (x, y): a result pickled before samples
    if sample is not None and _data_sample(x, y) != sample:
        raise RuntimeError(
            "final_loss: x or y changed after fit returned (data of more than "
            f"{KEEP_COPY_ELEMENTS} elements is not copied); read final_loss before changing them, "
            "or compute the loss with fastgrad.value_and_grad"
        )
    return x, y


def _loss_at(spec, weights, x, y) -> float:
    """MSE of the Dense stack ``spec`` [(activation, use_bias)] with ``weights`` on (x, y)."""
    # (a result unpickled from out-of-band buffers may hold unaligned arrays)
    weights = [None if w is None else aligned(w) for w in weights]
    a, i = aligned(x), 0
    for activation, use_bias in spec:
        k, b = weights[i], (weights[i + 1] if use_bias else None)
        i += 2 if use_bias else 1
        a = _core.dense_forward(a, k, b, ACTIVATIONS[activation], False)
    return float(_core.mse(a, aligned(y)))
