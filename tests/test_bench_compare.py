"""bench/compare.py's timing policy (bench/timing.py), on a fake clock: which runs are re-warmed.

A run shorter than REWARM_BELOW_S is timed right after untimed runs of its own.  Whether a run
is that short must not be judged from a warm-up of a few steps scaled up: that multiplies the
run's fixed cost (fit's set-up and result) by hundreds."""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
OURS = ("compare", "contenders", "report", "timing", "workloads")  # bench/'s modules, imported by name


def _ours(name: str) -> bool:
    return name.split(".")[0] in OURS


def _from_bench(mod) -> bool:
    return Path(getattr(mod, "__file__", None) or "/").resolve().is_relative_to(BENCH)


@pytest.fixture(scope="module")
def bench():
    """bench/'s modules, imported as compare.py imports them (bench/ first on the path); those
    imported here are forgotten afterwards."""
    before = {n for n in sys.modules if _ours(n)}
    clashing = sorted(n for n in before if not _from_bench(sys.modules[n]))
    assert not clashing, f"modules of these names, not bench/'s, are already imported: {clashing}"
    sys.path.insert(0, str(BENCH))
    try:
        mods = {name: importlib.import_module(name) for name in ("compare", "timing", "contenders.base")}
        for name, mod in mods.items():
            assert _from_bench(mod), (name, mod.__file__)
        yield types.SimpleNamespace(compare=mods["compare"], timing=mods["timing"], base=mods["contenders.base"])
    finally:
        sys.path.remove(str(BENCH))
        for name in [n for n in sys.modules if _ours(n) and n not in before]:
            del sys.modules[name]


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def fake_runner(bench, clock, fixed_s, per_step_s, precompiled=False):
    class Runner(bench.base.Runner):
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
    bench, monkeypatch, fixed_s, per_step_s, rewarmed, precompiled
):
    timing = bench.timing
    clock = FakeClock()
    monkeypatch.setattr(timing.time, "perf_counter", clock)
    steps = 10_000
    runner = fake_runner(bench, clock, fixed_s, per_step_s, precompiled)
    m = timing.Measurement(runner, steps, timing.Policy())
    m.start()
    whole = fixed_s + steps * per_step_s
    # the estimate is a whole run's time whenever it could be under the re-warm line
    assert m.est == pytest.approx(whole, rel=1e-9) or m.est >= timing.ESTIMATE_FULL_BELOW_S
    before = len(runner.runs)
    m.run_once()
    extra = len(runner.runs) - before - 1  # untimed runs before the timed one
    assert (extra >= 1) == rewarmed
    assert m.times[-1] == pytest.approx(whole, rel=1e-9)


def test_the_command_line_reads_as_before(bench):
    args = bench.compare.parse_args(["--quick", "--workloads", "w1, W3", "--only", "numpy"])
    assert args.ids == ["W1", "W3"] and args.small_steps == 1000 and args.only == "numpy"
    assert bench.compare.parse_args(["--steps", "7"]).small_steps == 7
    with pytest.raises(SystemExit):
        bench.compare.parse_args(["--workloads", "W8"])
