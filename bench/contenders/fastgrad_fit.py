"""fastgrad: ``fastgrad.fit`` as users call it; the whole call is timed, set-up and result included."""

from __future__ import annotations

from typing import Optional

import numpy as np

import fastgrad as fg
from contenders.base import Contender, Runner
from workloads import SEED, Workload, fg_model


class FastgradRunner(Runner):
    def __init__(self, w: Workload) -> None:
        self.w = w
        self.model = fg_model(w.layers)
        self.result = None

    def reset(self) -> None:
        self.model.set_weights([a.copy() for a in self.w.init])

    def run(self, steps, segments=1):
        w = self.w
        self.result = fg.fit(
            self.model, w.x, w.y, optimizer=fg.SGD(w.lr), batch_size=w.batch_size,
            stop=[fg.stop.MaxSteps(steps)], seed=SEED,
        )
        return self.result.history.loss, []

    def weights(self):
        return [np.asarray(a) for a in self.model.get_weights()]

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

    def prepare(self, w):
        return FastgradRunner(w)
