"""E4C, an addendum to E4: the same raw-data run with ``fg.SGD(0.001, global_clipnorm=1)``.

Clipping caps every step at lr * c, so the run no longer explodes; but the learning rate is still
far too large for the scale of x, so w walks to 1 in steps of lr * c and cannot settle closer than
about lr * c.  A second run with c = 10 shows the trade (sooner, but wider); E5's scaling removes
the cause.  With one weight, ``clipnorm`` (each tensor) and ``global_clipnorm`` (all together) clip
alike.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, List, Tuple

import numpy as np

import fastgrad as fg
from fastgrad import plotting

from .e4 import LEARNING_RATE as E4_LEARNING_RATE
from .e4 import run as run_e4
from .e5 import run as run_e5
from ._base import Experiment, g, one_weight

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    from matplotlib.figure import Figure

    from ..results import FitResult, History

ID = "E4C"
TITLE = "E4 with gradient clipping: the explosion stops, the scale problem stays"
SUMMARY = "E4 with global_clipnorm: bounded steps, but no cure for the scale"
LEARNING_RATE = E4_LEARNING_RATE
W0 = 2.0  # E4's starting weight; the minimum is w = 1
#: 1.0 is the customary cap (Hugging Face's Trainer clips to it by default); with lr 0.001 it
#: limits a step to a thousandth of the distance from w0 = 2 to w = 1
CLIPNORM = 1.0
#: a looser cap, to show what changing c trades
WIDE_CLIPNORM = 10.0
#: twice the 1000 steps that steps of lr * CLIPNORM need to cover |w0 - 1| = 1
STEPS = 2000
#: the closing stretch of a run, where a settled run would take only tiny steps
LATE = 200


@dataclass(frozen=True)
class ClippedRun:
    """One clipped run: its cap, its steps and where w went.

    arrival_step : the first step after which |w - 1| <= lr * c (0 if never).
    band : the largest |w - 1| from ``arrival_step`` on (NaN if it never arrived).
    """

    clipnorm: float
    stopped_by: str
    steps: int
    finite: bool              # every loss, gradient norm and weight finite
    warnings: int             # DivergenceWarnings raised
    max_loss: float           # the largest batch loss
    max_step: float           # the largest |w_t - w_(t-1)|
    clipped_steps: int        # steps whose gradient norm exceeded c (those were scaled down to c)
    arrival_step: int
    band: float
    late_step: float          # the largest |w_t - w_(t-1)| over the last LATE steps
    w: float
    final_loss: float         # on all samples, in y's raw units


@dataclass(frozen=True)
class E4CFacts:
    """The clipped runs, E4's unclipped run beside them, and E5's cure for comparison."""

    learning_rate: float
    clipped: ClippedRun
    wide: ClippedRun
    unclipped_stopped_by: str
    unclipped_steps: int
    stable_lr: float          # 1 / max(x)^2: below it, a step shrinks the error whatever the sample
    e5_learning_rate: float
    e5_steps: int
    e5_w: float
    e5_final_loss: float      # on E5's scaled data
    e5_final_loss_raw: float  # the same, with E5's predictions mapped back to y's raw units
    unclipped: "History" = field(repr=False, compare=False)  # E4's run, drawn faded in the figure
    scaled: "History" = field(repr=False, compare=False)     # E5's run, its |w - 1| in the figure


def _clipped(x: np.ndarray, y: np.ndarray, c: float, seed: int) -> "Tuple[ClippedRun, FitResult, fg.Dense]":
    """E4's run with ``global_clipnorm=c``, and what it did."""
    model = one_weight(W0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", fg.DivergenceWarning)
        r = fg.fit(model, x, y, optimizer=fg.SGD(LEARNING_RATE, global_clipnorm=c), batch_size=1,
                   stop=[fg.stop.MaxSteps(STEPS)], seed=seed, record_weights=True)
    w = r.history.weights[0].ravel().astype(np.float64)
    err = np.abs(w - 1.0)
    inside = np.flatnonzero(err <= LEARNING_RATE * c)
    arrival = int(inside[0]) if inside.size else 0
    loss, norm = r.history.loss, r.history.grad_norm
    steps = np.abs(np.diff(w))
    facts = ClippedRun(
        clipnorm=c, stopped_by=r.stopped_by, steps=r.steps,
        finite=bool(np.isfinite(loss).all() and np.isfinite(norm).all() and np.isfinite(w).all()),
        warnings=sum(issubclass(m.category, fg.DivergenceWarning) for m in caught),
        max_loss=float(np.max(loss)), max_step=float(steps.max()),
        clipped_steps=int(np.sum(norm > c)), arrival_step=arrival,
        band=float(err[arrival:].max()) if inside.size else math.nan, late_step=float(steps[-LATE:].max()),
        w=float(w[-1]), final_loss=r.final_loss)
    return facts, r, model


def run(seed: int = 42) -> Experiment[E4CFacts]:
    """E4's run (the same data, model, lr and seed) with ``global_clipnorm`` 1, and 10."""
    x, y = fg.data.e4_data()
    clipped, r, model = _clipped(x, y, CLIPNORM, seed)
    wide, r_wide, model_wide = _clipped(x, y, WIDE_CLIPNORM, seed)
    unclipped = run_e4(seed).results["run"]
    cured = run_e5(seed)
    y_range = float(y.max() - y.min())
    facts = E4CFacts(
        learning_rate=LEARNING_RATE, clipped=clipped, wide=wide,
        unclipped_stopped_by=unclipped.stopped_by, unclipped_steps=unclipped.steps,
        stable_lr=1.0 / float(np.max(x)) ** 2,
        e5_learning_rate=cured.results["run"].learning_rate, e5_steps=cured.facts.steps, e5_w=cured.facts.w,
        e5_final_loss=cured.facts.final_loss, e5_final_loss_raw=cured.facts.final_loss * y_range**2,
        unclipped=unclipped.history, scaled=cured.results["run"].history,
    )
    return Experiment(ID, TITLE, facts, results={"run": r, "wide": r_wide}, data={"x": x, "y": y},
                      models={"run": model, "wide": model_wide})


def tell(ex: Experiment[E4CFacts]) -> List[str]:
    """What clipping fixes (the explosion) and what it does not (the scale), against E4 and E5."""
    f = ex.facts
    c, w, lr = f.clipped, f.wide, f.learning_rate
    x_max = float(np.max(ex.data["x"]))
    cap = lr * c.clipnorm
    lines = [
        f"E4's run again (x = y = 1..{x_max:g} unscaled, w0 = {W0:g}, lr {lr:g}, one random sample a step, the same "
        f"seed), with fg.SGD({lr:g}, global_clipnorm={c.clipnorm:g}): a gradient longer than c = {c.clipnorm:g} "
        f"is scaled down to that length, so no step moves w by more than lr * c = {g(cap)}.",
    ]
    if c.finite and c.stopped_by == "max_steps":
        lines.append(
            f"What it fixes: the explosion.  Unclipped, E4 stopped as {f.unclipped_stopped_by} at step "
            f"{f.unclipped_steps}; clipped, all {c.steps} steps ran with every loss finite (the largest batch loss "
            f"{g(c.max_loss)}), {c.warnings or 'no'} DivergenceWarning, and no step moved w by more than "
            f"{c.max_step:.6g} (lr * c, up to float32 rounding)."
        )
    else:  # pragma: no cover - the clipped run does not diverge
        lines.append(f"The clipped run stopped by {c.stopped_by} after {c.steps} steps.")
    lines += [
        f"What it does not fix: the scale.  The gradient was longer than c at {c.clipped_steps} of {c.steps} "
        f"steps, so nearly every step had the length lr * c, whatever the error: w walked from {W0:g} to within "
        f"{g(cap)} of 1 in {c.arrival_step} steps, and then stayed within {g(c.band)} of 1 without settling "
        f"(in the last {LATE} steps w still moved up to {g(c.late_step)} a step).  After {c.steps} steps "
        f"w = {c.w:.6f}, loss on all samples {g(c.final_loss)}.",
        f"Near w = 1 an unclipped step still multiplies the error by 1 - 2 lr x^2 (down to "
        f"{1 - 2 * lr * x_max**2:.0f} for x = {x_max:g}); clipping only caps how far that throws w.",
        f"With global_clipnorm={w.clipnorm:g}: within {g(lr * w.clipnorm)} of 1 after {w.arrival_step} steps, "
        f"then within {g(w.band)} of it; after {w.steps} steps loss {g(w.final_loss)}.  A larger c arrives sooner "
        f"and stays farther: steps to arrive x distance kept = {c.arrival_step} x {g(c.band)} = "
        f"{g(c.arrival_step * c.band, 2)} for c = {c.clipnorm:g}, {w.arrival_step} x {g(w.band)} = "
        f"{g(w.arrival_step * w.band, 2)} for c = {w.clipnorm:g}, about |w0 - 1| = {abs(W0 - 1):g} either way.",
        f"The cause is the scale of x: an SGD step shrinks the error for every sample only if lr < 1/{x_max:g}^2 "
        f"= {g(f.stable_lr, 2)}.  E5 scales x and y to [0, 1] instead, which moves that limit to lr < 1: with lr "
        f"{f.e5_learning_rate:g}, no clipping, w = {f.e5_w:.7f} after {f.e5_steps} steps, loss "
        f"{g(f.e5_final_loss)} ({g(f.e5_final_loss_raw, 2)} in y's raw units, against {g(c.final_loss)} clipped).",
    ]
    return lines


def figure(ex: Experiment[E4CFacts]) -> "Figure":
    """The clipped runs, E4's unclipped one faded behind them, and |w - 1| on a log scale beside
    E5's: the clipped runs stop at about lr * c, the scaled one goes on down."""
    f = ex.facts
    runs = {f"global_clipnorm={f.clipped.clipnorm:g}": ex.results["run"],
            f"global_clipnorm={f.wide.clipnorm:g}": ex.results["wide"]}
    fig = plotting.plot_runs(runs, title=f"{ex.id}: {ex.title}", log=True, log_steps=True)
    ax_loss, ax_norm, ax_w = fig.axes[:3]
    colors = [line.get_color() for line in ax_loss.get_lines()[: len(runs)]]

    h = f.unclipped
    steps = np.arange(1, len(h.loss) + 1)
    label = f"no clipping (E4: {f.unclipped_stopped_by} at step {f.unclipped_steps})"
    for ax, values in ((ax_loss, h.loss), (ax_norm, h.grad_norm)):
        shown = np.where(np.isfinite(values), values, np.nan)
        ax.plot(steps, shown, color="gray", alpha=0.5, lw=1.2, marker="o", ms=2, label=label, zorder=1)
        ax.legend(fontsize=8, loc="upper right")
    ax_norm.set_ylabel("gradient norm (before clipping)")
    for run, color in zip((f.clipped, f.wide), colors):
        _level(ax_norm, run.clipnorm, f"c = {run.clipnorm:g}", color, below=run is f.clipped)

    # the weight itself hides the band of width lr * c around 1: draw the distance to 1 instead
    for artist in list(ax_w.lines) + list(ax_w.texts):
        artist.remove()
    if ax_w.get_legend() is not None:
        ax_w.get_legend().remove()
    for (label, r), run, color in zip(runs.items(), (f.clipped, f.wide), colors):
        w = r.history.weights[0].ravel().astype(np.float64)
        ax_w.plot(np.arange(len(w)), np.abs(w - 1.0), color=color, lw=1.0, label=label)
        _level(ax_w, f.learning_rate * run.clipnorm, f"lr * c = {g(f.learning_rate * run.clipnorm)}", color,
               below=run is f.clipped)
    w5 = f.scaled.weights[0].ravel().astype(np.float64)
    ax_w.plot(np.arange(len(w5)), np.abs(w5 - 1.0), color="black", ls="--", lw=1.0,
              label=f"E5: scaled data, lr {f.e5_learning_rate:g}, no clipping")
    ax_w.set_yscale("log", nonpositive="mask")
    ax_w.relim()
    ax_w.autoscale_view()
    ax_w.set_ylabel("|w - 1| (distance to the minimum)")
    ax_w.legend(fontsize=8, loc="lower left")
    return fig


def _level(ax: Any, value: float, text: str, color: str, below: bool) -> None:
    """A dashed horizontal line at ``value``, labelled at the panel's left edge (before step 1,
    where no run's line has begun), above it or ``below`` (the two caps are a decade apart)."""
    ax.axhline(value, color=color, ls="--", lw=0.8)
    ax.annotate(text, (0, value), xycoords=("axes fraction", "data"), textcoords="offset points",
                xytext=(2, -2 if below else 2), va="top" if below else "bottom", fontsize=8, color=color)
