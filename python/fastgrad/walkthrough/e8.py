"""E8: two layers, Dense(10, relu) -> Dense(1), on make_regression's 10 x 10 data.

SGD with one sample a step, lr 1e-4, 1000 steps: the loss falls by orders of magnitude and the
predictions land near the targets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, List

import numpy as np

import fastgrad as fg
from fastgrad import plotting

from ._base import Experiment, g, steps_arg

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    from matplotlib.figure import Figure

ID = "E8"
TITLE = "two layers: Dense(10, relu) -> Dense(1)"
SUMMARY = "two layers, Dense(10, relu) -> Dense(1): predictions beside targets"
LEARNING_RATE = 1e-4


@dataclass(frozen=True)
class E8Facts:
    """The loss at the start (mean of the first 10 steps) and at the end; each prediction."""

    first_losses: float
    final_loss: float
    predictions: List[float]
    targets: List[float]
    max_abs_error: float


def run(seed: int = 42, model_seed: int = 0, steps: int = 1000) -> Experiment[E8Facts]:
    """Dense(10, relu) -> Dense(1) on make_regression(10 x 10), SGD batch 1, lr 1e-4, 1000 steps."""
    x, y = fg.data.e8_data()
    model = fg.Sequential([fg.Dense(10, "relu"), fg.Dense(1)], seed=model_seed)
    r = fg.fit(model, x, y, optimizer=fg.SGD(LEARNING_RATE), batch_size=1,
               stop=[fg.stop.MaxSteps(steps_arg(steps))], seed=seed, record_weights=True)
    pred = model(x).ravel()
    facts = E8Facts(first_losses=float(np.mean(r.history.loss[:10])), final_loss=r.final_loss,
                    predictions=pred.tolist(), targets=y.tolist(), max_abs_error=float(np.max(np.abs(pred - y))))
    return Experiment(ID, TITLE, facts, results={"run": r}, data={"x": x, "y": y}, models={"run": model})


def tell(ex: Experiment[E8Facts]) -> List[str]:
    """How far the loss fell, and every prediction beside its target."""
    f, r = ex.facts, ex.results["run"]
    lines = [
        "Dense(10, relu) -> Dense(1) on make_regression(n_samples=10, n_features=10, bias=1, random_state=42); "
        f"SGD, one sample a step, lr {r.learning_rate:g}, {r.steps} steps ({r.stopped_by}).",
        f"the loss fell from {g(f.first_losses)} (mean of the first 10 steps) to {g(f.final_loss)} "
        f"(on all samples): {f.first_losses / max(f.final_loss, 1e-300):.2g} times smaller.",
        "  sample   prediction    target        error",
    ]
    for i, (p, t) in enumerate(zip(f.predictions, f.targets)):
        lines.append(f"  {i:>6}   {p:>11.3f}   {t:>11.3f}   {p - t:>+9.3f}")
    lines.append(f"largest error {g(f.max_abs_error, 3)}")
    return lines


def figure(ex: Experiment[E8Facts]) -> "Figure":
    """Loss, gradient norm and each weight tensor's norm per step."""
    return plotting.plot_runs(dict(ex.results), title=f"{ex.id}: {ex.title}")
