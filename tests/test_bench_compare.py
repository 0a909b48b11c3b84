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
        names = ("compare", "timing", "contenders.base", "workloads", "report")
        mods = {name: importlib.import_module(name) for name in names}
        for name, mod in mods.items():
            assert _from_bench(mod), (name, mod.__file__)
        yield types.SimpleNamespace(compare=mods["compare"], timing=mods["timing"], base=mods["contenders.base"],
                                    workloads=mods["workloads"], report=mods["report"])
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


def test_issue_16s_workloads_parse_and_train_w3_and_w6_otherwise(bench):
    args = bench.compare.parse_args(["--quick", "--workloads", "w3m, W6A,W3"])
    assert args.ids == ["W3m", "W6a", "W3"]
    wl = bench.workloads
    w3, w3m = wl.make_workload("W3", 50, False), wl.make_workload("W3m", 50, False)
    assert (w3m.base, w3m.opt, w3m.lr, w3m.base_lr) == ("W3", wl.Opt("sgd", momentum=0.9), 0.01, 0.1)
    assert w3.opt.plain and not w3m.opt.plain
    # the same data, initial weights and batches as W3
    assert np.array_equal(w3m.batches, w3.batches) and np.array_equal(w3m.x, w3.x)
    assert all(np.array_equal(a, b) for a, b in zip(w3m.init, w3.init))
    w6a = wl.make_workload("W6a", 50, True)
    assert (w6a.base, w6a.opt.kind, w6a.lr, w6a.base_lr, w6a.steps) == ("W6", "adam", 1e-3, 0.01, 20)
    assert (w6a.opt.beta_1, w6a.opt.beta_2, w6a.opt.epsilon) == (0.9, 0.999, 1e-7)  # Keras's defaults


def test_a_quick_w3m_run_with_the_yardstick(bench, capsys):
    rc = bench.compare.main(["--quick", "--steps", "300", "--workloads", "W3m", "--only", "fastgrad,yardstick"])
    out = capsys.readouterr().out
    assert rc == 0, out
    rows = {line.split("  ")[1].strip(): line for line in out.splitlines() if line.startswith("  ") and "rep" in line}
    assert any(k.startswith("fastgrad fit (") for k in rows), out
    assert any(k.startswith("fastgrad SGD (W3,") for k in rows), out  # plain SGD, timed in turns
    yard = [v for k, v in rows.items() if k == "C++ yardstick (momentum)"]
    assert yard and "DIFFERS" not in yard[0], out  # the same momentum steps as fastgrad's
    assert "W3m: vs C++ momentum loop" in out, out


def test_issue_16s_targets(bench):
    lines = bench.report.issue16_lines
    got = lines({"W3m": {"fastgrad": 0.05, "yardstick": 0.03}})
    assert got[-1] == "  W3m: vs C++ momentum loop 1.67x slower (ok, need <= 2)"
    assert "MISSED" in lines({"W3m": {"fastgrad": 0.07, "yardstick": 0.03}})[-1]
    # W6a: divided by the plain-SGD runs timed in turns with it; W6's own for reference
    got = lines({"W6": {"fastgrad": 1000.0}, "W6a": {"fastgrad": 1200.0, "fastgrad_sgd": 1100.0}})
    assert "1.091x (ok, need <= 1.15)" in got[-2] and "1.200x (for reference" in got[-1]
    assert "MISSED" in lines({"W6": {"fastgrad": 1000.0}, "W6a": {"fastgrad": 1200.0}})[-1]
    assert "not checked" in lines({"W6a": {"fastgrad": 1200.0}})[-1]
    assert lines({"W3": {"fastgrad": 1.0}}) == []
