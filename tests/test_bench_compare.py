"""bench/compare.py's timing policy, on a fake clock: which runs are re-warmed.

A run shorter than REWARM_BELOW_S is timed right after untimed runs of its own.  Whether a run
is that short must not be judged from a warm-up of a few steps scaled up: that multiplies the
run's fixed cost (fit's set-up and result) by hundreds."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "compare.py"


@pytest.fixture(scope="module")
def compare():
    spec = importlib.util.spec_from_file_location("fastgrad_bench_compare", BENCH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up there
    try:
        spec.loader.exec_module(mod)
        yield mod
    finally:
        del sys.modules[spec.name]


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def fake_runner(compare, clock, fixed_s, per_step_s, precompiled=False):
    class Runner(compare.Runner):
        def __init__(self) -> None:
            self.runs = []

        def reset(self) -> None:
            pass

        def run(self, steps, segments=1):
            self.runs.append(steps)
            clock.now += fixed_s + steps * per_step_s
            return np.zeros(steps), []

        def weights(self):
            return []

    r = Runner()
    r.precompiled = precompiled
    return r


# (fixed cost of a run, cost of a step): fastgrad's W1 cold (a 0.25 ms run whose 20-step
# warm-up, scaled 500x, says 50 ms) and warm; a run that really is long
CASES = [(100e-6, 15e-9, True), (10e-6, 15e-9, True), (1e-3, 20e-6, False)]


@pytest.mark.parametrize("fixed_s, per_step_s, rewarmed", CASES)
@pytest.mark.parametrize("precompiled", [False, True])
def test_a_short_run_is_known_short_and_rewarmed(
    compare, monkeypatch, fixed_s, per_step_s, rewarmed, precompiled
):
    clock = FakeClock()
    monkeypatch.setattr(compare.time, "perf_counter", clock)
    steps = 10_000
    runner = fake_runner(compare, clock, fixed_s, per_step_s, precompiled)
    m = compare.Measurement(runner, steps, compare.Policy())
    m.start()
    whole = fixed_s + steps * per_step_s
    # the estimate is a whole run's time whenever it could be under the re-warm line
    assert m.est == pytest.approx(whole, rel=1e-9) or m.est >= compare.ESTIMATE_FULL_BELOW_S
    before = len(runner.runs)
    m.run_once()
    extra = len(runner.runs) - before - 1  # untimed runs before the timed one
    assert (extra >= 1) == rewarmed
    assert m.times[-1] == pytest.approx(whole, rel=1e-9)
