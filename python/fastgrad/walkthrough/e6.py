"""E6: a Dense(1) layer recovers y = 3 x1 + 2 x2 - 7 x3 + 5 by SGD, one sample a step, lr 0.1.

100 samples x ~ N(0, 1)^3 (``np.random.seed(42)``); with enough steps the kernel is (3, 2, -7)
and the bias 5.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, List, Sequence, Tuple

import fastgrad as fg
from fastgrad import plotting

from ._base import Experiment, g, steps_arg, vec

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    from matplotlib.figure import Figure

ID = "E6"
TITLE = "a Dense layer learns y = 3x1 + 2x2 - 7x3 + 5 by SGD"
SUMMARY = "a Dense layer recovers y = 3x1 + 2x2 - 7x3 + 5 by SGD"
#: the plane the data lies on: the kernel (3, 2, -7) and the bias 5
TRUTH: Tuple[float, float, float, float] = (3.0, 2.0, -7.0, 5.0)
LEARNING_RATE = 0.1
MODEL_SEED = 42


@dataclass(frozen=True)
class E6Facts:
    """The trained kernel and bias, and the loss on all samples."""

    kernel: List[float]
    bias: float
    final_loss: float


def fit_plane(batch_size: int, steps: Any, seed: int) -> Experiment[Any]:
    """Dense(1) trained on E6's data with batches of ``batch_size`` for ``steps`` steps (E6, E7)."""
    x, y = fg.data.e6_data()
    model = fg.Dense(1, seed=MODEL_SEED)
    r = fg.fit(model, x, y, optimizer=fg.SGD(LEARNING_RATE), batch_size=batch_size,
               stop=[fg.stop.MaxSteps(steps_arg(steps))], seed=seed, record_weights=True)
    facts = E6Facts(kernel=model.kernel.ravel().tolist(), bias=float(model.bias[0]), final_loss=r.final_loss)
    return Experiment(ID, TITLE, facts, results={"run": r}, data={"x": x, "y": y}, models={"run": model})


def run(seed: int = 42, steps: int = 1000) -> Experiment[E6Facts]:
    """Dense(1) on y = 3x1 + 2x2 − 7x3 + 5 (100 samples), SGD batch 1, lr 0.1."""
    return fit_plane(1, steps, seed)


def recovered(kernel: Sequence[float], bias: float) -> str:
    """The learned plane beside the true one, and the largest error."""
    err = max(abs(a - b) for a, b in zip(list(kernel) + [bias], TRUTH))
    return f"kernel = {vec(kernel)}, bias = {bias:.4f}  (true 3, 2, -7, 5; largest error {g(err, 2)})"


def tell(ex: Experiment[E6Facts]) -> List[str]:
    """What SGD recovered, and why the walkthrough's own stop came too early."""
    f, r = ex.facts, ex.results["run"]
    return [
        "Dense(1) on 100 samples x ~ N(0, 1)^3 (np.random.seed(42)), y = 3 x1 + 2 x2 - 7 x3 + 5; "
        f"SGD, one sample a step, lr {r.learning_rate:g}.",
        f"after {r.steps} steps ({r.stopped_by}):",
        f"recovered: {recovered(f.kernel, f.bias)}",
        f"final loss {g(f.final_loss)} (on all samples)",
        "The walkthrough stopped on tf.abs(L_t, L_(t-1)) <= 0.01, i.e. LossBelow(0.01) on one sample's loss, at "
        "(1.85, 2.22, -7.03, 4.62): one small sample loss is not a small loss on the data.",
    ]


def figure(ex: Experiment[Any], **kwargs: Any) -> "Figure":
    """The runs, with the true kernel and bias marked on the weights panel."""
    truth = dict(zip(("3", "2", "-7", "5 (bias)"), TRUTH))
    return plotting.plot_runs(dict(ex.results), title=f"{ex.id}: {ex.title}", truth=truth, **kwargs)
