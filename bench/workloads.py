"""The workloads of bench/compare.py (W1-W7, plain SGD; W3m and W6a, issue 16's optimizers): data,
initial weights, optimizer and batch indices, the same for every contender, and ``full_loss``, the
one judge of every contender's final weights."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

import fastgrad as fg
from fastgrad._batches import BatchStream
from fastgrad.data import e6_data, e8_data

SEED = 42  # seeds the batch draws of every workload
ISSUE4 = ("W1", "W2", "W3", "W4", "W5", "W6", "W7")  # plain SGD
ISSUE16 = ("W3m", "W6a")  # W3 with momentum, W6 with Adam
ALL_WORKLOADS = ISSUE4 + ISSUE16
SMALL = ("W1", "W2", "W3", "W4", "W5")


@dataclass(frozen=True)
class Opt:
    """A workload's optimizer, with Keras 3's arguments and defaults (every contender builds its own
    library's optimizer from it)."""

    kind: str = "sgd"  # "sgd" | "adam"
    momentum: float = 0.0  # sgd
    beta_1: float = 0.9  # adam
    beta_2: float = 0.999
    epsilon: float = 1e-7

    @property
    def plain(self) -> bool:
        """SGD without momentum: w -= lr * g."""
        return self.kind == "sgd" and self.momentum == 0

    def fastgrad(self, lr: float):
        """A fresh fastgrad optimizer (fresh state: fastgrad keeps momentum and moments in it)."""
        if self.kind == "adam":
            return fg.Adam(lr, beta_1=self.beta_1, beta_2=self.beta_2, epsilon=self.epsilon)
        return fg.SGD(lr, momentum=self.momentum)


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
    opt: Opt = Opt()
    base: str = ""  # the issue-4 workload whose data and model this one trains (itself for W1-W7)
    base_lr: float = 0.0  # that workload's learning rate (plain SGD)

    @property
    def rows(self) -> int:
        return self.x.shape[0] if self.batch_size is None else self.batch_size

    @property
    def hidden(self) -> int:
        return self.layers[0][0] if len(self.layers) == 2 else 0


def fg_model(layers: Sequence[Tuple[int, str, bool]]):
    """The fastgrad model for ``layers``: a single Dense, or a Sequential of them."""
    dense = [fg.Dense(u, activation=a, use_bias=b) for u, a, b in layers]
    return dense[0] if len(dense) == 1 else fg.Sequential(dense)


def draw_batches(n: int, k: int, steps: int) -> np.ndarray:
    """The batch indices ``fit`` draws for ``seed=SEED``: every contender trains on these."""
    stream = BatchStream(n, k, "random", SEED)
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


def canonical_id(wid: str) -> Optional[str]:
    """``wid`` as ALL_WORKLOADS spells it ("w3M" -> "W3m"), or None."""
    return {k.upper(): k for k in ALL_WORKLOADS}.get(wid.strip().upper())


def make_workload(wid: str, small_steps: int, quick: bool) -> Workload:
    """W1-W7; W3m is W3 with SGD momentum 0.9 at lr 0.01 (W3's lr 0.1 diverges with momentum),
    W6a is W6 with Adam at lr 1e-3 (Keras's defaults otherwise)."""
    if wid in ISSUE16:
        w = make_workload(wid[:2], small_steps, quick)
        w.id, w.base, w.base_lr = wid, wid[:2], w.lr
        if wid == "W3m":
            w.lr, w.opt = 0.01, Opt("sgd", momentum=0.9)
            w.title = w.title.replace("lr 0.1", "SGD momentum 0.9, lr 0.01")
        else:
            w.lr, w.opt = 1e-3, Opt("adam")
            w.title = w.title.replace("lr 0.01", "Adam (Keras's defaults), lr 1e-3")
        return w
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
    w = Workload(wid, title, np.ascontiguousarray(x), np.ascontiguousarray(y), layers, init, lr, bs, steps,
                 base=wid, base_lr=lr)
    if bs is not None:
        w.batches = draw_batches(x.shape[0], bs, steps)
    w.loss0 = full_loss(layers, init, w.x, w.y)
    return w
