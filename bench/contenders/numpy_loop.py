"""NumPy: a Python loop over the hand-derived gradients, one matrix product per term."""

from __future__ import annotations

import time
from typing import List

import numpy as np

from contenders.base import Contender, Runner, segment_bounds
from workloads import Workload


class NumpyRunner(Runner):
    segmentable = True

    def __init__(self, w: Workload) -> None:
        self.w = w
        self.params: List[np.ndarray] = []

    def reset(self):
        self.params = [a.copy() for a in self.w.init]

    def run(self, steps, segments=1):
        w = self.w
        x, y, lr, batches = w.x, w.y, np.float32(w.lr), w.batches
        losses = np.empty(steps)
        stamps = []
        two = len(w.layers) == 2
        bias = w.layers[0][2]
        ps = self.params
        scale = np.float32(2.0 / (w.rows * y.shape[1]))
        for a, b in segment_bounds(steps, segments):
            for t in range(a, b):
                if batches is None:
                    xb, yb = x, y
                else:
                    idx = batches[t]
                    xb, yb = x[idx], y[idx]
                if two:
                    k1, b1, k2, b2 = ps
                    h = xb @ k1
                    h += b1
                    np.maximum(h, 0, out=h)
                    p = h @ k2
                    p += b2
                    d = p - yb
                    losses[t] = np.mean(d * d)
                    dp = d * scale
                    dk2 = h.T @ dp
                    db2 = dp.sum(0)
                    dh = dp @ k2.T
                    dh *= h > 0
                    dk1 = xb.T @ dh
                    db1 = dh.sum(0)
                    k1 -= lr * dk1
                    b1 -= lr * db1
                    k2 -= lr * dk2
                    b2 -= lr * db2
                else:
                    k = ps[0]
                    p = xb @ k
                    if bias:
                        p += ps[1]
                    d = p - yb
                    losses[t] = np.mean(d * d)
                    dp = d * scale
                    k -= lr * (xb.T @ dp)
                    if bias:
                        ps[1] -= lr * dp.sum(0)
            if segments > 1:
                stamps.append(time.perf_counter())
        return losses, stamps

    def weights(self):
        return [a.copy() for a in self.params]


class Numpy(Contender):
    name, key = "NumPy loop", "numpy"

    def available(self):
        return True, np.__version__

    def prepare(self, w):
        return NumpyRunner(w)
