"""The native loop (C++) against the Python loop: the same trajectory, bit for bit."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import numpy as np
import pytest

import fastgrad as fg
from fastgrad import _blas, _core, stop


def data(n=30, d=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    return x, x @ rng.normal(size=d) + 1.0


def model(dtype, seed=0):
    return fg.Sequential([fg.Dense(6, "relu", dtype=dtype), fg.Dense(1, dtype=dtype)], seed=seed)


# one Dense layer with one output and at most 4 inputs runs a loop of its own (csrc/net.hpp,
# dense1_out1_run): each kind it is specialised for, and one just past it
MODELS = {
    "two-layer": (model, 4),
    "dense-4-bias": (lambda dtype: fg.Sequential([fg.Dense(1, dtype=dtype)], seed=0), 4),
    "dense-3-relu": (lambda dtype: fg.Sequential([fg.Dense(1, "relu", dtype=dtype)], seed=0), 3),
    "dense-1-no-bias": (lambda dtype: fg.Sequential([fg.Dense(1, use_bias=False, dtype=dtype)], seed=0), 1),
    "dense-2-relu-no-bias": (lambda dtype: fg.Sequential([fg.Dense(1, "relu", use_bias=False, dtype=dtype)], seed=0), 2),
    "dense-5": (lambda dtype: fg.Sequential([fg.Dense(1, dtype=dtype)], seed=0), 5),
}


def assert_same_run(a, b):
    assert (a.stopped_by, a.steps, a.divergence) == (b.stopped_by, b.steps, b.divergence)
    assert a.history.loss.tobytes() == b.history.loss.tobytes()
    assert a.history.grad_norm.tobytes() == b.history.grad_norm.tobytes()
    if a.history.batches is None:
        assert b.history.batches is None
    else:
        assert a.history.batches.tobytes() == b.history.batches.tobytes()
    assert (a.history.weights is None) == (b.history.weights is None)
    if a.history.weights is not None:
        assert a.history.weight_steps.tolist() == b.history.weight_steps.tolist()
        for u, v in zip(a.history.weights, b.history.weights):
            assert u.dtype == v.dtype and u.tobytes() == v.tobytes()
    assert a.final_loss == b.final_loss or (np.isnan(a.final_loss) and np.isnan(b.final_loss))


def both(make_model, x, y, **kw):
    runs = []
    for loop in ("python", "native"):
        m = make_model()
        r = fg.fit(m, x, y, loop=loop, **kw)
        assert r.loop == loop
        runs.append((r, m))
    return runs


RULES = {
    "max_steps": [stop.MaxSteps(300)],
    "loss_below": [stop.LossBelow(0.05), stop.MaxSteps(3000)],
    "loss_delta": [stop.LossDelta(1e-3), stop.MaxSteps(3000)],
    "weight_delta": [stop.WeightDelta(1e-4), stop.MaxSteps(3000)],
    "plateau": [stop.Plateau(1e-4, patience=20), stop.MaxSteps(3000)],
    "all": [stop.WeightDelta(1e-6), stop.LossDelta(1e-7), stop.LossBelow(1e-4), stop.Plateau(1e-5, 50), stop.MaxSteps(5000)],
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("batch_size, sampling", [(None, "random"), (1, "random"), (3, "random"), (4, "shuffle"),
                                                  (1, "shuffle"), (70, "random")])
@pytest.mark.parametrize("rules", list(RULES))
@pytest.mark.parametrize("which", list(MODELS))
def test_native_and_python_loops_agree_bit_for_bit(dtype, batch_size, sampling, rules, which):
    make, d = MODELS[which]
    x, y = data(n=80, d=d)
    (a, ma), (b, mb) = both(lambda: make(dtype), x, y, optimizer=fg.SGD(0.02), batch_size=batch_size,
                            sampling=sampling, stop=RULES[rules], seed=5, record_weights=7)
    assert_same_run(a, b)
    for u, v in zip(ma.get_weights(), mb.get_weights()):
        assert u.tobytes() == v.tobytes()


def test_native_loop_runs_by_default_and_python_loop_for_custom_rules():
    x, y = data()
    assert fg.fit(model("float32"), x, y, stop=stop.MaxSteps(3)).loop == "native"
    assert fg.fit(model("float32"), x, y, stop=[lambda s: s.step == 3]).loop == "python"
    assert fg.fit(model("float32"), x, y, stop=stop.MaxSteps(3), callbacks=[print]).loop == "python"
    with pytest.raises(ValueError, match="loop: 'native' runs only the built-in stopping rules"):
        fg.fit(model("float32"), x, y, stop=[lambda s: True], loop="native")
    with pytest.raises(ValueError, match="loop: expected 'auto', 'python' or 'native'"):
        fg.fit(model("float32"), x, y, loop="cuda")


def test_divergence_is_the_same_in_both_loops():
    x, y = fg.data.e4_data()

    def one_weight():
        layer = fg.Dense(1, use_bias=False)
        layer.set_weights([[[2.0]]])
        return layer

    with pytest.warns(fg.DivergenceWarning) as caught:
        (a, _), (b, _) = both(one_weight, x, y, optimizer=fg.SGD(0.001), batch_size=1, stop=stop.MaxSteps(30),
                              seed=42, record_weights=True)
    assert a.stopped_by == "diverged"
    assert_same_run(a, b)
    assert [str(w.message) for w in caught][0] == [str(w.message) for w in caught][1]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("rules", ["max_steps", "all"])
@pytest.mark.parametrize("which", list(MODELS))
def test_a_full_batch_of_two_rows_agrees_bit_for_bit(dtype, rules, which):
    # two rows in a full batch (the walkthrough's E1) have an unrolled loop of their own
    make, d = MODELS[which]
    x, y = data(n=2, d=d)
    (a, _), (b, _) = both(lambda: make(dtype), x, y, optimizer=fg.SGD(0.05), stop=RULES[rules], seed=5,
                          record_weights=3)
    assert_same_run(a, b)


@pytest.mark.parametrize("which", list(MODELS))
@pytest.mark.parametrize("batch_size", [None, 1, 3])
@pytest.mark.parametrize("record_weights", [3, False])
def test_divergence_of_each_model_kind_is_the_same_in_both_loops(which, batch_size, record_weights):
    # without records the single-layer loop runs the whole run as one stretch, tested for
    # finiteness once at its end, and runs it again step by step to find where it diverged
    make, d = MODELS[which]
    x, y = data(n=80, d=d)
    with pytest.warns(fg.DivergenceWarning):
        (a, _), (b, _) = both(lambda: make("float32"), x * 1e3, y * 1e3, optimizer=fg.SGD(10.0),
                              batch_size=batch_size, stop=stop.MaxSteps(500), seed=2, record_weights=record_weights)
    assert a.stopped_by == "diverged" and a.steps < 500
    assert_same_run(a, b)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(
    "batch_size, lr, sampling, n",
    # shuffle, and random batches over 64, draw from a permutation the sampler keeps
    [(4, 0.6, "random", 40), (None, 0.8, "random", 40), (4, 0.6, "shuffle", 40), (70, 0.9, "random", 200)],
)
def test_a_run_that_diverges_late_in_a_long_stretch_agrees(dtype, batch_size, lr, sampling, n):
    # a learning rate just past stable: the weights grow for hundreds of steps before they
    # overflow, so the step that is not finite lies deep inside the native loop's stretch
    x, y = data(n=n, d=4)
    make, _ = MODELS["dense-4-bias"]
    with pytest.warns(fg.DivergenceWarning):
        (a, _), (b, _) = both(lambda: make(dtype), x, y, optimizer=fg.SGD(lr), batch_size=batch_size,
                              sampling=sampling, stop=stop.MaxSteps(100_000), seed=9)
    assert a.stopped_by == "diverged" and 50 < a.steps < 100_000
    assert_same_run(a, b)


def test_runs_longer_than_a_chunk_agree():
    # the native loop runs in chunks of at most 65536 steps and 2**20 batch indices (Net.fit_run):
    # a run across chunks is the same run
    x, y = data(n=70)
    (a, _), (b, _) = both(lambda: model("float32"), x, y, optimizer=fg.SGD(0.001), batch_size=64,
                          stop=stop.MaxSteps(40_000), seed=1, record_weights=999)
    assert a.steps == 40_000 and a.history.batches.shape == (40_000, 64)
    assert_same_run(a, b)
    x, y = data(n=9, d=3)
    one = lambda: fg.Sequential([fg.Dense(1, dtype="float32")], seed=0)  # noqa: E731
    (a, _), (b, _) = both(one, x, y, optimizer=fg.SGD(0.01), batch_size=1, stop=stop.MaxSteps(70_000), seed=1,
                          record_weights=10_000)
    assert a.steps == 70_000
    assert_same_run(a, b)


def big_case(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(256, 120))
    y = rng.normal(size=(256, 10))
    m = fg.Sequential([fg.Dense(96, "relu"), fg.Dense(10)], seed=seed)
    return m, x, y


def test_fit_in_threads_gives_the_same_bits_as_one_after_another():
    kw = dict(optimizer=fg.SGD(0.01), batch_size=64, stop=stop.MaxSteps(40), record_weights=10)
    sequential = []
    for s in range(4):
        m, x, y = big_case(s)
        sequential.append(fg.fit(m, x, y, seed=s, **kw))
    threaded = [None] * 4

    def work(s):
        m, x, y = big_case(s)
        threaded[s] = fg.fit(m, x, y, seed=s, **kw)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a, b in zip(sequential, threaded):
        assert_same_run(a, b)


RUN_START_WAIT_S = 60  # the longest switch interval below (seconds)


@pytest.mark.parametrize("which", ["two-layer", "dense-4-bias"])
def test_ctrl_c_interrupts_the_native_loop(which, ctrl_c_once_changed):
    make, d = MODELS[which]
    x, y = data(d=d)
    m = make("float32")
    m.build(d)
    with ctrl_c_once_changed(m.layers[0].kernel):  # the array the run updates in place
        r = fg.fit(m, x, y, optimizer=fg.SGD(1e-6), batch_size=2, stop=stop.MaxSteps(10**9), record_weights=1000)
    assert r.loop == "native" and r.stopped_by == "interrupted"
    assert 0 < r.steps < 10**9
    assert len(r.history.loss) == len(r.history.batches) == r.steps
    assert r.history.weight_steps[-1] == r.steps
    for w, live in zip(r.history.weights, m.get_weights()):
        assert w[-1].tobytes() == live.tobytes()
    # the run caught Ctrl-C only while it ran: Python's own handling is back afterwards
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1.0)  # the handler runs at the next bytecode; the sleep is never reached in full


def test_ctrl_c_before_the_first_poll_is_the_runs():
    # The native loop installs its SIGINT handler at its first poll for Ctrl-C (about a
    # millisecond in), not at its start.  This thread, once woken, needs the GIL to send the
    # signal, and gets it when fit_run releases it: the signal comes before the first poll, to
    # Python's own handler, and the first poll must take it from there.
    x, y = data(d=4)
    m = MODELS["dense-4-bias"][0]("float32")
    # built, and a seed given: fit's code before the run then has no call that lets the GIL go
    # (a layer's build and a seedless fit read os.urandom, which does; in CI the Ctrl-C landed there)
    m.build(4)
    go = threading.Event()

    def send():
        go.wait()
        os.kill(os.getpid(), signal.SIGINT)

    sender = threading.Thread(target=send)
    sender.start()
    # a long switch interval: the sender gets the GIL when fit_run releases it, not earlier in
    # fit's Python code (where Ctrl-C would be Python's KeyboardInterrupt, before the run)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(RUN_START_WAIT_S)
    try:
        go.set()
        r = fg.fit(m, x, y, optimizer=fg.SGD(1e-6), batch_size=2, stop=stop.MaxSteps(10**8), seed=0)
    finally:
        sys.setswitchinterval(interval)
    time.sleep(0.05)  # a Ctrl-C left pending in Python would raise KeyboardInterrupt here
    sender.join()
    assert r.loop == "native" and r.stopped_by == "interrupted"
    assert 0 < r.steps < 10**8
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.skipif(not _core.has_blas, reason="built without OpenBLAS")
@pytest.mark.parametrize("which", ["numpy's", "scipy-openblas32"])
@pytest.mark.parametrize("dtype, tol", [("float64", 1e-12), ("float32", 1e-5)])
def test_blas_and_plain_loops_agree(dtype, tol, which):
    if which == "scipy-openblas32":
        _blas.use_fallback()
    try:
        check_blas_against_loops(dtype, tol)
    finally:
        _core.use_shared_blas()


def check_blas_against_loops(dtype, tol):
    rng = np.random.default_rng(0)
    m = fg.Sequential([fg.Dense(70, "relu", dtype=dtype), fg.Dense(5, dtype=dtype)], seed=0)
    x, y = rng.normal(size=(90, 60)), rng.normal(size=(90, 5))
    old = _core.get_blas_min_work()
    try:
        _core.set_blas_min_work(1)
        l_blas, g_blas = fg.value_and_grad(m, x, y)
        _core.set_blas_min_work(2**62)
        l_loop, g_loop = fg.value_and_grad(m, x, y)
    finally:
        _core.set_blas_min_work(old)
    assert abs(l_blas - l_loop) <= tol * abs(l_loop)
    for a, b in zip(g_blas, g_loop):
        assert np.abs(a - b).max() <= tol * np.abs(b).max()


def test_records_of_a_kept_result_survive_later_runs():
    # The native loop's record buffers are reused once NumPy frees them (csrc/bindings.cpp,
    # RecordMemory): a result still held must keep its own, whatever runs after it.
    x, y = data(n=50, d=3)
    make, _ = MODELS["dense-3-relu"]
    kept = fg.fit(make("float32"), x, y, batch_size=2, stop=stop.MaxSteps(70_000), seed=1, record_weights=5000)
    snapshot = [a.copy() for a in (kept.history.loss, kept.history.grad_norm, kept.history.batches,
                                   *kept.history.weights)]
    for seed in range(4):  # runs that take the freed buffers, and an early stop that trims its own
        fg.fit(make("float32"), x, y, batch_size=2, stop=stop.MaxSteps(90_000), seed=seed + 2, record_weights=7)
        fg.fit(make("float32"), x, y, batch_size=2, stop=[stop.MaxSteps(90_000), stop.LossBelow(1e9)], seed=seed)
    now = (kept.history.loss, kept.history.grad_norm, kept.history.batches, *kept.history.weights)
    for a, b in zip(snapshot, now):
        assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("batch_size", [None, 2])
def test_finite_weights_whose_sum_overflows_are_not_a_divergence(batch_size):
    # The native loop tests the weights' sum for finiteness; two float32 weights near the largest
    # float overflow it while each is finite.  With their inputs 0 they never change, and the
    # run must go on to its end, in both loops alike.
    x, y = data(n=20, d=3)
    x[:, :2] = 0.0

    def make():
        m = fg.Dense(1, dtype="float32")
        m.build(3)
        m.set_weights([np.array([[3e38], [3e38], [0.5]], np.float32), np.zeros(1, np.float32)])
        return m

    (a, _), (b, _) = both(make, x, y, optimizer=fg.SGD(0.01), batch_size=batch_size, stop=stop.MaxSteps(3000),
                          seed=4, record_weights=1000)
    assert a.stopped_by == "max_steps" and a.steps == 3000
    assert np.isfinite(a.history.loss).all()
    assert_same_run(a, b)
