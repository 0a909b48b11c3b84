"""JAX: a ``jax.jit`` step called from Python, and the whole run as one ``lax.scan`` program."""

from __future__ import annotations

import time

import numpy as np

from contenders.base import Contender, Runner, segment_bounds
from workloads import Workload


def _jax_loss(jnp, spec):
    def loss_of(params, xb, yb):
        a, i = xb, 0
        for _, act, use_bias in spec:
            a = a @ params[i]
            i += 1
            if use_bias:
                a = a + params[i]
                i += 1
            if act == "relu":
                a = jnp.maximum(a, 0)
        return jnp.mean((a - yb) ** 2)

    return loss_of


class JaxJitRunner(Runner):
    """A ``jax.jit`` step (gather, value_and_grad, SGD) called from a Python loop; the per-step
    losses stay on the device until the end of the run (``jax.device_get`` of the list)."""

    segmentable = True

    def __init__(self, jax, w: Workload) -> None:
        jnp = jax.numpy
        self.jax, self.w = jax, w
        loss_of = _jax_loss(jnp, w.layers)
        lr = w.lr
        vg = jax.value_and_grad(loss_of)

        def step(params, X, Y, idx):
            xb, yb = (X, Y) if idx is None else (X[idx], Y[idx])
            loss, grads = vg(params, xb, yb)
            return [p - lr * g for p, g in zip(params, grads)], loss

        self.step = jax.jit(step)
        self.X, self.Y = jnp.asarray(w.x), jnp.asarray(w.y)
        self.B = None if w.batches is None else w.batches.astype(np.int32)
        self.params = None

    def reset(self):
        self.params = [self.jax.numpy.asarray(a) for a in self.w.init]

    def run(self, steps, segments=1):
        step, X, Y, B = self.step, self.X, self.Y, self.B
        params = self.params
        losses = []
        stamps = []
        for a, b in segment_bounds(steps, segments):
            for t in range(a, b):
                params, loss = step(params, X, Y, None if B is None else B[t])
                losses.append(loss)
            if segments > 1:
                self.jax.block_until_ready(params)
                stamps.append(time.perf_counter())
        self.params = params
        out = np.asarray(self.jax.device_get(losses), dtype=np.float64)
        return out, stamps

    def weights(self):
        return [np.asarray(p) for p in self.params]


class JaxScanRunner(Runner):
    """The whole run in one compiled program: ``lax.scan`` over the batch indices (or over
    ``steps`` full-batch steps).  Compiled ahead of time for the run's length when prepared;
    compile time is not counted."""

    precompiled = True

    def __init__(self, jax, w: Workload, steps: int) -> None:
        jnp = jax.numpy
        self.jax, self.w, self.steps = jax, w, steps
        vg = jax.value_and_grad(_jax_loss(jnp, w.layers))
        lr = w.lr

        def body(p, xb, yb):
            loss, grads = vg(p, xb, yb)
            return [q - lr * g for q, g in zip(p, grads)], loss

        def run_batches(params, X, Y, B):
            return jax.lax.scan(lambda p, idx: body(p, X[idx], Y[idx]), params, B)

        def run_full(params, X, Y):
            return jax.lax.scan(lambda p, _: body(p, X, Y), params, None, length=steps)

        self.X, self.Y = jnp.asarray(w.x), jnp.asarray(w.y)
        params = [jnp.asarray(a) for a in w.init]
        if w.batches is None:
            self.args = (self.X, self.Y)
            self.fn = jax.jit(run_full).lower(params, *self.args).compile()
        else:
            self.args = (self.X, self.Y, jnp.asarray(w.batches[:steps].astype(np.int32)))
            self.fn = jax.jit(run_batches).lower(params, *self.args).compile()
        self.params = None

    def reset(self):
        self.params = [self.jax.numpy.asarray(a) for a in self.w.init]

    def run(self, steps, segments=1):
        if steps != self.steps:
            raise ValueError(f"compiled for {self.steps} steps, asked for {steps}")
        params, losses = self.fn(self.params, *self.args)
        self.params = params
        return np.asarray(losses, dtype=np.float64), []

    def weights(self):
        return [np.asarray(p) for p in self.params]


class JaxJit(Contender):
    name, key = "JAX jit step", "jax_jit"

    def available(self):
        try:
            import jax
        except ImportError:
            return False, "JAX is not installed (pip install jax jaxlib)"
        self.jax = jax
        return True, f"{jax.__version__} ({jax.devices()[0].platform})"

    def prepare(self, w):
        return JaxJitRunner(self.jax, w)


class JaxScan(JaxJit):
    name, key = "JAX lax.scan (whole run)", "jax_scan"

    def prepare(self, w):
        return JaxScanRunner(self.jax, w, w.steps)
