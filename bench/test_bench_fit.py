"""pytest-benchmark: ``fastgrad.fit`` as users call it, on bench/compare.py's W1, W3, W4 and W3m (W3 with
momentum; bench/workloads.py).

    pytest bench/ --benchmark-only

Each round trains a fresh copy of the workload's initial weights for STEPS steps (the reset is
untimed).  The checks are about the result, never the time: every step ran, the loss is finite
and it fell.  ``python_loop`` adds a custom Python stopping rule, which makes fit run its Python
loop (issue 4: W3 under 5 µs a step there).
"""

from __future__ import annotations

import numpy as np
import pytest

import fastgrad as fg
from workloads import SEED, fg_model, make_workload

STEPS = 5000
ROUNDS = 5


def _never(state) -> bool:
    """A custom stopping rule that never fires: fit must take its Python loop."""
    return False


@pytest.mark.parametrize("loop", ["auto", "python_loop"])
@pytest.mark.parametrize("wid", ["W1", "W3", "W4", "W3m"])
def test_fit(benchmark, wid, loop):
    w = make_workload(wid, STEPS, quick=False)
    model = fg_model(w.layers)
    stop = [fg.stop.MaxSteps(STEPS)] + ([_never] if loop == "python_loop" else [])

    def setup():
        model.set_weights([a.copy() for a in w.init])
        return (), {}

    def train():
        opt = w.opt.fastgrad(w.lr)  # a fresh one each round: fastgrad's optimizers keep their state
        return fg.fit(model, w.x, w.y, optimizer=opt, batch_size=w.batch_size, stop=stop, seed=SEED)

    result = benchmark.pedantic(train, setup=setup, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    benchmark.extra_info.update(steps=STEPS, loop=getattr(result, "loop", "?"))
    assert result.steps == STEPS and result.stopped_by == "max_steps"
    loss = result.history.loss
    assert np.all(np.isfinite(loss)) and np.isfinite(result.final_loss)
    assert result.final_loss < w.loss0 * 1e-3, (result.final_loss, w.loss0)
    assert loss[-100:].mean() < loss[:100].mean()
