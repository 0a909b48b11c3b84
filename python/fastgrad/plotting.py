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
import math
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

if TYPE_CHECKING:  # pragma: no cover - for type checkers only (results imports plotting when called)
    from .results import FitResult, History

__all__ = ["plot_result", "plot_runs", "history_to_dataframe", "FIGSIZE", "DPI", "LOG_DECADES", "MAX_WEIGHT_LINES"]

#: the size of a figure made here, in inches (width, height), and its resolution
FIGSIZE: Tuple[float, float] = (9.0, 8.0)
DPI: int = 100
#: a panel whose positive values span more than this many decades is drawn on a log scale
LOG_DECADES = 2.0
#: at most this many weight elements are drawn one by one; above it, each tensor's L2 norm
MAX_WEIGHT_LINES = 8
#: a run of at most this many steps is drawn with a marker at every step, so that it shows
#: beside runs a hundred times longer
MARKED_STEPS = 10

_PLOT_INSTALL = "pip install 'fastgrad[plot]'"
_PANDAS_INSTALL = "pip install pandas"
_PALETTE = [f"C{i}" for i in range(10)]  # the property cycle's colours


def _matplotlib():
    try:
        import matplotlib  # noqa: F401
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError(f"plotting needs matplotlib, which is not installed: {_PLOT_INSTALL}") from e
    return Figure


def _is_result(v: Any) -> bool:
    """Whether ``v`` is a fit result (duck-typed: plotting does not import the results module)."""
    return all(hasattr(v, a) for a in ("history", "model_spec", "steps", "stopped_by"))


def _is_history(v: Any) -> bool:
    """Whether ``v`` is a run's History (duck-typed, as :func:`_is_result`)."""
    return all(hasattr(v, a) for a in ("loss", "grad_norm", "batches", "weights", "weight_steps"))


def _final_loss_or_none(result: "FitResult") -> Optional[float]:
    """``result.final_loss``, or None when it cannot be computed (the data changed since the run)."""
    try:
        return result.final_loss
    except RuntimeError:
        return None


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
    """(label, steps, values) for the weights panel: every element, or every tensor's norm
    (a norm's label is '‖name‖')."""
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


def _weights_label(norms: int, elements: int) -> str:
    """The weights panel's axis label for what it draws: elements, tensors' norms, or both."""
    if norms and elements:
        return "weight value, or ‖tensor‖ (L2 norm)"
    return "L2 norm of each weight tensor" if norms else "weight value"


def plot_runs(
    runs: Mapping[str, "FitResult"],
    title: Optional[str] = None,
    axes: Optional[Sequence[Any]] = None,
    log: Optional[bool] = None,
    truth: Optional[Mapping[str, float]] = None,
    extra: Optional[Mapping[str, "History"]] = None,
    log_steps: bool = False,
):
    """Draw one or more runs on three shared panels: loss, gradient norm, weights.

    Parameters
    ----------
    runs : ``{label: FitResult}``; each run is one line per panel (its weights only when recorded).
        A run of at most :data:`MARKED_STEPS` steps has a marker at every step.
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
    log_steps : a logarithmic step axis (linear from 0 to 1), for runs of very different lengths.

    Each run that stopped before its step limit is marked where it stopped, with a label put
    where no line runs under it.  Returns the Figure.
    """
    if not isinstance(runs, collections.abc.Mapping) or not all(_is_result(r) for r in runs.values()):
        raise TypeError("runs: expected a dict {label: FitResult}, got " + _kind(runs))
    if extra is not None and (not isinstance(extra, collections.abc.Mapping)
                              or not all(_is_history(h) for h in extra.values())):
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
    # each run and each extra a colour of its own, and the weights panel's lines other colours,
    # so that a colour names one thing across the three panels
    run_colors = {label: _PALETTE[i % len(_PALETTE)] for i, label in enumerate(runs)}
    extra_colors = {label: _PALETTE[(len(runs) + i) % len(_PALETTE)] for i, label in enumerate(extra)}
    weight_styles = _weight_styles(len(runs) + len(extra))

    loss_series = [r.history.loss for r in runs.values()] + [h.loss for h in extra.values()]
    norm_series = [r.history.grad_norm for r in runs.values()]
    log_loss = _wants_log(loss_series) if log is None else bool(log)
    log_norm = _wants_log(norm_series) if log is None else bool(log)

    stops = []  # (x, y, text, color, marker line) for each run that stopped before its limit
    for label, r in runs.items():
        h = r.history
        color = run_colors[label]
        steps = np.arange(1, len(h.loss) + 1)
        shown = _finite(h.loss)
        marks = {"marker": "o", "ms": 3} if 0 < len(steps) <= MARKED_STEPS else {}
        ax_loss.plot(steps, shown, label=label, lw=1.2, color=color, **marks)
        ax_norm.plot(steps, _finite(h.grad_norm), color=color, label=label, lw=1.2, **marks)
        if len(steps) and r.stopped_by != "max_steps":
            # where and why the run stopped; a diverged run's last loss is inf: mark it at the
            # height of the largest finite loss
            y = shown[-1] if np.isfinite(shown[-1]) else (np.nanmax(shown) if np.isfinite(shown).any() else 0.0)
            text = f"{r.stopped_by} at step {r.steps}"
            if not np.isfinite(h.loss[-1]):
                text += f" (loss {h.loss[-1]})"
            (dot,) = ax_loss.plot([steps[-1]], [y], marker="o", color=color, ls="none")
            stops.append((steps[-1], y, text, color, dot))
        if r.stopped_by == "diverged":
            for ax in (ax_loss, ax_norm, ax_w):
                ax.axvline(r.steps, color="red", ls=":", lw=1)
    for label, h in extra.items():
        steps = np.arange(1, len(h.loss) + 1)
        ax_loss.plot(steps, _finite(h.loss), ls="none", marker="x", ms=5, label=label, color=extra_colors[label])
        if h.grad_norm is not None and np.isfinite(np.asarray(h.grad_norm, dtype=float)).any():
            ax_norm.plot(steps, _finite(h.grad_norm), ls="none", marker="x", ms=5, label=label,
                         color=extra_colors[label])

    n_weight_lines = n_norms = 0
    w_vals = []
    for label, r in runs.items():
        for wl, steps, values in _weight_lines(r):
            name = wl if len(runs) == 1 else f"{label}: {wl}"
            color, ls = weight_styles[n_weight_lines % len(weight_styles)]
            ax_w.plot(steps, _finite(values), label=name, lw=1.2, color=color, ls=ls)
            n_weight_lines += 1
            n_norms += wl.startswith("‖")
            w_vals.append(values)
    for label, h in extra.items():
        if h.weights is not None:
            for p, w in enumerate(h.weights):
                flat = w.reshape(w.shape[0], -1)
                if flat.shape[1] == 1:
                    ax_w.plot(np.asarray(h.weight_steps), _finite(flat[:, 0]), ls="none", marker="x", ms=5,
                              label=f"{label}: weight {p}", color=extra_colors[label])
                    n_weight_lines += 1
    for label, value in (truth or {}).items():
        ax_w.axhline(value, color="gray", ls="--", lw=0.8)
        ax_w.annotate(label, (0, value), xycoords=("axes fraction", "data"), textcoords="offset points",
                      xytext=(2, 2), fontsize=8, color="gray")

    if log_loss:  # a loss of exactly 0 leaves a gap rather than a drop to the axis
        ax_loss.set_yscale("log", nonpositive="mask")
    if log_norm:
        ax_norm.set_yscale("log", nonpositive="mask")
    if w_vals and log is not False and _wants_log(w_vals) and np.nanmax(np.abs(_finite(np.concatenate(w_vals)))) > 1e3:
        _symlog_weights(ax_w, np.concatenate(w_vals))  # weights that explode with alternating sign (E4)
    _step_axis(ax_w, max([r.steps for r in runs.values()] + [1]), log_steps)

    ax_loss.set_ylabel("loss (MSE of the step's batch)")
    ax_norm.set_ylabel("gradient norm (global L2)")
    ax_w.set_ylabel(_weights_label(n_norms, n_weight_lines - n_norms))
    ax_w.set_xlabel("step")
    if not n_weight_lines:
        ax_w.text(0.5, 0.5, "weights not recorded (fit(..., record_weights=True))", ha="center", va="center",
                  transform=ax_w.transAxes, fontsize=9, color="gray")
    _label_stops(ax_loss, stops)  # after the scales: the labels are placed in display space
    for ax, n in ((ax_loss, len(runs) + len(extra)), (ax_norm, len(runs)), (ax_w, n_weight_lines)):
        ax.grid(True, which="major", alpha=0.3)
        if 1 < n <= 12:
            ax.legend(fontsize=8, loc="best")
    if title:
        fig.suptitle(title)
    return fig


def _weight_styles(used: int) -> List[Tuple[str, str]]:
    """(colour, line style) for the weights panel's lines: the palette's colours that the runs
    and extras do not use, then the same with dashed and dotted lines."""
    free = [c for i, c in enumerate(_PALETTE) if i >= used] or _PALETTE
    return [(c, ls) for ls in ("-", "--", ":") for c in free]


def _symlog_weights(ax: Any, values: np.ndarray) -> None:
    """A symmetric log scale for the weights panel, with ticks at 0 and at ±10^k every few
    decades: ±10^0 would sit a few points apart, their labels overlapping."""
    from matplotlib.ticker import FixedLocator, NullLocator

    ax.set_yscale("symlog", linthresh=1.0)
    top = float(np.nanmax(np.abs(_finite(values))))
    decades = max(1, math.ceil(math.log10(top)))
    stride = max(1, math.ceil(decades / 4))
    pos = [10.0**k for k in range(stride, decades + stride, stride)]
    ax.yaxis.set_major_locator(FixedLocator([-p for p in reversed(pos)] + [0.0] + pos))
    ax.yaxis.set_minor_locator(NullLocator())


def _step_axis(ax: Any, last_step: int, log_steps: bool) -> None:
    """Integer step ticks; with ``log_steps`` a symmetric log axis (linear from 0 to 1)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullLocator

    if not log_steps:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        return
    ax.set_xscale("symlog", linthresh=1.0, linscale=0.4)
    ax.set_xlim(left=0)  # the autoscale margin would open a stretch of negative steps
    ticks = [0] + [10**k for k in range(int(math.log10(max(last_step, 1))) + 2)]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))


#: where a stop label may go, tried in order: (dx, dy) in points from its point, nearest first;
#: a label farther than a line height away gets a leader line to its point
_LABEL_OFFSETS = [(8, -4), (8, 4)] + [(8, s * d) for d in range(16, 121, 12) for s in (1, -1)]


def _label_stops(ax: Any, stops: Sequence[Tuple[float, float, str, str, Any]]) -> None:
    """Label each stop point with its text, on the side of the point with more room, at the
    nearest offset where no line of the panel runs under the label and no other label lies."""
    renderer = _renderer(ax.figure)
    frame = ax.get_window_extent(renderer)
    placed: List[Any] = []
    for x, y, text, color, dot in stops:
        px = ax.transData.transform((x, y))[0]
        side = -1 if px > frame.x0 + 0.7 * frame.width else 1
        probe = ax.annotate(text, (x, y), textcoords="offset points", xytext=(8 * side, -4), fontsize=8)
        chosen = None
        if renderer is not None:
            paths = [line.get_transform().transform_path(line.get_path())
                     for line in ax.get_lines() if line is not dot]
            for dx, dy in _LABEL_OFFSETS:
                probe.set_position((dx * side, dy))
                probe.set_horizontalalignment("left" if side > 0 else "right")
                probe.set_verticalalignment("top" if dy < 0 else "bottom")
                box = probe.get_window_extent(renderer).padded(2)
                if not (frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1):
                    continue  # not inside the panel
                if any(box.overlaps(b) for b in placed) or any(p.intersects_bbox(box, filled=False) for p in paths):
                    continue
                chosen, placed_box = (dx * side, dy), box
                break
        probe.remove()
        if chosen is None:  # no clear place (or no renderer to measure with): beside the point
            chosen, placed_box = (8 * side, -4), None
        far = abs(chosen[1]) > 10
        ax.annotate(text, (x, y), textcoords="offset points", xytext=chosen, fontsize=8, color=color,
                    ha="left" if side > 0 else "right", va="top" if chosen[1] < 0 else "bottom",
                    arrowprops=dict(arrowstyle="-", color=color, lw=0.6, shrinkA=0, shrinkB=3) if far else None)
        if placed_box is not None:
            placed.append(placed_box)


def _renderer(fig: Any) -> Any:
    """A renderer to measure text with; None where this matplotlib cannot give one undrawn."""
    get = getattr(fig, "_get_renderer", None)  # matplotlib >= 3.6: what Legend's "best" uses
    if get is not None:
        return get()
    get = getattr(fig.canvas, "get_renderer", None)  # an Agg canvas on older versions
    return get() if get is not None else None


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
    if not _is_result(result):
        raise TypeError(f"result: expected the FitResult returned by fastgrad.fit, got {type(result).__name__}")
    _matplotlib()
    loss = _final_loss_or_none(result)
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
    if not _is_history(history):
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
