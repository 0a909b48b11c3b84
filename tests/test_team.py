"""The team step (csrc/team.hpp): a step of a large layer split between fastgrad's own threads,
with OpenBLAS held to one thread meanwhile.  The fixture turns it on for models small enough to
test (it normally takes layers of 1M multiply-adds), in both of its ways: in phases, and by
blocks of the batch's rows."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import fastgrad as fg
from fastgrad import _core, stop
from fastgrad._batches import BatchStream

PARTS = 2  # what this machine's OpenBLAS uses; the fixture sets it wherever the tests run


@pytest.fixture(params=["phases", "row blocks"])
def team_on(request):
    # both ways the team cuts a step: in phases (batches of up to 1024 rows), and by blocks of the
    # batch's rows (larger ones), here for every batch
    parts, work, split = _core.get_team_parts(), _core.get_team_min_work(), _core.get_team_rows_split()
    _core.set_team_parts(PARTS)
    _core.set_team_min_work(0)
    _core.set_team_rows_split(1 << 20 if request.param == "phases" else 0)
    yield request.param
    _core.set_team_parts(parts)
    _core.set_team_min_work(work)
    _core.set_team_rows_split(split)


def case(seed: int, dtype: str = "float64", layers=((48, "relu"), (3, "linear"))):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(300, 40)).astype(dtype)
    y = rng.normal(size=(300, layers[-1][0])).astype(dtype)
    m = fg.Sequential([fg.Dense(u, a, *bias, dtype=dtype) for u, a, *bias in layers], seed=seed)
    return m, x, y


def run(seed, dtype="float64", loop="auto", batch_size=32, steps=25, sampling="random", layers=((48, "relu"), (3, "linear"))):
    m, x, y = case(seed, dtype, layers)
    before = _core.team_steps_run()
    r = fg.fit(m, x, y, optimizer=fg.SGD(0.02), batch_size=batch_size, sampling=sampling,
               stop=stop.MaxSteps(steps), seed=seed, record_weights=5, loop=loop)
    r.team_steps = _core.team_steps_run() - before  # (other threads' fits count too)
    return r, m.get_weights()


def same_bits(a, b) -> bool:
    (ra, wa), (rb, wb) = a, b
    return (
        np.array_equal(ra.history.loss, rb.history.loss)
        and np.array_equal(ra.history.grad_norm, rb.history.grad_norm)
        and all(np.array_equal(p, q) for p, q in zip(wa, wb))
        and all(np.array_equal(p, q) for p, q in zip(ra.history.weights, rb.history.weights))
    )


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("batch_size,sampling", [(32, "random"), (32, "shuffle"), (None, "random"), (1, "random")])
def test_native_and_python_loops_give_the_same_bits_on_the_team(team_on, dtype, batch_size, sampling):
    native = run(1, dtype, "native", batch_size, sampling=sampling)
    python = run(1, dtype, "python", batch_size, sampling=sampling)
    assert native[0].loop == "native" and python[0].loop == "python"
    assert native[0].team_steps == python[0].team_steps == 25
    assert same_bits(native, python)


def test_three_layers_without_biases_on_the_team(team_on):
    layers = ((20, "relu", False), (17, "linear", False), (5, "relu", False))
    native = run(2, "float64", "native", layers=layers)
    python = run(2, "float64", "python", layers=layers)
    assert len(native[1]) == 3  # kernels only
    assert native[0].team_steps == python[0].team_steps == 25
    assert same_bits(native, python)
    _core.set_team_parts(1)
    serial = run(2, "float64", "native", layers=layers)
    assert serial[0].team_steps == 0
    # against the step without the team: the same products, maybe blocked otherwise by OpenBLAS,
    # and the gradient norm summed in another order
    assert np.allclose(serial[0].history.loss, native[0].history.loss, rtol=TEAM_VS_SERIAL_RTOL, atol=0)
    for p, q in zip(serial[1], native[1]):
        assert np.allclose(p, q, rtol=TEAM_VS_SERIAL_RTOL, atol=TEAM_VS_SERIAL_ATOL)


# float64 over 25 steps: the team and the serial step differ only by the rounding of products
# blocked otherwise and of the norm's sum (measured: below 1e-13 relative)
TEAM_VS_SERIAL_RTOL = 1e-9
TEAM_VS_SERIAL_ATOL = 1e-12


def test_fits_in_threads_on_the_team_give_the_same_bits_as_one_after_another(team_on):
    # one fit at a time has the team; the others run their parts on their own thread, in turn
    sequential = [run(s) for s in range(4)]
    threaded = [None] * 4

    def work(s):
        threaded[s] = run(s)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a, b in zip(sequential, threaded):
        assert same_bits(a, b)


@pytest.mark.skipif(_core.get_blas_threads() < 0, reason="no BLAS whose threads fastgrad can set")
def test_the_blas_thread_count_is_put_back_after_a_team_run(team_on):
    before = _core.get_blas_threads()
    run(3)
    run(3, loop="python")
    assert _core.get_blas_threads() == before
    # and NumPy's products still give NumPy's results
    a = np.random.default_rng(0).normal(size=(300, 200))
    assert np.allclose(a @ a.T, np.einsum("ij,kj->ik", a, a), rtol=1e-12, atol=1e-9)


def test_a_forked_child_trains_on_a_team_of_its_own():
    # the parent's team threads do not exist in a fork's child: the child starts its own team and
    # gives the parent's bits
    code = textwrap.dedent(
        """
        import os, sys, warnings
        warnings.simplefilter("ignore", DeprecationWarning)  # fork of a process with threads
        import numpy as np
        import fastgrad as fg
        from fastgrad import _core, stop
        _core.set_team_parts(2); _core.set_team_min_work(0)
        def run():
            rng = np.random.default_rng(0)
            x = rng.normal(size=(300, 40)); y = rng.normal(size=(300, 3))
            m = fg.Sequential([fg.Dense(48, "relu"), fg.Dense(3)], seed=0)
            r = fg.fit(m, x, y, batch_size=32, stop=stop.MaxSteps(20), seed=0)
            return r.history.loss.tobytes()
        parent = run()
        rd, wr = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(rd)
            os.write(wr, b"same" if run() == parent else b"differ")
            os._exit(0)
        os.close(wr)
        got = os.read(rd, 16)
        _, status = os.waitpid(pid, 0)
        print(got.decode(), os.waitstatus_to_exitcode(status))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["same", "0"]


def test_team_parts_out_of_range_are_refused():
    for bad in (0, 17):
        with pytest.raises(ValueError, match="parts: expected 1 to 16"):
            _core.set_team_parts(bad)


def test_ctrl_c_stops_a_team_run_and_puts_the_blas_threads_back(team_on, ctrl_c_once_changed):
    m, x, y = case(4)
    m.build(x.shape[1])
    threads_before = _core.get_blas_threads()
    steps_before = _core.team_steps_run()
    with ctrl_c_once_changed(m.layers[0].kernel):
        r = fg.fit(m, x, y, optimizer=fg.SGD(1e-6), batch_size=32, stop=stop.MaxSteps(10**9), seed=0)
    assert r.loop == "native" and r.stopped_by == "interrupted"
    assert 0 < r.steps < 10**9
    assert _core.team_steps_run() - steps_before >= r.steps
    assert _core.get_blas_threads() == threads_before


@pytest.mark.skipif(_core.get_blas_threads() < 0, reason="no BLAS whose threads fastgrad can read")
def test_openblas_on_one_thread_means_no_team():
    code = "import fastgrad; from fastgrad import _core; print(_core.get_team_parts(), _core.get_blas_threads())"
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "1"]


def test_rows_gathered_ahead_do_not_outlive_their_run(team_on):
    # The native loop draws each batch one step early and the team gathers it during the step
    # before.  A run that stops leaves such rows behind (of the batch it drew but did not use);
    # the next run on the same model (its kept compiled step) must not take them, even when its
    # first batch has the same indices, as here: the data changed in between.
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(3, 40)), rng.normal(size=(3, 3))
    m = fg.Sequential([fg.Dense(48, "relu"), fg.Dense(3)], seed=6)
    m.build(40)
    w0 = m.get_weights()
    second = BatchStream(3, 1, "random", 1).next_chunk()[1]  # the batch run 1 draws ahead
    seed2 = next(s for s in range(2, 100) if np.array_equal(BatchStream(3, 1, "random", s).next_chunk()[0], second))
    first = fg.fit(m, x, y, optimizer=fg.SGD(0.02), batch_size=1, seed=1, stop=[stop.LossBelow(1e9)])
    assert first.steps == 1
    x2 = x * 2.0
    m.set_weights(w0)
    again = fg.fit(m, x2, y, optimizer=fg.SGD(0.02), batch_size=1, seed=seed2, stop=stop.MaxSteps(3))
    fresh_model = fg.Sequential([fg.Dense(48, "relu"), fg.Dense(3)], seed=6)
    fresh_model.build(40)
    fresh = fg.fit(fresh_model, x2, y, optimizer=fg.SGD(0.02), batch_size=1, seed=seed2, stop=stop.MaxSteps(3))
    assert np.array_equal(again.history.batches[0], second)
    assert np.array_equal(again.history.loss, fresh.history.loss)
    assert all(np.array_equal(p, q) for p, q in zip(m.get_weights(), fresh_model.get_weights()))
