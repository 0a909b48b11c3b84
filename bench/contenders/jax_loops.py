"""JAX: a ``jax.jit`` step called from Python, and the whole run as one ``lax.scan`` program.

Plain SGD is written out (``p - lr * g``); SGD with momentum is optax's ``optax.sgd(lr, momentum)``
(``b = mu b + g; w -= lr b``, the same steps as Keras's ``v = mu v - lr g; w += v`` at a constant
rate, rounded differently).  Adam is not run: optax's epsilon sits where PyTorch's does, and unlike
PyTorch's it cannot be changed between the steps of a compiled run to match Keras's."""

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


def _update(w: Workload):
    """(init(params) -> state, apply(params, grads, state) -> (params, state)) for ``w.opt``."""
    lr = w.lr
    if w.opt.plain:
        return (lambda params: (),
                lambda params, grads, state: ([p - lr * g for p, g in zip(params, grads)], state))
    import optax

    tx = optax.sgd(lr, momentum=w.opt.momentum)

    def apply(params, grads, state):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return tx.init, apply


class JaxJitRunner(Runner):
    """A ``jax.jit`` step (gather, value_and_grad, SGD) called from a Python loop; the per-step
    losses stay on the device until the end of the run (``jax.device_get`` of the list)."""

    segmentable = True

    def __init__(self, jax, w: Workload) -> None:
        jnp = jax.numpy
        self.jax, self.w = jax, w
        loss_of = _jax_loss(jnp, w.layers)
        vg = jax.value_and_grad(loss_of)
        self.init_state, apply = _update(w)

        def step(params, state, X, Y, idx):
            xb, yb = (X, Y) if idx is None else (X[idx], Y[idx])
            loss, grads = vg(params, xb, yb)
            params, state = apply(params, grads, state)
            return params, state, loss

        self.step = jax.jit(step)
        self.X, self.Y = jnp.asarray(w.x), jnp.asarray(w.y)
        self.B = None if w.batches is None else w.batches.astype(np.int32)
        self.params = self.state = None

    def reset(self):
        self.params = [self.jax.numpy.asarray(a) for a in self.w.init]
        self.state = self.init_state(self.params)

    def run(self, steps, segments=1):
        step, X, Y, B = self.step, self.X, self.Y, self.B
        params, state = self.params, self.state
        losses = []
        stamps = []
        for a, b in segment_bounds(steps, segments):
            for t in range(a, b):
                params, state, loss = step(params, state, X, Y, None if B is None else B[t])
                losses.append(loss)
            if segments > 1:
                self.jax.block_until_ready(params)
                stamps.append(time.perf_counter())
        self.params, self.state = params, state
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
        self.init_state, apply = _update(w)

        def body(carry, xb, yb):
            p, state = carry
            loss, grads = vg(p, xb, yb)
            return apply(p, grads, state), loss

        def run_batches(params, state, X, Y, B):
            return jax.lax.scan(lambda c, idx: body(c, X[idx], Y[idx]), (params, state), B)

        def run_full(params, state, X, Y):
            return jax.lax.scan(lambda c, _: body(c, X, Y), (params, state), None, length=steps)

        self.X, self.Y = jnp.asarray(w.x), jnp.asarray(w.y)
        params = [jnp.asarray(a) for a in w.init]
        state = self.init_state(params)
        if w.batches is None:
            self.args = (self.X, self.Y)
            self.fn = jax.jit(run_full).lower(params, state, *self.args).compile()
        else:
            self.args = (self.X, self.Y, jnp.asarray(w.batches[:steps].astype(np.int32)))
            self.fn = jax.jit(run_batches).lower(params, state, *self.args).compile()
        self.params = self.state = None

    def reset(self):
        self.params = [self.jax.numpy.asarray(a) for a in self.w.init]
        self.state = self.init_state(self.params)

    def run(self, steps, segments=1):
        if steps != self.steps:
            raise ValueError(f"compiled for {self.steps} steps, asked for {steps}")
        (params, _), losses = self.fn(self.params, self.state, *self.args)
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
        try:
            import optax

            opt = f"optax {optax.__version__}"
            self.optax = True
        except ImportError:
            opt = "optax is not installed (pip install optax): W3m skipped"
            self.optax = False
        return True, f"{jax.__version__} ({jax.devices()[0].platform}); {opt}"

    def supports(self, w):
        return w.opt.plain or (w.opt.kind == "sgd" and self.optax)

    def prepare(self, w):
        return self._labelled(JaxJitRunner(self.jax, w), w)

    def _labelled(self, r, w):
        if not w.opt.plain:
            r.label = f"{self.name.split(' (')[0]} + optax.sgd"
        return r


class JaxScan(JaxJit):
    name, key = "JAX lax.scan (whole run)", "jax_scan"

    def prepare(self, w):
        return self._labelled(JaxScanRunner(self.jax, w, w.steps), w)
