"""Side by side: fastgrad's ``fit`` against every peer installed, on the same training runs.

    python bench/compare.py [--steps N] [--workloads W1,W3] [--quick] [--json out.json]
                            [--repeats R] [--only numpy,jax_scan,...]

Workloads (issue 4), all float32, SGD, MSE, the same data, initial weights and batch indices for
every contender; every contender records the loss of every step:

    W1  one weight, x = y = [1, 2], w0 = 2, no bias, full batch, lr 0.1
    W2  one weight, x = y = minmax(1..1999), w0 = 2, no bias, batch 1, lr 0.1
    W3  Dense 3->1 on 100 samples, y = 3x1 + 2x2 - 7x3 + 5, batch 1, lr 0.1
    W4  W3 with batches of 3
    W5  Dense(10, relu) -> Dense(1) on make_regression(10 x 10), batch 1, lr 1e-4
        (W1-W5: 10,000 steps each; --steps changes that)
    W6  784 -> 256 (relu) -> 10 on 8192 random samples (one-hot targets), batch 128, lr 0.01, 200 steps
    W7  W6 with the full batch of 8192, 20 steps
        (W6, W7: their own step counts; --quick shortens every workload)

Contenders: fastgrad (``fastgrad.fit`` as users call it; the whole call is timed), a plain
hand-written C++ loop (bench/yardstick.cpp, W1-W5: the yardstick), a NumPy loop with the
hand-derived gradients, TensorFlow eager with ``tf.GradientTape`` as the walkthrough writes it,
TensorFlow with ``tf.function``, PyTorch eager with ``torch.optim.SGD``, JAX ``jit`` (a jitted step
called from Python) and JAX ``lax.scan`` (the whole run compiled; compile time not counted).
A peer that is not installed is skipped with a line saying so.

Batch indices are drawn once per workload with ``fastgrad.BatchStream(n, batch, "random", seed)``,
as ``fit`` draws them, and the script checks that ``fit`` used exactly those.

Timing: every contender gets a short untimed warm-up.  A contender whose full run takes more than
a few seconds (eager TensorFlow, say) runs once, timed in five segments: its min-max is over the
segments (marked ``seg``).  All others run the full workload several times (``rep``), in rounds:
one run of each contender per round, so that the machine's slow and fast spells (it is shared;
its speed moves by up to 2x over seconds) fall on all of them alike; after a run longer than
0.1 s the script pauses 0.3 s (untimed), so that the thread pools such a run leaves spinning
(OpenMP's, TensorFlow's) are idle before the next contender runs.  A contender whose run takes
under 50 ms (fastgrad, the C++ loop and lax.scan on W1-W5; a run estimated from the warm-up
at under 1 s is timed once, whole, to know) does untimed runs of its own for
2 ms right before each timed one: the pauses and the other contenders' runs leave the machine
cold (this virtual CPU's caches and predictors hold another tenant's work after an idle spell),
which costs such a short run up to 2x, and the untimed runs pay that instead.  Measured with
fastgrad's W1: 13.5 ns a step run after run; right after a 0.3 s pause 36 ns, after one untimed
run 16 ns, after three 14 ns.  For W6 and W7 the roofline
is the time NumPy's matmul takes for the step's five matrix products (forward X@K1, H@K2;
backward H.T@dZ2, dZ2@K2.T, X.T@dZ1), timed in the same run as fastgrad is: runs of as many
tries as fastgrad's run has steps, one before the contenders and one after each round, each
run's mean one figure, and their median the roofline (the median of single tries, also printed,
would leave out the machine's stalls, which a 200-step run cannot); each run is followed by the
0.3 s pause (OpenBLAS's threads spin for about 0.1 s after a product).  fastgrad's figure is the whole ``fit`` call divided by the steps, so it includes
fit's fixed costs (checking the data, setting up the run, building the result).

The machine sets OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE, which slow OpenBLAS down; this script
re-executes itself once with both removed from the environment, so every contender (NumPy's
OpenBLAS and whatever the peers load) runs without them.  Tests and CI leave them alone.

Exit status: 0 unless something failed (a contender raised, the yardstick did not compile, fit
used other batches than the ones drawn).  A final loss that differs is reported, not an error.
"""

from __future__ import annotations

import os
import sys

_MARKER = "FASTGRAD_BENCH_REEXEC"
_BLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def _reexec_without_blas_overrides() -> None:
    """Run this script again with OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE unset (once: a marker guards it).

    It must happen before NumPy (and its OpenBLAS) is loaded, since OpenBLAS reads them at load.
    """
    if _MARKER in os.environ:
        return
    env = {k: v for k, v in os.environ.items() if k not in _BLAS_VARS}
    removed = [f"{k}={os.environ[k]}" for k in _BLAS_VARS if k in os.environ]
    env[_MARKER] = ";".join(removed) if removed else "none set"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter
    argv = list(getattr(sys, "orig_argv", [sys.executable, *sys.argv]))
    argv[0] = sys.executable
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, argv, env)


if __name__ == "__main__":
    _reexec_without_blas_overrides()

import argparse  # noqa: E402
import contextlib  # noqa: E402
import ctypes  # noqa: E402
import gc  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable, Dict, List, Optional, Sequence, Tuple  # noqa: E402

import numpy as np  # noqa: E402

import fastgrad as fg  # noqa: E402
from fastgrad.data import e6_data, e8_data  # noqa: E402

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
SEED = 42  # seeds the batch draws of every workload
ALL_WORKLOADS = ("W1", "W2", "W3", "W4", "W5", "W6", "W7")
SMALL = ("W1", "W2", "W3", "W4", "W5")
SETTLE_AFTER_S = 0.1  # after a timed run longer than this, pause (untimed) before the next one
SETTLE_S = 0.3
REWARM_BELOW_S = 0.05  # a run shorter than this is timed right after untimed ones of its own,
REWARM_S = 0.002  # for at least this long (at least one)
ESTIMATE_FULL_BELOW_S = 1.0  # a run estimated (from a short warm-up) below this is timed once, whole


# ============================================================================================
# workloads
# ============================================================================================


@dataclass
class Workload:
    id: str
    title: str
    x: np.ndarray  # (n, I) float32
    y: np.ndarray  # (n, O) float32
    layers: List[Tuple[int, str, bool]]  # (units, activation, use_bias)
    init: List[np.ndarray]  # initial weights, get_weights() order, float32, Keras layout
    lr: float
    batch_size: Optional[int]  # None: full batch
    steps: int
    batches: Optional[np.ndarray] = None  # (steps, batch) int64; None: full batch
    loss0: float = 0.0  # full-data loss at the initial weights (float64)

    @property
    def rows(self) -> int:
        return self.x.shape[0] if self.batch_size is None else self.batch_size

    @property
    def hidden(self) -> int:
        return self.layers[0][0] if len(self.layers) == 2 else 0

    def batch(self, t: int) -> Optional[np.ndarray]:
        return None if self.batches is None else self.batches[t]


def _fg_model(layers: Sequence[Tuple[int, str, bool]]):
    dense = [fg.Dense(u, activation=a, use_bias=b) for u, a, b in layers]
    return dense[0] if len(dense) == 1 else fg.Sequential(dense)


def _draw_batches(n: int, k: int, steps: int) -> np.ndarray:
    stream = fg.BatchStream(n, k, "random", SEED)
    chunks, have = [], 0
    while have < steps:
        c = stream.next_chunk()
        chunks.append(c)
        have += len(c)
    return np.ascontiguousarray(np.concatenate(chunks)[:steps], dtype=np.int64)


def full_loss(layers, weights, x, y) -> float:
    """MSE over all of (x, y) at ``weights``, in float64 NumPy (the same judge for everyone)."""
    a = x.astype(np.float64)
    i = 0
    for _, act, use_bias in layers:
        a = a @ weights[i].astype(np.float64)
        i += 1
        if use_bias:
            a = a + weights[i].astype(np.float64)
            i += 1
        if act == "relu":
            a = np.maximum(a, 0.0)
    return float(np.mean((a - y.astype(np.float64)) ** 2))


def make_workload(wid: str, small_steps: int, quick: bool) -> Workload:
    f32 = np.float32
    if wid in ("W1", "W2"):
        if wid == "W1":
            x = np.array([[1.0], [2.0]], dtype=f32)
            title, bs = "one weight, x = y = [1, 2], w0 = 2, full batch, lr 0.1", None
        else:
            x = fg.minmax(np.arange(1, 2000, dtype=np.float64)).astype(f32).reshape(-1, 1)
            title, bs = "one weight, x = y = minmax(1..1999), w0 = 2, batch 1, lr 0.1", 1
        y = x.copy()
        layers = [(1, "linear", False)]
        init = [np.array([[2.0]], dtype=f32)]
        lr, steps = 0.1, small_steps
    elif wid in ("W3", "W4"):
        xd, yd = e6_data()
        x, y = xd.astype(f32), yd.astype(f32).reshape(-1, 1)
        bs = 1 if wid == "W3" else 3
        title = f"Dense 3->1 on 100 samples (y = 3x1 + 2x2 - 7x3 + 5), batch {bs}, lr 0.1"
        layers = [(1, "linear", True)]
        model = fg.Dense(1, seed=42)
        model.build(3)
        init = model.get_weights()
        lr, steps = 0.1, small_steps
    elif wid == "W5":
        xd, yd = e8_data()
        x, y = xd.astype(f32), yd.astype(f32).reshape(-1, 1)
        title = "Dense(10, relu) -> Dense(1) on make_regression(10 x 10), batch 1, lr 1e-4"
        layers = [(10, "relu", True), (1, "linear", True)]
        model = fg.Sequential([fg.Dense(10, "relu"), fg.Dense(1)], seed=0)
        model.build(10)
        init = model.get_weights()
        bs, lr, steps = 1, 1e-4, small_steps
    elif wid in ("W6", "W7"):
        rng = np.random.default_rng(0)
        x = rng.random((8192, 784), dtype=f32)
        y = np.eye(10, dtype=f32)[rng.integers(0, 10, size=8192)]
        layers = [(256, "relu", True), (10, "linear", True)]
        model = fg.Sequential([fg.Dense(256, "relu"), fg.Dense(10)], seed=0)
        model.build(784)
        init = model.get_weights()
        lr = 0.01
        if wid == "W6":
            bs, steps = 128, (20 if quick else 200)
            title = "784 -> 256 (relu) -> 10, 8192 random samples, batch 128, lr 0.01"
        else:
            bs, steps = None, (3 if quick else 20)
            title = "784 -> 256 (relu) -> 10, 8192 random samples, full batch, lr 0.01"
    else:
        raise ValueError(f"--workloads: unknown workload {wid!r}; expected some of {', '.join(ALL_WORKLOADS)}")
    init = [np.ascontiguousarray(w, dtype=f32) for w in init]
    w = Workload(wid, title, np.ascontiguousarray(x), np.ascontiguousarray(y), layers, init, lr, bs, steps)
    if bs is not None:
        w.batches = _draw_batches(x.shape[0], bs, steps)
    w.loss0 = full_loss(layers, init, w.x, w.y)
    return w


# ============================================================================================
# contenders: each makes a Runner for a workload; reset() is untimed, run(steps, segments) is timed
# ============================================================================================


class Runner:
    """One contender prepared for one workload.

    ``reset()`` puts the initial weights back (untimed).  ``run(steps, segments)`` trains from
    there and returns ``(losses, segment_end_times)``: the loss of every step and, when
    ``segments > 1``, ``perf_counter()`` at the end of each of ``segments`` equal stretches of
    steps (only Python-loop runners support segments).  ``weights()`` returns the final weights.
    """

    segmentable = False
    precompiled = False  # True: compiled for the run's length when prepared; one untimed full run, no short warm-ups

    def reset(self) -> None:
        raise NotImplementedError

    def run(self, steps: int, segments: int = 1) -> Tuple[np.ndarray, List[float]]:
        raise NotImplementedError

    def weights(self) -> List[np.ndarray]:
        raise NotImplementedError


def _segment_bounds(steps: int, segments: int) -> List[Tuple[int, int]]:
    edges = np.linspace(0, steps, segments + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


class Contender:
    name = ""
    key = ""

    def available(self) -> Tuple[bool, str]:
        """(True, version) or (False, why it is skipped)."""
        return True, ""

    def supports(self, w: Workload) -> bool:
        return True

    def prepare(self, w: Workload) -> Runner:
        raise NotImplementedError


# ---- fastgrad -------------------------------------------------------------------------------


class FastgradRunner(Runner):
    def __init__(self, w: Workload) -> None:
        self.w = w
        self.model = _fg_model(w.layers)
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


# ---- the C++ yardstick ----------------------------------------------------------------------


def build_yardstick() -> Path:
    """Compile bench/yardstick.cpp into bench/.cache (once per version of the source)."""
    src = HERE / "yardstick.cpp"
    cxx = os.environ.get("CXX") or shutil.which("g++") or "g++"
    flags = ["-O2", "-std=c++17", "-shared", "-fPIC"]
    digest = hashlib.sha256(src.read_bytes() + " ".join([cxx, *flags]).encode()).hexdigest()[:16]
    lib = CACHE / f"yardstick-{digest}.so"
    if not lib.exists():
        CACHE.mkdir(exist_ok=True)
        tmp = lib.with_suffix(f".{os.getpid()}.tmp")
        proc = subprocess.run([cxx, *flags, str(src), "-o", str(tmp)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{cxx} failed on {src}:\n{proc.stderr}")
        tmp.replace(lib)
    return lib


class YardstickRunner(Runner):
    """Calls ``yardstick_train_f32`` once for the whole run; the ctypes pointers are made in
    ``reset`` (untimed), so the timed call is the C++ loop plus one ctypes call."""

    def __init__(self, fn, w: Workload) -> None:
        self.fn, self.w = fn, w
        self.params: List[np.ndarray] = []
        self.losses = np.empty(0, dtype=np.float32)
        self.args: tuple = ()

    def reset(self):
        w = self.w
        self.params = [a.copy() for a in w.init]
        if len(self.losses) < w.steps:
            self.losses = np.empty(w.steps, dtype=np.float32)
        fp = ctypes.POINTER(ctypes.c_float)
        null = ctypes.cast(None, fp)

        def p(a):
            return a.ctypes.data_as(fp)

        if w.hidden:
            k1, b1, k2, b2 = (p(a) for a in self.params)
        else:
            k1 = p(self.params[0])
            b1 = p(self.params[1]) if len(self.params) == 2 else null
            k2 = b2 = null
        idx = (w.batches.ctypes.data_as(ctypes.POINTER(ctypes.c_int64)) if w.batches is not None
               else ctypes.cast(None, ctypes.POINTER(ctypes.c_int64)))
        self.head = (p(w.x), p(w.y), w.x.shape[0], w.x.shape[1], w.hidden, w.y.shape[1], idx, w.rows)
        self.tail = (ctypes.c_float(w.lr), k1, b1, k2, b2, p(self.losses))

    def run(self, steps, segments=1):
        if steps > len(self.losses):
            raise ValueError(f"reset() sized the loss buffer for {len(self.losses)} steps, asked for {steps}")
        rc = self.fn(*self.head, steps, *self.tail)
        if rc != 0:
            raise RuntimeError(f"yardstick_train_f32 returned {rc}")
        return self.losses[:steps].copy(), []

    def weights(self):
        return [a.copy() for a in self.params]


class Yardstick(Contender):
    name, key = "C++ yardstick", "yardstick"

    def __init__(self) -> None:
        self.fn = None

    def available(self):
        try:
            lib = ctypes.CDLL(str(build_yardstick()))
        except (OSError, RuntimeError, FileNotFoundError) as e:
            raise RuntimeError(f"the C++ yardstick could not be built: {e}") from e
        fn = lib.yardstick_train_f32
        fp = ctypes.POINTER(ctypes.c_float)
        i64 = ctypes.c_int64
        fn.argtypes = [fp, fp, i64, i64, i64, i64, ctypes.POINTER(i64), i64, i64, ctypes.c_float, fp, fp, fp, fp, fp]
        fn.restype = ctypes.c_int
        self.fn = fn
        return True, "g++ -O2 -std=c++17"

    def supports(self, w):
        return w.id in SMALL

    def prepare(self, w):
        return YardstickRunner(self.fn, w)


# ---- NumPy, hand-derived --------------------------------------------------------------------


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
        for a, b in _segment_bounds(steps, segments):
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


# ---- TensorFlow -----------------------------------------------------------------------------


def _import_tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    return tf


class TFEagerRunner(Runner):
    """The walkthrough's loop: a custom Keras Dense layer, ``tf.GradientTape``, the Keras MSE,
    ``assign_sub`` on each variable, and ``current_loss.numpy()`` recorded every step.

    Two changes that Keras 3 forces: the layer creates its variables with ``add_weight`` (Keras 3
    no longer tracks a ``tf.Variable`` set as an attribute), and the MSE is ``tf.keras.metrics.mse``
    (``tf.keras.metrics.mean_squared_error`` is gone; ``mse`` is the same function).  Batches come
    from the shared index array instead of ``dataset.sample``.
    """

    segmentable = True

    def __init__(self, tf, w: Workload) -> None:
        self.tf, self.w = tf, w
        init = w.init

        class CustomDense(tf.keras.layers.Layer):
            def __init__(self, units, activation, use_bias, kernel, bias):
                super().__init__()
                self.units = units
                self.activation = tf.keras.activations.get(activation)
                self.use_bias = use_bias
                self._k0, self._b0 = kernel, bias

            def build(self, input_shape):
                self.wgt = self.add_weight(shape=self._k0.shape, initializer=tf.keras.initializers.Constant(self._k0),
                                           trainable=True, name="weights")
                if self.use_bias:
                    self.bs = self.add_weight(shape=self._b0.shape, initializer="zeros", trainable=True, name="biases")
                super().build(input_shape)

            def call(self, inputs):
                z = tf.matmul(inputs, self.wgt)
                if self.use_bias:
                    z = z + self.bs
                return self.activation(z)

        self.dense = []
        i = 0
        for units, act, use_bias in w.layers:
            k = init[i]
            b = init[i + 1] if use_bias else None
            i += 2 if use_bias else 1
            layer = CustomDense(units, act, use_bias, k, b)
            layer.build(input_shape=(k.shape[0],))
            self.dense.append(layer)

    def reset(self):
        i = 0
        for layer in self.dense:
            layer.wgt.assign(self.w.init[i])
            i += 1
            if layer.use_bias:
                layer.bs.assign(self.w.init[i])
                i += 1

    def run(self, steps, segments=1):
        tf, w = self.tf, self.w
        x, y, lr, batches = w.x, w.y, w.lr, w.batches
        dense = self.dense
        loss_list = []
        stamps = []
        for a, b in _segment_bounds(steps, segments):
            for t in range(a, b):
                if batches is None:
                    random_x, random_y = x, y
                else:
                    idx = batches[t]
                    random_x, random_y = x[idx], y[idx]
                with tf.GradientTape() as tape:
                    h = random_x
                    for layer in dense:
                        h = layer(h)
                    current_loss = tf.reduce_mean(tf.keras.metrics.mse(random_y, h))
                variables = [v for layer in dense for v in layer.trainable_variables]
                gradient = tape.gradient(current_loss, variables)
                for v, g in zip(variables, gradient):
                    v.assign_sub(lr * g)
                loss_list.append(current_loss.numpy())
            if segments > 1:
                stamps.append(time.perf_counter())
        return np.asarray(loss_list, dtype=np.float64), stamps

    def weights(self):
        return [np.array(v.numpy()) for layer in self.dense for v in layer.trainable_variables]


class TFFunctionRunner(Runner):
    """A ``tf.function`` step (gather, forward, tape, ``assign_sub``) called from a Python loop."""

    segmentable = True

    def __init__(self, tf, w: Workload) -> None:
        self.tf, self.w = tf, w
        self.vars = [tf.Variable(a) for a in w.init]
        X, Y = tf.constant(w.x), tf.constant(w.y)
        spec, lr, variables = w.layers, tf.constant(w.lr, tf.float32), self.vars

        def loss_of(xb, yb):
            a, i = xb, 0
            for _, act, use_bias in spec:
                a = tf.matmul(a, variables[i])
                i += 1
                if use_bias:
                    a = a + variables[i]
                    i += 1
                if act == "relu":
                    a = tf.nn.relu(a)
            return tf.reduce_mean(tf.square(a - yb))

        def update(xb, yb):
            with tf.GradientTape() as tape:
                loss = loss_of(xb, yb)
            grads = tape.gradient(loss, variables)
            for v, g in zip(variables, grads):
                v.assign_sub(lr * g)
            return loss

        # named functions, not lambdas: AutoGraph cannot find a lambda's source and warns
        def full_step():
            return update(X, Y)

        def batch_step(idx):
            return update(tf.gather(X, idx), tf.gather(Y, idx))

        self.step = tf.function(full_step if w.batches is None else batch_step)

    def reset(self):
        for v, a in zip(self.vars, self.w.init):
            v.assign(a)

    def run(self, steps, segments=1):
        batches, step = self.w.batches, self.step
        losses = np.empty(steps)
        stamps = []
        for a, b in _segment_bounds(steps, segments):
            if batches is None:
                for t in range(a, b):
                    losses[t] = step().numpy()
            else:
                for t in range(a, b):
                    losses[t] = step(batches[t]).numpy()
            if segments > 1:
                stamps.append(time.perf_counter())
        return losses, stamps

    def weights(self):
        return [np.array(v.numpy()) for v in self.vars]


class TFEager(Contender):
    name, key = "TF eager (walkthrough)", "tf_eager"

    def available(self):
        try:
            self.tf = _import_tf()
        except ImportError:
            return False, "TensorFlow is not installed (pip install tensorflow-cpu)"
        return True, self.tf.__version__

    def prepare(self, w):
        return TFEagerRunner(self.tf, w)


class TFFunction(TFEager):
    name, key = "TF tf.function", "tf_function"

    def prepare(self, w):
        return TFFunctionRunner(self.tf, w)


# ---- PyTorch --------------------------------------------------------------------------------


class TorchRunner(Runner):
    """``nn.Linear`` layers (weights transposed from Keras layout), ``F.mse_loss``,
    ``torch.optim.SGD``; ``loss.item()`` recorded every step."""

    segmentable = True

    def __init__(self, torch, w: Workload) -> None:
        self.torch, self.w = torch, w
        mods = []
        self.linears = []
        for units, act, use_bias in w.layers:
            lin = torch.nn.Linear(1, units, bias=use_bias)  # shapes are replaced in reset()
            self.linears.append(lin)
            mods.append(lin)
            if act == "relu":
                mods.append(torch.nn.ReLU())
        self.model = torch.nn.Sequential(*mods)
        self.X, self.Y = torch.from_numpy(w.x), torch.from_numpy(w.y)
        self.B = None if w.batches is None else torch.from_numpy(w.batches)
        self.reset()

    def reset(self):
        torch = self.torch
        i = 0
        with torch.no_grad():
            for lin, (_, _, use_bias) in zip(self.linears, self.w.layers):
                lin.weight = torch.nn.Parameter(torch.from_numpy(np.ascontiguousarray(self.w.init[i].T)).clone())
                i += 1
                if use_bias:
                    lin.bias = torch.nn.Parameter(torch.from_numpy(self.w.init[i]).clone())
                    i += 1
        self.opt = torch.optim.SGD(self.model.parameters(), lr=self.w.lr)

    def run(self, steps, segments=1):
        torch = self.torch
        F = torch.nn.functional
        model, opt, X, Y, B = self.model, self.opt, self.X, self.Y, self.B
        losses = []
        stamps = []
        for a, b in _segment_bounds(steps, segments):
            for t in range(a, b):
                if B is None:
                    xb, yb = X, Y
                else:
                    idx = B[t]
                    xb, yb = X[idx], Y[idx]
                opt.zero_grad()
                loss = F.mse_loss(model(xb), yb)
                loss.backward()
                opt.step()
                losses.append(loss.item())
            if segments > 1:
                stamps.append(time.perf_counter())
        return np.asarray(losses), stamps

    def weights(self):
        out = []
        for lin, (_, _, use_bias) in zip(self.linears, self.w.layers):
            out.append(lin.weight.detach().numpy().T.copy())
            if use_bias:
                out.append(lin.bias.detach().numpy().copy())
        return out


class Torch(Contender):
    name, key = "PyTorch eager + optim.SGD", "torch"

    def available(self):
        try:
            import torch
        except ImportError:
            return False, "PyTorch is not installed (pip install torch)"
        self.torch = torch
        return True, f"{torch.__version__}, {torch.get_num_threads()} threads"

    def prepare(self, w):
        return TorchRunner(self.torch, w)


# ---- JAX ------------------------------------------------------------------------------------


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
        for a, b in _segment_bounds(steps, segments):
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


CONTENDERS: List[Callable[[], Contender]] = [Fastgrad, Yardstick, Numpy, TFEager, TFFunction, Torch, JaxJit, JaxScan]


# ============================================================================================
# measuring
# ============================================================================================


@dataclass
class Timing:
    per_step_us: List[float]  # one figure per repeat (or per segment)
    mode: str  # "rep" | "seg"
    losses: np.ndarray
    weights: List[np.ndarray]

    @property
    def median(self) -> float:
        return statistics.median(self.per_step_us)


@dataclass
class Policy:
    min_repeats: int = 3
    max_repeats: int = 21
    budget_s: float = 3.0  # stop repeating once this much was spent (after min_repeats)
    segment_above_s: float = 4.0  # a full run estimated longer than this runs once, in segments
    segments: int = 5
    fixed_repeats: Optional[int] = None


@contextlib.contextmanager
def _gc_paused():
    """The garbage collector off while a run is timed, as timeit and pytest-benchmark do.

    No gc.collect() before the run: a full collection walks every object the process holds
    (TensorFlow, JAX and PyTorch hold many) and leaves the caches cold, which charges the next
    run for what came before it; that penalised whichever contender does work in Python per
    call (measured: fastgrad's W1 went from 25 to 61 ns a step)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


class Measurement:
    """One contender's timing on one workload, taken a run at a time.

    ``start()`` warms the runner up; a contender whose full run is estimated to take longer than
    ``policy.segment_above_s`` is then timed at once, in segments of one run (``done``).  The
    others are timed by ``run_once()``, one full run per call: main() calls it round-robin
    over the contenders, so that the machine's slow and fast spells (it is shared, and its
    speed moves by 2x over seconds) fall on every contender alike instead of on whichever
    happened to run then."""

    def __init__(self, runner: Runner, steps: int, policy: Policy) -> None:
        self.runner, self.steps, self.policy = runner, steps, policy
        self.times: List[float] = []
        self.est = float("inf")  # seconds a full run is estimated to take
        self.losses: Optional[np.ndarray] = None
        self.timing: Optional[Timing] = None

    def start(self) -> None:
        runner, steps, policy = self.runner, self.steps, self.policy
        if not runner.precompiled:
            # two warm-ups: the first traces/compiles, the second estimates the cost of a step
            warm = max(1, min(20, steps // 10))
            runner.reset()
            runner.run(warm)
            runner.reset()
            t0 = time.perf_counter()
            runner.run(warm)
            est = (time.perf_counter() - t0) / warm * steps
        if runner.precompiled or est < ESTIMATE_FULL_BELOW_S:
            # one untimed whole run estimates it: the precompiled are compiled for that length,
            # and scaling up a run of a few steps multiplies its fixed cost too (fit's set-up and
            # result, some 20 µs, became 10 ms at W1-W5's 500x and could put a 0.2 ms run above
            # REWARM_BELOW_S)
            runner.reset()
            t0 = time.perf_counter()
            runner.run(steps)
            est = time.perf_counter() - t0
        self.est = est
        if runner.segmentable and est > policy.segment_above_s and policy.fixed_repeats is None:
            runner.reset()
            with _gc_paused():
                t0 = time.perf_counter()
                losses, stamps = runner.run(steps, policy.segments)
            bounds = _segment_bounds(steps, policy.segments)
            starts = [t0] + stamps[:-1]
            per = [(e - s) / (b - a) * 1e6 for (a, b), s, e in zip(bounds, starts, stamps) if b > a]
            self.timing = Timing(per, "seg", np.asarray(losses, dtype=np.float64), runner.weights())

    @property
    def done(self) -> bool:
        if self.timing is not None:
            return True
        n, p = len(self.times), self.policy
        if p.fixed_repeats is not None:
            return n >= p.fixed_repeats
        return n >= p.max_repeats or (n >= p.min_repeats and sum(self.times) > p.budget_s)

    def run_once(self) -> None:
        if self.est < REWARM_BELOW_S:  # see the module docstring: a warm machine for the timed run
            t0 = time.perf_counter()
            while True:
                self.runner.reset()
                self.runner.run(self.steps)
                if time.perf_counter() - t0 >= REWARM_S:
                    break
        self.runner.reset()
        with _gc_paused():
            t0 = time.perf_counter()
            losses, _ = self.runner.run(self.steps)
            self.times.append(time.perf_counter() - t0)
        self.losses = losses

    def result(self) -> Timing:
        if self.timing is None:
            per = [t / self.steps * 1e6 for t in self.times]
            self.timing = Timing(per, "rep", np.asarray(self.losses, dtype=np.float64), self.runner.weights())
        return self.timing


def roofline_samples(w: Workload, tries: int) -> List[float]:
    """µs NumPy's matmul takes for the step's five matrix products, one figure per try.

    main() times runs of ``w.steps`` tries (as many as fastgrad's run has steps) before the
    contenders' runs and after each round of them; the roofline is the median over those runs
    of their mean, as fastgrad's figure is the median over its runs of theirs."""
    rng = np.random.default_rng(1)
    f32 = np.float32
    b = w.rows
    (i, hdim), (_, o) = w.init[0].shape, w.init[2].shape
    X = rng.random((b, i), dtype=f32)
    K1, K2 = w.init[0].copy(), w.init[2].copy()
    H = rng.random((b, hdim), dtype=f32)
    dZ2 = rng.random((b, o), dtype=f32)
    dZ1 = rng.random((b, hdim), dtype=f32)

    def five():
        X @ K1  # forward, layer 1
        H @ K2  # forward, layer 2
        H.T @ dZ2  # dK2
        dZ2 @ K2.T  # dH
        X.T @ dZ1  # dK1

    five()
    five()
    times = []
    for _ in range(tries):
        t0 = time.perf_counter()
        five()
        times.append((time.perf_counter() - t0) * 1e6)
    return times


# ============================================================================================
# reporting
# ============================================================================================


def machine_lines() -> List[str]:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        model = platform.processor() or model
    cores = os.cpu_count()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = cores
    try:
        load = "load average %.2f %.2f %.2f" % os.getloadavg()
    except OSError:
        load = "load average unknown"
    return [
        f"machine: {model}, {cores} logical CPUs ({usable} usable by this process), {platform.system()} "
        f"{platform.machine()}; {load} at start",
        f"python {platform.python_version()}, numpy {np.__version__}, fastgrad {fg.__version__}",
    ]


def blas_lines() -> List[str]:
    removed = os.environ.get(_MARKER, "not re-executed (imported as a module?)")
    lines = [f"environment: removed for every contender: {removed}"
             + ("" if removed.startswith("not") else " (OPENBLAS_CORETYPE, OPENBLAS_L2_SIZE now unset)")]
    try:
        import threadpoolctl
    except ImportError:
        lines.append("BLAS: threadpoolctl is not installed, cannot tell which kernel numpy runs")
        return lines
    infos = [i for i in threadpoolctl.threadpool_info() if i.get("user_api") == "blas"]
    if not infos:
        lines.append("BLAS: none found by threadpoolctl")
    for info in infos:
        path = Path(info.get("filepath", ""))
        where = path.parent.name if path.parent.name != "lib" else path.parent.parent.name
        owner = "numpy" if where == "numpy.libs" else "fastgrad's fallback" if where == "scipy_openblas32" else where
        lines.append(
            f"BLAS loaded ({owner}): {info.get('internal_api')} {info.get('version')}, kernel "
            f"{info.get('architecture')}, {info.get('num_threads')} threads ({where}/{path.name})"
        )
    lines.append(f"BLAS fastgrad calls: {fg._core.blas_in_use()}")
    return lines


def _fmt_us(v: float) -> str:
    if v >= 1000:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    if v >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def _rel(a: float, b: float) -> float:
    d = abs(a - b)
    m = max(abs(a), abs(b))
    return 0.0 if d == 0 else d / m


def first_steps_diff(losses: np.ndarray, ref: np.ndarray, k: int = 100) -> float:
    """Largest |difference| over the first k step losses, relative to each reference loss but
    never to less than 1e-6 of the largest of them (losses that reach float32's rounding floor
    within k steps would otherwise give meaningless ratios)."""
    k = min(k, len(losses), len(ref))
    if k == 0:
        return 0.0
    a, b = losses[:k], ref[:k]
    floor = max(1e-6 * float(np.max(np.abs(b))), 1e-30)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), floor)))


def agrees(ours: float, ref: float, loss0: float) -> bool:
    """Final losses agree: within 1e-3 relative, or within 1e-7 of the starting loss (losses that
    end at float32's rounding floor, like W2/W3, are equal only to that precision)."""
    return abs(ours - ref) <= 1e-3 * max(abs(ours), abs(ref)) + 1e-7 * abs(loss0)


# ============================================================================================
# main
# ============================================================================================


def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        prog="python bench/compare.py",
        description="fastgrad's fit side by side with a C++ loop, NumPy, TensorFlow, PyTorch and JAX (issue 4).",
    )
    ap.add_argument("--steps", type=int, default=None, help="steps for W1-W5 (default 10000; 1000 with --quick)")
    ap.add_argument("--workloads", default=",".join(ALL_WORKLOADS), help="comma-separated, e.g. W1,W3 (default all)")
    ap.add_argument("--quick", action="store_true", help="short runs and few repeats, to check that it works")
    ap.add_argument("--repeats", type=int, default=None, help="exactly this many full runs per contender (no segments)")
    ap.add_argument("--only", default=None,
                    help="comma-separated contender keys to run besides fastgrad "
                         "(yardstick,numpy,tf_eager,tf_function,torch,jax_jit,jax_scan)")
    ap.add_argument("--json", dest="json_out", default=None, help="also write every figure to this JSON file")
    args = ap.parse_args(argv)
    ids = [s.strip().upper() for s in args.workloads.split(",") if s.strip()]
    for i in ids:
        if i not in ALL_WORKLOADS:
            ap.error(f"--workloads: unknown workload {i!r}; expected some of {', '.join(ALL_WORKLOADS)}")
    args.ids = ids
    if args.steps is not None and args.steps < 1:
        ap.error("--steps: expected a positive number")
    if args.repeats is not None and args.repeats < 1:
        ap.error("--repeats: expected a positive number")
    args.small_steps = args.steps if args.steps is not None else (1000 if args.quick else 10_000)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    wall0 = time.perf_counter()
    out = print
    for line in machine_lines() + blas_lines():
        out(line)

    policy = Policy(fixed_repeats=args.repeats)
    if args.quick:
        policy = Policy(min_repeats=2, max_repeats=5, budget_s=1.0, segment_above_s=2.0, fixed_repeats=args.repeats)

    errors: List[str] = []
    contenders: List[Contender] = []
    only = None if args.only is None else {s.strip() for s in args.only.split(",") if s.strip()}
    for make in CONTENDERS:
        c = make()
        if only is not None and c.key != "fastgrad" and c.key not in only:
            continue
        try:
            ok, info = c.available()
        except Exception as e:  # the yardstick that does not compile is an error, not a skip
            errors.append(f"{c.name}: {e}")
            out(f"contender {c.name}: ERROR {e}")
            continue
        if ok:
            out(f"contender {c.name}: {info}")
            contenders.append(c)
        else:
            out(f"contender {c.name}: skipped, {info}")
    out("timing: median µs per step; min-max over full repeated runs (rep) or over 5 segments of one run (seg);")
    out("        x fastgrad = contender / fastgrad (above 1: slower than fastgrad); final loss = MSE on all data at")
    out("        the final weights (float64); rel.diff = its relative difference from fastgrad's (DIFFERS: beyond 1e-3")
    out("        relative and beyond 1e-7 of the initial loss; ~: beyond 1e-3 relative only, both at float32's rounding")
    out("        floor); first-100 = max rel. difference of the first 100 step losses from fastgrad's")

    report: Dict[str, dict] = {"machine": machine_lines(), "blas": blas_lines(), "workloads": {}}
    summary: Dict[str, Dict[str, float]] = {}
    for wid in args.ids:
        w = make_workload(wid, args.small_steps, args.quick)
        out("")
        out(f"{w.id}  {w.title} — {w.steps:,} steps")
        head = f"  {'contender':<29}{'µs/step':>10}  {'min-max':<19}{'x fastgrad':>11}  {'final loss':>11}  {'rel.diff':>9}  {'first-100':>9}"
        out(head)
        rows: Dict[str, dict] = {}
        ref: Optional[Timing] = None
        has_roof = w.id in ("W6", "W7")
        # the roofline: one run of w.steps tries of the five products first, then one after each
        # round, each run's mean a figure (as each of fastgrad's runs gives one), so that it weighs
        # the machine's spells and stalls as fastgrad's figure does (the machine is shared: its
        # speed moves by up to 2x over seconds, and the median of single tries would leave out
        # the stalls that a run of 200 steps cannot)
        roof: List[float] = []  # each run's mean
        roof_tries: List[float] = []
        if has_roof:
            tries = roofline_samples(w, w.steps)
            roof.append(statistics.mean(tries))
            roof_tries += tries
            time.sleep(SETTLE_S)  # NumPy's products leave OpenBLAS's threads spinning, as below
        # prepare and warm up every contender; the slow ones are timed then (segments of one run)
        started: List[Tuple[Contender, Measurement]] = []
        for c in contenders:
            if not c.supports(w):
                continue
            try:
                m = Measurement(c.prepare(w), w.steps, policy)
                m.start()
                started.append((c, m))
            except Exception as e:
                errors.append(f"{w.id} {c.name}: {type(e).__name__}: {e}")
                out(f"  {c.name:<29}ERROR {type(e).__name__}: {e}")
                traceback.print_exc(file=sys.stderr)
        # the others: one full run each, round after round, until each has its repeats
        failed = set()
        while True:
            pending = [(c, m) for c, m in started if not m.done and c.key not in failed]
            if not pending:
                break
            for c, m in pending:
                try:
                    m.run_once()
                    if m.times[-1] > SETTLE_AFTER_S:
                        # a long run leaves thread pools spinning (OpenMP waits 200 ms before its
                        # threads sleep; TensorFlow's pools spin too): on 2 cores they would take
                        # the next contender's CPU, so let them go idle first
                        time.sleep(SETTLE_S)
                except Exception as e:
                    failed.add(c.key)
                    errors.append(f"{w.id} {c.name}: {type(e).__name__}: {e}")
                    out(f"  {c.name:<29}ERROR {type(e).__name__}: {e}")
                    traceback.print_exc(file=sys.stderr)
            if has_roof:
                tries = roofline_samples(w, w.steps)
                roof.append(statistics.mean(tries))
                roof_tries += tries
                # the samples leave OpenBLAS's threads spinning for about 0.1 s (measured with
                # /proc/self/task: 110 ms of CPU after one product): let them go idle before
                # the next round, as after every long run
                time.sleep(SETTLE_S)
        for c, m in started:
            if c.key in failed:
                continue
            runner = m.runner
            try:
                tm = m.result()
                if isinstance(runner, FastgradRunner):
                    problem = runner.verify(w.steps)
                    if problem:
                        raise RuntimeError(problem)
            except Exception as e:
                errors.append(f"{w.id} {c.name}: {type(e).__name__}: {e}")
                out(f"  {c.name:<29}ERROR {type(e).__name__}: {e}")
                traceback.print_exc(file=sys.stderr)
                continue
            if len(tm.losses) != w.steps:
                errors.append(f"{w.id} {c.name}: recorded {len(tm.losses)} losses for {w.steps} steps")
            final = full_loss(w.layers, tm.weights, w.x, w.y)
            label = c.name
            if isinstance(runner, FastgradRunner):
                ref, ref_final = tm, final
                label = f"{c.name} ({getattr(runner.result, 'loop', '?')} loop)"
            med, lo, hi = tm.median, min(tm.per_step_us), max(tm.per_step_us)
            ratio = med / ref.median if ref is not None else float("nan")
            if tm is ref or ref is None:
                rel, first, rel_s, first_s, ok = None, None, "—", "—", True
            else:
                rel = _rel(final, ref_final)
                ok = agrees(final, ref_final, w.loss0)
                first = first_steps_diff(tm.losses, ref.losses)
                rel_s = f"{rel:.1e}" + ("" if rel <= 1e-3 else " ~" if ok else " DIFFERS")
                first_s = f"{first:.1e}"
            rng_s = f"{_fmt_us(lo)}–{_fmt_us(hi)} {tm.mode}"
            out(f"  {label:<29}{_fmt_us(med):>10}  {rng_s:<19}{ratio:>11.3g}  {final:>11.4e}  {rel_s:>9}  {first_s:>9}")
            sys.stdout.flush()
            rows[c.key] = {
                "name": label, "median_us": med, "rel_diff": rel, "first_100_diff": first, "min_us": lo, "max_us": hi, "mode": tm.mode,
                "samples_us": tm.per_step_us, "ratio_to_fastgrad": ratio, "final_loss": final,
                "agrees": ok, "last_step_loss": float(tm.losses[-1]) if len(tm.losses) else None,
            }
            summary.setdefault(w.id, {})[c.key] = med
        entry = {"title": w.title, "steps": w.steps, "initial_loss": w.loss0, "contenders": rows}
        if has_roof:
            med, lo, hi = statistics.median(roof), min(roof), max(roof)
            fgm = rows.get("fastgrad", {}).get("median_us")
            tail = "" if fgm is None else f"; fastgrad = {fgm / med:.2f}x roofline"
            one = statistics.median(roof_tries)
            out(f"  roofline: NumPy matmul, the step's 5 products, around fastgrad's runs: {_fmt_us(med)} µs/step "
                f"(median of {len(roof)} runs of {w.steps}, min-max {_fmt_us(lo)}–{_fmt_us(hi)}; single tries' "
                f"median {_fmt_us(one)}){tail}")
            entry["roofline_us"] = {"median": med, "min": lo, "max": hi, "single_try_median": one}
            summary[w.id]["roofline"] = med
        report["workloads"][w.id] = entry

    # ---- summary and the issue's targets ----
    out("")
    out("summary: median µs per step")
    keys = [c.key for c in contenders]
    short = {"fastgrad": "fastgrad", "yardstick": "C++", "numpy": "NumPy", "tf_eager": "TF eager",
             "tf_function": "tf.function", "torch": "PyTorch", "jax_jit": "JAX jit", "jax_scan": "JAX scan"}
    out("  " + f"{'':<4}" + "".join(f"{short[k]:>12}" for k in keys) + f"{'roofline':>12}")
    for wid, meds in summary.items():
        cells = "".join(f"{_fmt_us(meds[k]) if k in meds else '—':>12}" for k in keys)
        roof = _fmt_us(meds["roofline"]) if "roofline" in meds else "—"
        out(f"  {wid:<4}{cells}{roof:>12}")
    out("")
    out("issue 4 targets (fastgrad's medians):")
    for wid, meds in summary.items():
        f = meds.get("fastgrad")
        if f is None:
            continue
        checks = []
        if wid in SMALL:
            if "jax_scan" in meds:
                checks.append(f"vs JAX scan {meds['jax_scan'] / f:.2f}x ({'ok' if f < meds['jax_scan'] else 'MISSED'}, need > 1)")
            if "yardstick" in meds:
                checks.append(f"vs C++ {f / meds['yardstick']:.2f}x slower ({'ok' if f <= 2 * meds['yardstick'] else 'MISSED'}, need <= 2)")
            if "tf_eager" in meds:
                checks.append(f"vs TF eager {meds['tf_eager'] / f:,.0f}x faster ({'ok' if meds['tf_eager'] >= 1e4 * f else 'MISSED'}, need >= 10,000)")
        elif "roofline" in meds:
            r = f / meds["roofline"]
            checks.append(f"{r:.2f}x roofline ({'ok' if r <= 1.10 else 'MISSED'}, need <= 1.10)")
        out(f"  {wid}: " + "; ".join(checks) if checks else f"  {wid}: no peer to compare with")

    wall = time.perf_counter() - wall0
    out("")
    try:
        load = "; load average %.2f %.2f %.2f at the end" % os.getloadavg()
    except OSError:
        load = ""
    out(f"wall time {wall:.0f} s{load}" + ("" if not errors else f"; {len(errors)} error(s):"))
    for e in errors:
        out(f"  ERROR {e}")
    report["errors"] = errors
    report["wall_s"] = wall
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=1))
        out(f"wrote {args.json_out}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
