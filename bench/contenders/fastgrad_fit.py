"""fastgrad: ``fastgrad.fit`` as users call it; the whole call is timed, set-up and result included
(a fresh optimizer each run, since fastgrad's optimizers keep their state)."""

from __future__ import annotations

from typing import Optional

import numpy as np

import fastgrad as fg
from contenders.base import Contender, Runner
from workloads import SEED, Workload, fg_model


class FastgradRunner(Runner):
    compare = True

    def __init__(self, w: Workload, plain_sgd: bool = False) -> None:
        self.w = w
        self.model = fg_model(w.layers)
        self.result = None
        self.plain_sgd = plain_sgd

    def reset(self) -> None:
        self.model.set_weights([a.copy() for a in self.w.init])

    def run(self, steps, segments=1):
        w = self.w
        self.result = fg.fit(
            self.model, w.x, w.y, optimizer=fg.SGD(w.base_lr) if self.plain_sgd else w.opt.fastgrad(w.lr),
            batch_size=w.batch_size,
            stop=[fg.stop.MaxSteps(steps)], seed=SEED,
        )
        return self.result.history.loss, []

    def weights(self):
        return [np.asarray(a) for a in self.model.get_weights()]

    def row_label(self) -> str:
        """The table's name for the row, with the loop the last run took."""
        loop = getattr(self.result, "loop", "?")
        return f"fastgrad SGD ({self.w.base}, {loop})" if self.plain_sgd else f"fastgrad fit ({loop} loop)"

    def verify(self, steps: int) -> Optional[str]:
        """What is wrong with the last run, if anything (steps, stop reason, batches)."""
        r = self.result
        if r.steps != steps or r.stopped_by != "max_steps":
            return f"fit ran {r.steps} steps, stopped by {r.stopped_by!r} (expected {steps}, 'max_steps')"
        if self.w.batches is not None:
            used = r.history.batches
            if used is None or used.shape != (steps, self.w.batch_size) or not np.array_equal(used, self.w.batches[:steps]):
                return "fit used other batch indices than BatchStream(n, batch, 'random', seed) drew"
        return None


class Fastgrad(Contender):
    name, key = "fastgrad fit", "fastgrad"

    def available(self):
        return True, fg.__version__

    def supports(self, w):
        return True

    def prepare(self, w):
        return FastgradRunner(w)


class FastgradSGD(Fastgrad):
    """fastgrad's plain-SGD run of the workload's base (W6 for W6a), timed in turns with the rest:
    the other optimizer's cost over plain SGD, from runs that met the same spells of the machine."""

    name, key = "fastgrad fit, plain SGD (base workload)", "fastgrad_sgd"

    def supports(self, w):
        return not w.opt.plain

    def prepare(self, w):
        r = FastgradRunner(w, plain_sgd=True)
        r.compare = False  # another optimizer: its losses are not the reference's
        return r
