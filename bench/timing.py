"""The timing policy of bench/compare.py: warm-ups, repeated runs in rounds, segments for the slow,
untimed re-warming for the short, pauses after long runs, and the roofline of W6/W7.

docs/performance.md says why each rule is there.
"""

from __future__ import annotations

import contextlib
import gc
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Tuple

import numpy as np

from contenders.base import Contender, Runner, segment_bounds
from workloads import Workload

SETTLE_AFTER_S = 0.1  # after a timed run longer than this, pause (untimed) before the next one
SETTLE_S = 0.3
REWARM_BELOW_S = 0.05  # a run shorter than this is timed right after untimed ones of its own,
REWARM_S = 0.002  # for at least this long (at least one)
ESTIMATE_FULL_BELOW_S = 1.0  # a run estimated (from a short warm-up) below this is timed once, whole
ROOFLINE_WORKLOADS = ("W6", "W7")  # the two-layer nets big enough for matmul to bound a step


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
    (TensorFlow, JAX and PyTorch hold many) and leaves the caches cold, which would charge the
    next run, above all a contender that does work in Python per call, for what came before it."""
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
    others are timed by ``run_once()``, one full run per call: ``measure_workload`` calls it
    round-robin over the contenders, so that the machine's slow and fast spells fall on every
    contender alike instead of on whichever happened to run then."""

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
            # and scaling up a run of a few steps multiplies its fixed cost (fit's set-up and
            # result) too, which could put a short run above REWARM_BELOW_S
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
            bounds = segment_bounds(steps, policy.segments)
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
        if self.est < REWARM_BELOW_S:
            # the pauses and the other contenders' runs leave the machine cold, which costs a
            # short run far more than a long one: untimed runs of its own pay that instead
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

    ``measure_workload`` times runs of ``w.steps`` tries (as many as fastgrad's run has steps)
    before the contenders' runs and after each round of them; the roofline is the median over
    those runs of their mean, as fastgrad's figure is the median over its runs of theirs."""
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


@dataclass
class Measured:
    """What ``measure_workload`` took on one workload."""

    contenders: List[Tuple[Contender, Measurement]]  # in the table's order, those that did not fail
    roof: List[float] = field(default_factory=list)  # roofline: each run's mean µs (empty: none)
    roof_tries: List[float] = field(default_factory=list)  # roofline: every single try


def _roofline_run(w: Workload, got: Measured) -> None:
    tries = roofline_samples(w, w.steps)
    got.roof.append(statistics.mean(tries))
    got.roof_tries += tries
    # NumPy's products leave OpenBLAS's threads spinning: let them go idle before the next runs
    time.sleep(SETTLE_S)


def measure_workload(w: Workload, contenders: List[Contender], policy: Policy,
                     fail: Callable[[Contender, Exception], None]) -> Measured:
    """Time every contender that supports ``w``; ``fail(contender, error)`` is called inside the
    ``except`` of a contender that raised, which is left out from then on."""
    got = Measured([])
    has_roof = w.id in ROOFLINE_WORKLOADS
    # the roofline: a run of w.steps tries before the contenders and one after each round, each
    # run's mean one figure, so that it meets the machine's spells and stalls as fastgrad does
    if has_roof:
        _roofline_run(w, got)
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
            fail(c, e)
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
                    # a long run leaves thread pools spinning (OpenMP's, TensorFlow's), which on
                    # a machine of few cores would take the next contender's CPU
                    time.sleep(SETTLE_S)
            except Exception as e:
                failed.add(c.key)
                fail(c, e)
        if has_roof:
            _roofline_run(w, got)
    got.contenders = [(c, m) for c, m in started if c.key not in failed]
    return got
