"""Figures and tables of a run: ``plot_result`` (matplotlib) and ``history_to_dataframe`` (pandas).

Both libraries are optional: matplotlib comes with the ``plot`` extra
(``pip install 'fastgrad[plot]'``), pandas with ``pip install pandas``.  Neither is imported
by ``import fastgrad``; each is imported when a function here first needs it.

``plot_result(result)`` draws three panels against the step number:

* the loss of each step's batch (before that step's update),
* the global L2 norm of each step's gradient,
* the weights after each recorded step (each element when there are few, else each tensor's
  L2 norm), when the run recorded them (``fit(..., record_weights=True)``).

The loss and gradient-norm panels switch to a log scale when their values span more than
:data:`LOG_DECADES` decades, so a run that converges to ~0 or explodes (the walkthrough's E4)
stays readable; a step where the run diverged is marked.
"""

from __future__ import annotations

import collections.abc
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    from .training import FitResult, History

__all__ = ["plot_result", "plot_runs", "history_to_dataframe", "FIGSIZE", "DPI", "LOG_DECADES", "MAX_WEIGHT_LINES"]

#: the size of a figure made here, in inches (width, height), and its resolution
FIGSIZE: Tuple[float, float] = (9.0, 8.0)
DPI: int = 100
#: a panel whose positive values span more than this many decades is drawn on a log scale
LOG_DECADES = 2.0
#: at most this many weight elements are drawn one by one; above it, each tensor's L2 norm
MAX_WEIGHT_LINES = 8

_PLOT_INSTALL = "pip install 'fastgrad[plot]'"
_PANDAS_INSTALL = "pip install pandas"


def _matplotlib():
    try:
        import matplotlib  # noqa: F401
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError(f"plotting needs matplotlib, which is not installed: {_PLOT_INSTALL}") from e
    return Figure


def _finite(v: np.ndarray) -> np.ndarray:
    """``v`` as float64 with every non-finite value replaced by NaN (matplotlib leaves a gap)."""
    v = np.asarray(v, dtype=np.float64)
    return np.where(np.isfinite(v), v, np.nan)


def _wants_log(series: Sequence[np.ndarray]) -> bool:
    """True when the positive finite values of ``series`` span more than LOG_DECADES decades."""
    vals = np.concatenate([np.abs(_finite(s)).ravel() for s in series]) if series else np.empty(0)
    vals = vals[np.isfinite(vals) & (vals > 0)]
    if vals.size < 2:
        return False
    return bool(np.log10(vals.max() / vals.min()) > LOG_DECADES)


def _param_labels(result: "FitResult") -> List[str]:
    """'kernel', 'bias' (one layer) or 'layer i kernel', ... in get_weights() order."""
    spec = result.model_spec
    labels = []
    for i, (_, use_bias) in enumerate(spec):
        prefix = "" if len(spec) == 1 else f"layer {i} "
        labels.append(prefix + "kernel")
        if use_bias:
            labels.append(prefix + "bias")
    return labels


def _weight_lines(result: "FitResult") -> List[Tuple[str, np.ndarray, np.ndarray]]:
    """(label, steps, values) for the weights panel: every element, or every tensor's norm."""
    h = result.history
    if h.weights is None:
        return []
    steps = np.asarray(h.weight_steps)
    labels = _param_labels(result)
    total = sum(int(np.prod(w.shape[1:])) for w in h.weights)
    lines = []
    for label, w in zip(labels, h.weights):
        flat = w.reshape(w.shape[0], -1)
        if total <= MAX_WEIGHT_LINES:
            for j in range(flat.shape[1]):
                idx = np.unravel_index(j, w.shape[1:])
                suffix = "" if flat.shape[1] == 1 else "[" + ", ".join(str(int(i)) for i in idx) + "]"
                lines.append((label + suffix, steps, flat[:, j].astype(np.float64)))
        else:
            lines.append((f"‖{label}‖", steps, _row_norms(flat)))
    return lines


def _row_norms(flat: np.ndarray, rows: int = 256) -> np.ndarray:
    """The L2 norm of every row, in float64, a block of ``rows`` rows at a time (a recording of
    a wide model can be large: no float64 copy of all of it)."""
    out = np.empty(flat.shape[0])
    with np.errstate(over="ignore", invalid="ignore"):
        for i in range(0, flat.shape[0], rows):
            block = flat[i : i + rows].astype(np.float64)
            out[i : i + rows] = np.sqrt(np.einsum("ij,ij->i", block, block))
    return out


def plot_runs(
    runs: Mapping[str, "FitResult"],
    title: Optional[str] = None,
    axes: Optional[Sequence[Any]] = None,
    log: Optional[bool] = None,
    truth: Optional[Mapping[str, float]] = None,
    extra: Optional[Mapping[str, "History"]] = None,
):
    """Draw one or more runs on three shared panels: loss, gradient norm, weights.

    Parameters
    ----------
    runs : ``{label: FitResult}``; each run is one line per panel (its weights only when recorded).
    title : the figure's title.
    axes : three matplotlib Axes to draw on (loss, gradient norm, weights); by default a new
        :class:`matplotlib.figure.Figure` of :data:`FIGSIZE` at :data:`DPI` (no pyplot, so no
        GUI backend is needed; save it with ``fig.savefig(path)``).
    log : True/False forces the loss and gradient-norm panels to a log/linear scale; None
        chooses log when the values span more than :data:`LOG_DECADES` decades.
    truth : ``{label: value}`` drawn as dashed horizontal lines on the weights panel
        (e.g. the weights a run should recover).
    extra : ``{label: History}`` drawn as markers over the loss and weights panels (e.g. a
        TensorFlow replay); a History whose grad_norm is all NaN adds nothing there.

    Returns the Figure.
    """
    from .training import FitResult, History

    if not isinstance(runs, collections.abc.Mapping) or not all(isinstance(r, FitResult) for r in runs.values()):
        raise TypeError("runs: expected a dict {label: FitResult}, got " + _kind(runs))
    if extra is not None and (not isinstance(extra, collections.abc.Mapping) or not all(isinstance(h, History) for h in extra.values())):
        raise TypeError("extra: expected a dict {label: History}, got " + _kind(extra))
    Figure = _matplotlib()
    if axes is None:
        fig = Figure(figsize=FIGSIZE, dpi=DPI)
        axes = fig.subplots(3, 1, sharex=True)
        # fixed margins: a layout engine would double the drawing time of every figure
        fig.subplots_adjust(left=0.11, right=0.97, bottom=0.07, top=0.93, hspace=0.12)
    else:
        axes = list(np.ravel(axes)) if isinstance(axes, np.ndarray) else list(axes)
        if len(axes) != 3:
            raise ValueError(f"axes: expected 3 Axes (loss, gradient norm, weights), got {len(axes)}")
        _check_axes("axes", axes)
        fig = axes[0].figure
    ax_loss, ax_norm, ax_w = axes
    extra = dict(extra or {})

    loss_series = [r.history.loss for r in runs.values()] + [h.loss for h in extra.values()]
    norm_series = [r.history.grad_norm for r in runs.values()]
    log_loss = _wants_log(loss_series) if log is None else bool(log)
    log_norm = _wants_log(norm_series) if log is None else bool(log)

    last_step = max([r.steps for r in runs.values()] + [1])
    for label, r in runs.items():
        h = r.history
        steps = np.arange(1, len(h.loss) + 1)
        shown = _finite(h.loss)
        (line,) = ax_loss.plot(steps, shown, label=label, lw=1.2)
        color = line.get_color()
        ax_norm.plot(steps, _finite(h.grad_norm), color=color, label=label, lw=1.2)
        if len(steps) and r.stopped_by != "max_steps":
            # where and why the run stopped; a diverged run's last loss is inf: mark it at the
            # height of the largest finite loss
            y = shown[-1] if np.isfinite(shown[-1]) else (np.nanmax(shown) if np.isfinite(shown).any() else 0.0)
            text = f"{r.stopped_by} at step {r.steps}"
            if not np.isfinite(h.loss[-1]):
                text += f" (loss {h.loss[-1]})"
            right = steps[-1] > 0.7 * last_step
            ax_loss.plot([steps[-1]], [y], marker="o", color=color, ls="none")
            ax_loss.annotate(text, (steps[-1], y), textcoords="offset points", xytext=(-8 if right else 8, -4),
                             ha="right" if right else "left", va="top", fontsize=8, color=color)
        if r.stopped_by == "diverged":
            for ax in (ax_loss, ax_norm, ax_w):
                ax.axvline(r.steps, color="red", ls=":", lw=1)
    for label, h in extra.items():
        steps = np.arange(1, len(h.loss) + 1)
        ax_loss.plot(steps, _finite(h.loss), ls="none", marker="x", ms=5, label=label)
        if h.grad_norm is not None and np.isfinite(np.asarray(h.grad_norm, dtype=float)).any():
            ax_norm.plot(steps, _finite(h.grad_norm), ls="none", marker="x", ms=5, label=label)

    n_weight_lines = 0
    for label, r in runs.items():
        for wl, steps, values in _weight_lines(r):
            name = wl if len(runs) == 1 else f"{label}: {wl}"
            ax_w.plot(steps, _finite(values), label=name, lw=1.2)
            n_weight_lines += 1
    for label, h in extra.items():
        if h.weights is not None:
            for p, w in enumerate(h.weights):
                flat = w.reshape(w.shape[0], -1)
                if flat.shape[1] == 1:
                    ax_w.plot(np.asarray(h.weight_steps), _finite(flat[:, 0]), ls="none", marker="x", ms=5,
                              label=f"{label}: weight {p}")
                    n_weight_lines += 1
    for label, value in (truth or {}).items():
        ax_w.axhline(value, color="gray", ls="--", lw=0.8)
        ax_w.annotate(label, (0, value), xycoords=("axes fraction", "data"), textcoords="offset points",
                      xytext=(2, 2), fontsize=8, color="gray")

    from matplotlib.ticker import MaxNLocator, SymmetricalLogLocator

    if log_loss:  # a loss of exactly 0 leaves a gap rather than a drop to the axis
        ax_loss.set_yscale("log", nonpositive="mask")
    if log_norm:
        ax_norm.set_yscale("log", nonpositive="mask")
    w_vals = [v for r in runs.values() for _, _, v in _weight_lines(r)]
    if w_vals and log is not False and _wants_log(w_vals) and np.nanmax(np.abs(_finite(np.concatenate(w_vals)))) > 1e3:
        # weights that explode with alternating sign (E4): a symmetric log scale shows both
        ax_w.set_yscale("symlog", linthresh=1.0)
        locator = SymmetricalLogLocator(base=10, linthresh=1.0)
        locator.set_params(numticks=9)
        ax_w.yaxis.set_major_locator(locator)
    ax_w.xaxis.set_major_locator(MaxNLocator(integer=True))

    ax_loss.set_ylabel("loss (MSE of the step's batch)")
    ax_norm.set_ylabel("gradient norm (global L2)")
    ax_w.set_ylabel("weight value")
    ax_w.set_xlabel("step")
    if not n_weight_lines:
        ax_w.text(0.5, 0.5, "weights not recorded (fit(..., record_weights=True))", ha="center", va="center",
                  transform=ax_w.transAxes, fontsize=9, color="gray")
    for ax, n in ((ax_loss, len(runs) + len(extra)), (ax_norm, len(runs)), (ax_w, n_weight_lines)):
        ax.grid(True, which="major", alpha=0.3)
        if 1 < n <= 12:
            ax.legend(fontsize=8, loc="best")
    if title:
        fig.suptitle(title)
    return fig


def _kind(v) -> str:
    """What ``v`` is, for a message: its type, and for a dict the type of its first value."""
    if isinstance(v, collections.abc.Mapping) and v:
        return f"a dict of {type(next(iter(v.values()))).__name__}"
    return type(v).__name__


def _check_axes(name: str, axes: Sequence[Any]) -> None:
    """TypeError unless every item is a matplotlib Axes (anything with .plot and .figure)."""
    for a in axes:
        if not (hasattr(a, "plot") and hasattr(a, "figure") and hasattr(a, "set_yscale")):
            raise TypeError(f"{name}: expected a matplotlib Axes (or three: loss, gradient norm, weights), "
                            f"got {type(a).__name__}")


def plot_result(result: "FitResult", ax=None):
    """Plot a run's loss, gradient norm and weights per step; returns the matplotlib Figure.

    ``ax``: None draws a new figure (through ``matplotlib.pyplot``, so it shows in a notebook
    or with ``plt.show()``); a single Axes gets the loss curve only; a sequence of three Axes
    gets the three panels (loss, gradient norm, weights).

    Needs matplotlib (``pip install 'fastgrad[plot]'``); raises ImportError naming it otherwise.
    Meant to be attached as ``FitResult.plot``.
    """
    from .training import FitResult

    if not isinstance(result, FitResult):
        raise TypeError(f"result: expected the FitResult returned by fastgrad.fit, got {type(result).__name__}")
    _matplotlib()
    loss = result._final_loss_or_none()
    title = f"{result.steps} steps, stopped by {result.stopped_by}" + ("" if loss is None else f"; final loss {loss:.4g}")
    if ax is None:
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(3, 1, sharex=True, figsize=FIGSIZE, dpi=DPI)
        fig.subplots_adjust(left=0.11, right=0.97, bottom=0.07, top=0.93, hspace=0.12)
        return plot_runs({"run": result}, title=title, axes=axes)
    if isinstance(ax, (list, tuple, np.ndarray)):
        return plot_runs({"run": result}, title=title, axes=list(np.ravel(ax)))
    _check_axes("ax", [ax])
    h = result.history
    steps = np.arange(1, len(h.loss) + 1)
    ax.plot(steps, _finite(h.loss), lw=1.2)
    if _wants_log([h.loss]):
        ax.set_yscale("log", nonpositive="mask")  # a loss of exactly 0 is a gap, as in plot_runs
    ax.set_xlabel("step")
    ax.set_ylabel("loss (MSE of the step's batch)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    return ax.figure


def history_to_dataframe(history: "History"):
    """The history as a ``pandas.DataFrame``, one row per step (index ``step``, from 1).

    Columns: ``loss`` and ``grad_norm``; ``batch`` (a tuple of the sample indices) when the run
    used batches; and, when weights were recorded, one column per parameter element,
    ``w{p}[i, j]`` (``p`` in ``get_weights()`` order) holding the weights *after* that step
    (NaN at steps that were not recorded).  The initial weights (step 0) are in
    ``history.weights[p][0]``.

    Needs pandas; raises ImportError naming ``pip install pandas`` otherwise.
    Meant to be attached as ``History.to_dataframe``.
    """
    from .training import History

    if not isinstance(history, History):
        raise TypeError(f"history: expected a fastgrad History (result.history), got {type(history).__name__}")
    try:
        import pandas as pd
    except ImportError as e:
        raise ImportError(f"History.to_dataframe needs pandas, which is not installed: {_PANDAS_INSTALL}") from e
    n = len(history.loss)
    steps = np.arange(1, n + 1)
    cols: Dict[str, Union[np.ndarray, list]] = {
        "loss": np.asarray(history.loss, dtype=np.float64),
        "grad_norm": np.asarray(history.grad_norm, dtype=np.float64),
    }
    if history.batches is not None:
        cols["batch"] = [tuple(int(i) for i in row) for row in history.batches]
    if history.weights is not None:
        wsteps = np.asarray(history.weight_steps)
        rows = wsteps >= 1  # row 0 (the initial weights) has no step
        where = wsteps[rows] - 1
        for p, w in enumerate(history.weights):
            flat = w.reshape(w.shape[0], -1)
            for j in range(flat.shape[1]):
                idx = np.unravel_index(j, w.shape[1:])
                col = np.full(n, np.nan)
                col[where] = flat[rows, j]
                cols[f"w{p}[" + ", ".join(str(int(i)) for i in idx) + "]"] = col
    return pd.DataFrame(cols, index=pd.Index(steps, name="step"))
