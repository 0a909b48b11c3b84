"""E7: E6 with minibatches of 3; and a stopping rule that fools itself on the noisy batch loss.

LossDelta(0.1) compares two consecutive minibatch losses, which can land within 0.1 of each
other by chance far from the minimum (the walkthrough's run stopped at a loss of about 40);
Plateau waits for the best loss to stop improving.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, List

import numpy as np

import fastgrad as fg

from . import e6
from ._base import Experiment, g, vec

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    from matplotlib.figure import Figure

ID = "E7"
TITLE = "the same with minibatches of 3, and a stopping rule that fools itself"
SUMMARY = "the same with minibatches; why LossDelta stops too early, and Plateau"
BATCH_SIZE = 3
#: a seed with which LossDelta(0.1) fires at step 2 on E7's noisy minibatch loss, leaving a loss
#: of about 28 on all the data (the walkthrough's run stopped at about 40): of seeds 0-299 it
#: shows the failure most plainly; ``loss_delta_bad_share`` says how common the failure is.
EARLY_STOP_SEED = 30
#: LossDelta(0.1) runs over seeds 0..SEEDS-1 measure how often it stops with a loss above 1
SEEDS = 100


@dataclass(frozen=True)
class E7Facts(e6.E6Facts):
    """E6's facts for the minibatch run; where LossDelta(0.1) and Plateau stopped theirs."""

    loss_delta_steps: int
    loss_delta_batch_loss: float
    loss_delta_final_loss: float
    loss_delta_kernel: List[float]
    loss_delta_bias: float
    plateau_steps: int
    plateau_final_loss: float
    plateau_kernel: List[float]
    plateau_bias: float
    loss_delta_bad_share: float  # of SEEDS runs, the share that stopped with a loss above 1


def _minibatch_fit(rule, seed: int):
    """(model, result): Dense(1) on E6's data in batches of 3 until ``rule`` fires."""
    x, y = fg.data.e6_data()
    model = fg.Dense(1, seed=e6.MODEL_SEED)
    r = fg.fit(model, x, y, optimizer=fg.SGD(e6.LEARNING_RATE), batch_size=BATCH_SIZE, stop=[rule], seed=seed)
    return model, r


def run(seed: int = 42, steps: int = 1000) -> Experiment[E7Facts]:
    """E6 with minibatches of 3; and what LossDelta(0.1) does on the noisy minibatch loss."""
    ex = e6.fit_plane(BATCH_SIZE, steps, seed)
    m_ld, r_ld = _minibatch_fit(fg.stop.LossDelta(0.1), EARLY_STOP_SEED)
    m_pl, r_pl = _minibatch_fit(fg.stop.Plateau(1e-6, patience=100), EARLY_STOP_SEED)
    finals = [_minibatch_fit(fg.stop.LossDelta(0.1), s)[1].final_loss for s in range(SEEDS)]
    facts = E7Facts(
        **vars(ex.facts),
        loss_delta_steps=r_ld.steps,
        loss_delta_batch_loss=float(r_ld.history.loss[-1]),
        loss_delta_final_loss=r_ld.final_loss,
        loss_delta_kernel=m_ld.kernel.ravel().tolist(),
        loss_delta_bias=float(m_ld.bias[0]),
        plateau_steps=r_pl.steps,
        plateau_final_loss=r_pl.final_loss,
        plateau_kernel=m_pl.kernel.ravel().tolist(),
        plateau_bias=float(m_pl.bias[0]),
        loss_delta_bad_share=float(np.mean(np.asarray(finals) > 1.0)),
    )
    return Experiment(ID, TITLE, facts, results={**ex.results, "loss_delta": r_ld, "plateau": r_pl}, data=ex.data,
                      models={**ex.models, "loss_delta": m_ld, "plateau": m_pl})


def tell(ex: Experiment[E7Facts]) -> List[str]:
    """The recovery with minibatches, then LossDelta's early stop against Plateau's."""
    f, r = ex.facts, ex.results["run"]
    r_ld, r_pl = ex.results["loss_delta"], ex.results["plateau"]
    return [
        f"E6 with minibatches of {r.batch_size} samples, lr {r.learning_rate:g}.",
        f"after {r.steps} steps ({r.stopped_by}):",
        f"recovered: {e6.recovered(f.kernel, f.bias)}",
        f"final loss {g(f.final_loss)} (on all samples)",
        "LossDelta(0.1) stops when two consecutive batch losses differ by at most 0.1.  A minibatch loss is noisy: "
        "it jumps with the samples drawn, so two batches can land within 0.1 of each other by chance, far "
        "from the minimum.",
        f"  LossDelta(0.1), seed {EARLY_STOP_SEED}: stopped ({r_ld.stopped_by}) at step {f.loss_delta_steps}, "
        f"batch loss {g(f.loss_delta_batch_loss)}, loss on all samples {g(f.loss_delta_final_loss)}, "
        f"kernel {vec(f.loss_delta_kernel, 2)}, bias {f.loss_delta_bias:.2f}  (the walkthrough's run "
        "stopped at loss ~40)",
        f"  over {SEEDS} seeds, LossDelta(0.1) stopped with a loss above 1 on all samples in "
        f"{100 * f.loss_delta_bad_share:.0f}% of the runs.",
        f"  Plateau(1e-6, patience=100) waits until the best loss has not improved for 100 steps: stopped "
        f"({r_pl.stopped_by}) at step {f.plateau_steps}, loss {g(f.plateau_final_loss)}, "
        f"kernel {vec(f.plateau_kernel, 2)}, bias {f.plateau_bias:.2f}.",
    ]


def figure(ex: Experiment[E7Facts]) -> "Figure":
    """The three runs on a logarithmic step axis: a 2-step run beside 1000-step ones."""
    return e6.figure(ex, log_steps=True)
