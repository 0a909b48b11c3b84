"""E5: E4 after min-max scaling of x and y, lr 0.1: SGD converges to w = 1.

Also the walkthrough's own stopping test, ``tf.abs(L_t, L_(t-1)) <= 1e-4``, which TensorFlow
reads as |L_t| <= 1e-4: fastgrad's LossBelow, which stops early on one small sample loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, List

import fastgrad as fg
from fastgrad import plotting

from ._base import Experiment, g, one_weight

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    from matplotlib.figure import Figure

ID = "E5"
TITLE = "the same SGD after min-max scaling"
SUMMARY = "E4 after min-max scaling: it converges; LossBelow vs LossDelta"
LEARNING_RATE = 0.1
STEPS = 500


@dataclass(frozen=True)
class E5Facts:
    """The converged run's weight and loss; where LossBelow(1e-4) stopped its run."""

    w: float
    final_loss: float
    steps: int
    loss_below_steps: int
    loss_below_w: float
    loss_below_final_loss: float


def run(seed: int = 42) -> Experiment[E5Facts]:
    """E4 after ``minmax`` on x and y, lr 0.1: it converges to w = 1."""
    x, y = fg.data.e4_data()
    xs, ys = fg.minmax(x), fg.minmax(y)
    model = one_weight(2.0)
    r = fg.fit(model, xs, ys, optimizer=fg.SGD(LEARNING_RATE), batch_size=1, stop=[fg.stop.MaxSteps(STEPS)],
               seed=seed, record_weights=True)
    # the walkthrough's own rule, |L_t| <= 1e-4 (LossBelow), stops much earlier and rougher
    model_lb = one_weight(2.0)
    r_lb = fg.fit(model_lb, xs, ys, optimizer=fg.SGD(LEARNING_RATE), batch_size=1, stop=[fg.stop.LossBelow(1e-4)],
                  seed=seed)
    facts = E5Facts(w=float(model.kernel[0, 0]), final_loss=r.final_loss, steps=r.steps,
                    loss_below_steps=r_lb.steps, loss_below_w=float(model_lb.kernel[0, 0]),
                    loss_below_final_loss=r_lb.final_loss)
    return Experiment(ID, TITLE, facts, results={"run": r, "loss_below": r_lb}, data={"x": xs, "y": ys},
                      models={"run": model, "loss_below": model_lb})


def tell(ex: Experiment[E5Facts]) -> List[str]:
    """Why scaling cures E4, and LossBelow against LossDelta."""
    f, r, r_lb = ex.facts, ex.results["run"], ex.results["loss_below"]
    lr = r.learning_rate
    return [
        f"E4's data after fastgrad.minmax on x and y: both in [0, 1] (still y = x, so w = 1 is exact), lr {lr:g}.",
        f"Now the factor 1 - 2 lr x^2 lies in [{1 - 2 * lr:g}, 1] for every sample: each step shrinks the error.",
        f"after {f.steps} steps: w = {f.w:.7f}, final loss {g(f.final_loss)} (on all samples); "
        f"stopped by {r.stopped_by}, no divergence.",
        "The walkthrough stopped this loop on tf.abs(L_t, L_(t-1)) <= 1e-4.  TensorFlow reads the second argument "
        "as the op's name, so that tests |L_t| <= 1e-4: fastgrad's LossBelow(1e-4), not LossDelta(1e-4).",
        f"LossBelow(1e-4) on one sample's loss fires at step {f.loss_below_steps} with w = "
        f"{f.loss_below_w:.4f} (loss on all samples {g(f.loss_below_final_loss)}): one sample with a small "
        f"loss, not a converged model (the walkthrough ended at w = 1.117).  stopped by {r_lb.stopped_by}.",
    ]


def figure(ex: Experiment[E5Facts]) -> "Figure":
    """Both runs; the weight of the converged one, with the minimum w = 1 marked."""
    return plotting.plot_runs(dict(ex.results), title=f"{ex.id}: {ex.title}", truth={"w = 1 (the minimum)": 1.0})
