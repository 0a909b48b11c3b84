"""E4: SGD with one sample a step on raw x = y = 1..1999, w0 = 2, lr 0.001: the gradients explode.

fastgrad stops the run as "diverged" within 30 steps, with a DivergenceWarning, and keeps the
exploding loss and gradient norm in the history.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, List

import numpy as np

import fastgrad as fg
from fastgrad import plotting

from ._base import Experiment, g, one_weight

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    from matplotlib.figure import Figure

ID = "E4"
TITLE = "SGD on raw data 1..1999: exploding gradients"
SUMMARY = "SGD on raw data 1..1999: the gradients explode"
LEARNING_RATE = 0.001
MAX_STEPS = 30


@dataclass(frozen=True)
class E4Facts:
    """The run's end, the DivergenceWarning's message, and every step's loss, norm and weight."""

    stopped_by: str
    steps: int
    warning: List[str]
    losses: List[float]
    grad_norms: List[float]
    weights: List[float]


def run(seed: int = 42) -> Experiment[E4Facts]:
    """SGD, batch 1, x = y = 1..1999 raw, w0 = 2, lr 0.001: the gradients explode."""
    x, y = fg.data.e4_data()
    model = one_weight(2.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", fg.DivergenceWarning)
        r = fg.fit(model, x, y, optimizer=fg.SGD(LEARNING_RATE), batch_size=1,
                   stop=[fg.stop.LossBelow(0.1), fg.stop.MaxSteps(MAX_STEPS)], seed=seed, record_weights=True)
    facts = E4Facts(
        stopped_by=r.stopped_by,
        steps=r.steps,
        warning=[str(w.message) for w in caught if issubclass(w.category, fg.DivergenceWarning)],
        losses=r.history.loss.tolist(),
        grad_norms=r.history.grad_norm.tolist(),
        weights=r.history.weights[0].ravel().tolist(),
    )
    return Experiment(ID, TITLE, facts, results={"run": r}, data={"x": x, "y": y}, models={"run": model})


def tell(ex: Experiment[E4Facts]) -> List[str]:
    """The step table up to the overflow, and why each step multiplies the error."""
    f, r = ex.facts, ex.results["run"]
    x = ex.data["x"][:, 0]
    lr = r.learning_rate
    lines = [
        f"x = y = 1..{len(x)} unscaled, one weight w0 = 2, SGD with one random sample a step, lr {lr:g}.",
        "  step   sample x   loss           gradient norm   w after",
    ]
    batches = r.history.batches
    for t in range(r.steps):
        xi = x[batches[t][0]]
        lines.append(
            f"  {t + 1:>4}   {xi:>8g}   {g(f.losses[t], 5):<13}  {g(f.grad_norms[t], 5):<14}  {g(f.weights[t + 1], 5)}"
        )
    losses = np.asarray(f.losses, dtype=np.float64)
    fin = losses[np.isfinite(losses)]
    growth = float(np.exp(np.mean(np.diff(np.log(fin))))) if fin.size > 1 else math.nan
    first_x = float(x[batches[0][0]])
    stable = int(np.sum(x * x < 1.0 / lr))
    if f.stopped_by == "diverged":
        lines.append(
            f"diverged at step {f.steps}: the loss and the gradient norm grew every step "
            f"(the loss about x{g(growth, 2)} a step) until they overflowed float32."
        )
    else:  # pragma: no cover - the walkthrough's run always diverges
        lines.append(f"stopped by {f.stopped_by} after {f.steps} steps")
    if f.warning:
        lines.append(f"fastgrad stopped the run with a DivergenceWarning: {f.warning[0]}")
    lines.append(
        f"Why: one step on a sample (x, y = x) maps the error w - 1 to (1 - 2 lr x^2)(w - 1).  With lr = {lr:g} "
        f"that factor is larger than 1 in size for every x > {math.sqrt(1 / lr):.1f} ({len(x) - stable} of the "
        f"{len(x)} samples): the first sample here, x = {first_x:g}, multiplied the error by "
        f"{abs(1 - 2 * lr * first_x ** 2):.0f}."
    )
    return lines


def figure(ex: Experiment[E4Facts]) -> "Figure":
    """On log scales: the divergence spans 30 decades, the weight flips sign every step."""
    return plotting.plot_runs(dict(ex.results), title=f"{ex.id}: {ex.title}", log=True)
