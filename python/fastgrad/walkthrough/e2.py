"""E2: E1 through the TensorFlow oracle, ``tf.GradientTape`` on the same weights and batches.

Needs the ``tf`` extra.  TensorFlow must give E1's numbers too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Dict, List

import fastgrad as fg
from fastgrad import plotting

from . import e1
from ._base import Experiment, exact_list, g, max_deviation

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    from matplotlib.figure import Figure

    from ..results import History

ID = "E2"
TITLE = "E1 again, replayed in TensorFlow"
SUMMARY = "E1 replayed in TensorFlow (needs the tf extra)"
#: E2 is itself a replay in TensorFlow: it needs TensorFlow, and is not replayed again
IS_TF_REPLAY = True


@dataclass(frozen=True)
class E2Facts(e1.E1Facts):
    """E1's facts, and TensorFlow's weights and losses for the same steps."""

    tf_weights: List[float]
    tf_losses: List[float]
    deviation: Dict[str, float]  # max_deviation(fastgrad's run, TensorFlow's)
    tf_history: "History" = field(repr=False, compare=False)


def run(dtype: str = "float32") -> Experiment[E2Facts]:
    """E1 through the TensorFlow oracle: the same numbers from ``tf.GradientTape``."""
    ex = e1.run(dtype)
    r = ex.results["run"]
    h = fg.oracle.replay(r, ex.data["x"], ex.data["y"])
    facts = E2Facts(**vars(ex.facts), tf_weights=h.weights[0].ravel().tolist(), tf_losses=h.loss.tolist(),
                    deviation=max_deviation(r, h, ex.data["y"]), tf_history=h)
    return Experiment(ID, TITLE, facts, results=ex.results, data=ex.data, models=ex.models)


def tell(ex: Experiment[E2Facts]) -> List[str]:
    """TensorFlow's trajectory beside fastgrad's, and how far apart they are."""
    f = ex.facts
    dev = f.deviation
    return [
        "E1's steps again through tf.GradientTape (the same weights, the same batches):",
        f"TensorFlow weights: {exact_list(f.tf_weights)}",
        f"TensorFlow losses: {exact_list(f.tf_losses)}",
        f"fastgrad weights:   {exact_list(f.weights)}",
        f"largest relative deviation: loss {g(dev['loss'], 2)}, weights {g(dev['weights'], 2)}"
        + ("  (identical)" if dev["loss"] == 0 and dev["weights"] == 0 else ""),
    ]


def figure(ex: Experiment[E2Facts]) -> "Figure":
    """fastgrad's run as lines, TensorFlow's replay as markers over them."""
    return plotting.plot_runs({"fastgrad": ex.results["run"]}, title=f"{ex.id}: {ex.title}",
                              extra={"TensorFlow": ex.facts.tf_history}, truth={"w = 1 (the minimum)": 1.0})
