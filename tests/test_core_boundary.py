"""The compiled module's boundary: what `fastgrad._core` refuses before a kernel runs.

Each case was a crash, undefined behaviour or an unclear message found by an adversarial run;
`fastgrad` checks the same things in Python first, and these tests hold the second line.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

import fastgrad as fg
from fastgrad import _core, stop

MAX_STEPS_KIND = 4  # csrc/rules.hpp RuleKind::max_steps


def unaligned(a: np.ndarray) -> np.ndarray:
    """A C-contiguous copy of ``a`` at an odd byte offset (``flags.aligned`` False)."""
    buf = np.zeros(a.nbytes + 1, dtype=np.uint8)
    out = np.frombuffer(buf[1:].data, dtype=a.dtype).reshape(a.shape)
    out[...] = a
    assert not out.flags.aligned and out.flags.c_contiguous
    return out


def net_of(kernel: np.ndarray, rows: int, gather: bool):
    Net = _core.NetF64 if kernel.dtype == np.float64 else _core.NetF32
    return Net([kernel], [False], [0], rows, gather)


def test_record_every_beyond_2_62_is_refused_not_a_heap_overflow():
    k = np.ones((1, 1))
    x = np.ones((4, 1))
    for every in (2**62 + 1, 2**63, 2**64 - 2):
        with pytest.raises(ValueError, match=r"every: expected at most 2\*\*62"):
            net_of(k, 4, False).fit_run(x, x.copy(), None, False, 0.1, [(MAX_STEPS_KIND, 0.0, 1500)], every)
    assert k[0, 0] == 1.0  # nothing ran


def test_an_unaligned_float64_x_is_copied_for_the_forward_pass():
    rng = np.random.default_rng(0)
    x, k, b = rng.normal(size=(5, 3)), rng.normal(size=(3, 2)), rng.normal(size=2)
    want = _core.dense_forward(x, k, b, 1)
    got = _core.dense_forward(unaligned(x), k, b, 1)
    assert got.tobytes() == want.tobytes()


@pytest.mark.parametrize("which", ["kernel", "bias"])
def test_unaligned_parameters_are_refused(which):
    rng = np.random.default_rng(0)
    x, k, b = rng.normal(size=(5, 3)), rng.normal(size=(3, 2)), rng.normal(size=2)
    args = {"kernel": k, "bias": b}
    args[which] = unaligned(args[which])
    with pytest.raises(TypeError, match=which):
        _core.dense_forward(x, args["kernel"], args["bias"], 0)
    with pytest.raises(TypeError, match=which):
        _core.NetF64([args["kernel"], args["bias"]], [True], [0], 5, False)


def test_unaligned_arrays_are_refused_by_the_loops_and_kernels():
    rng = np.random.default_rng(0)
    x, y, k = rng.normal(size=(6, 2)), rng.normal(size=(6, 1)), rng.normal(size=(2, 1))
    net = net_of(k, 6, False)
    with pytest.raises(TypeError, match="x: expected an aligned"):
        net.step(unaligned(x), y, None, 0.1)
    with pytest.raises(TypeError, match="y: expected an aligned"):
        net.fit_run(x, unaligned(y), None, False, 0.1, [(MAX_STEPS_KIND, 0.0, 3)], 0)
    with pytest.raises(TypeError, match="pred"):
        _core.mse(unaligned(y), y)
    with pytest.raises(TypeError, match="g"):
        _core.sgd_update(k.copy(), unaligned(k), 0.1)
    with pytest.raises(TypeError, match="dy"):
        _core.dense_backward(unaligned(y), x, k, y, False, 0, True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sgd_update_refuses_a_gradient_that_shares_memory_with_w(dtype):
    w = np.arange(8, dtype=dtype)
    before = w.copy()
    with pytest.raises(ValueError, match="shares no memory with w"):
        _core.sgd_update(w, w, 0.1)
    with pytest.raises(ValueError, match="shares no memory with w"):
        _core.sgd_update(w[1:], w[:-1], 0.1)
    assert w.tobytes() == before.tobytes()
    _core.sgd_update(w[:4], w[4:], 0.5)  # neighbours that do not overlap are fine
    assert w[:4].tolist() == [0 - 0.5 * 4, 1 - 0.5 * 5, 2 - 0.5 * 6, 3 - 0.5 * 7]


def test_step_checks_the_indices_it_uses():
    """Net.step copies the batch indices before it checks them: another thread changing the
    caller's array while the step runs (the GIL released) can neither send it out of range nor
    past the check.  Each step either refuses with ValueError or runs on in-range rows."""
    rng = np.random.default_rng(1)
    x, y, k = rng.normal(size=(4, 3)), rng.normal(size=(4, 1)), np.zeros((3, 1))
    net = net_of(k, 2, True)
    idx = np.array([0, 1], dtype=np.int64)
    stop_flipping = threading.Event()

    def flip():
        bad = np.array([0, -(10**12)], dtype=np.int64)
        good = idx.copy()
        while not stop_flipping.is_set():
            idx[:] = bad
            idx[:] = good

    t = threading.Thread(target=flip)
    t.start()
    refused = ran = 0
    try:
        for _ in range(20_000):
            try:
                net.step(x, y, idx, 1e-3)
                ran += 1
            except ValueError as e:
                assert "out of range" in str(e)
                refused += 1
    finally:
        stop_flipping.set()
        t.join()
    assert ran + refused == 20_000
    assert np.isfinite(k).all()


def _overcommits_always() -> bool:
    """Linux's vm.overcommit_memory = 1 grants any allocation and fails only on first touch: these
    tests' huge requests would then be killed, not refused."""
    try:
        with open("/proc/sys/vm/overcommit_memory") as f:
            return f.read().strip() == "1"
    except OSError:
        return False


needs_refusal = pytest.mark.skipif(_overcommits_always(), reason="vm.overcommit_memory = 1 never refuses")


@needs_refusal
def test_a_scratch_that_cannot_be_had_is_a_memory_error_saying_how_big():
    k = np.zeros((10, 10), dtype=np.float32)
    with pytest.raises(MemoryError, match=r"scratch of a 1099511627776-row batch \(\d+ MiB\)"):
        _core.NetF32([k], [False], [0], 2**40, True)


@needs_refusal
def test_records_that_cannot_be_had_are_a_memory_error_before_the_first_update():
    # a million weights recorded every step: the first chunk's records (65,537 rows of 4 MB)
    # cannot be allocated, so the run stops before its first step and says how much it wanted
    k = np.full((1000, 1000), 0.5, dtype=np.float32)
    x = np.ones((2, 1000), dtype=np.float32)
    y = np.ones((2, 1000), dtype=np.float32)
    net = _core.NetF32([k], [False], [0], 2, False)
    with pytest.raises(MemoryError, match=r"could not allocate \d+ MiB for the records of a run after step 0"):
        net.fit_run(x, y, None, False, 0.1, [(MAX_STEPS_KIND, 0.0, 100_000)], 1)
    assert (k == 0.5).all()


def test_settings_are_refused_while_a_run_is_active():
    """The team and BLAS settings are read without the GIL during a run: changing one then is a
    RuntimeError, and the run is unaffected.  (Tried until seen while the run is in progress.)"""
    model = fg.Dense(1, use_bias=False, dtype="float64")
    model.build(1)
    model.kernel[...] = 0.5
    x = np.ones((2, 1))
    old = _core.get_team_min_work()
    result = {}

    def train():
        result["r"] = fg.fit(model, x, x.copy(), optimizer=fg.SGD(1e-9), stop=[stop.MaxSteps(30_000_000)], seed=0)

    t = threading.Thread(target=train)
    t.start()
    refused = None
    try:
        while t.is_alive() and refused is None:
            try:
                _core.set_team_min_work(old)  # the same value: harmless when accepted
            except RuntimeError as e:
                refused = str(e)
    finally:
        t.join()
    assert refused is not None and "while a fit or kernel call is running" in refused
    assert result["r"].steps == 30_000_000
    _core.set_team_min_work(old)  # accepted again once the run has ended
    assert _core.get_team_min_work() == old


@pytest.mark.parametrize("name, bad", [("team_parts", 0), ("team_parts", 17)])
def test_settings_out_of_range_name_the_setting(name, bad):
    with pytest.raises(ValueError, match=name):
        getattr(_core, f"set_{name}")(bad)
