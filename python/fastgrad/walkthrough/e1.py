"""E1: one weight, x = y = [1, 2], w0 = 2, no bias, lr 0.1, full batch, WeightDelta(0.1).

The walkthrough works this loop on paper; fastgrad must give its numbers exactly: weights
2.0, 1.5, 1.25, 1.125, 1.0625 (every one a binary fraction).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, List

import fastgrad as fg
from fastgrad import plotting

from ._base import Experiment, exact_list, g, one_weight

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    from matplotlib.figure import Figure

ID = "E1"
TITLE = "gradient descent on one weight, by hand and by fastgrad"
SUMMARY = "one weight, gradient descent by hand: the exact trajectory"
LEARNING_RATE = 0.1
TOLERANCE = 0.1  # WeightDelta's


@dataclass(frozen=True)
class E1Facts:
    """weights: w_0 .. w_steps; losses: each step's loss; final_loss: on all of x at the end."""

    weights: List[float]
    losses: List[float]
    final_loss: float
    stopped_by: str


def run(dtype: str = "float32") -> Experiment[E1Facts]:
    """One weight, x = y = [1, 2], w0 = 2, no bias, lr 0.1, full batch, WeightDelta(0.1)."""
    x, y = fg.data.e1_data()
    model = one_weight(2.0, dtype)
    r = fg.fit(model, x, y, optimizer=fg.SGD(LEARNING_RATE), stop=[fg.stop.WeightDelta(TOLERANCE)],
               record_weights=True, seed=0)
    facts = E1Facts(weights=r.history.weights[0].ravel().tolist(), losses=r.history.loss.tolist(),
                    final_loss=r.final_loss, stopped_by=r.stopped_by)
    return Experiment(ID, TITLE, facts, results={"run": r}, data={"x": x, "y": y}, models={"run": model})


def tell(ex: Experiment[E1Facts]) -> List[str]:
    """The story ``fastgrad demo`` prints: the step table and the exact trajectory."""
    f, r = ex.facts, ex.results["run"]
    w, losses = f.weights, f.losses
    lines = [
        "x = [1, 2], y = [1, 2], one weight w0 = 2, no bias, lr 0.1, full batch;",
        "stop when |w_t - w_(t-1)| <= 0.1 (WeightDelta(0.1)).  "
        "MSE L(w) = mean((x w - y)^2), dL/dw = 2 mean(x (x w - y)).",
        "  step   w before   loss L(w)   gradient   w after",
    ]
    for t, loss in enumerate(losses):
        grad = (w[t] - w[t + 1]) / r.learning_rate
        lines.append(f"  {t + 1:>4}   {w[t]:<9}  {loss:<10}  {g(grad):<9}  {w[t + 1]}")
    lines += [
        f"weights: {exact_list(w)}",
        f"losses: {exact_list(losses)}",
        f"final loss: {f.final_loss!r}  (at w = {w[-1]!r}, on all of x)",
        f"stopped by {f.stopped_by} after {r.steps} steps: |{w[-1]!r} - {w[-2]!r}| = {abs(w[-1] - w[-2])!r} <= 0.1."
        "  The walkthrough's numbers, exactly: every one of them is a binary fraction.",
    ]
    return lines


def figure(ex: Experiment[E1Facts]) -> "Figure":
    """Loss, gradient and the weight per step, with the minimum w = 1 marked."""
    return plotting.plot_runs(dict(ex.results), title=f"{ex.id}: {ex.title}", truth={"w = 1 (the minimum)": 1.0})
