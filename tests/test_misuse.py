"""What users get wrong, and what they get back: each case here was found by probing the public
API, and each test fails on the code before its fix."""

from __future__ import annotations

import os
import pickle
import signal
import threading
import time

import numpy as np
import pytest

import fastgrad as fg
from fastgrad import _batches, ops, results

# how long a background run lasts, and the most we wait for Ctrl-C to reach the main thread
BACKGROUND_RUN_S = 0.5
SIGNAL_WAIT_S = 10.0


def e1():
    x = np.array([[1.0], [2.0]], np.float32)
    y = np.array([1.0, 2.0], np.float32)
    m = fg.Dense(1, use_bias=False)
    m.set_weights([np.array([[2.0]])])
    return m, x, y


def small_net(seed=0):
    return fg.Sequential([fg.Dense(4, "relu"), fg.Dense(1)], seed=seed)


def data(n=20, d=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, d)).astype(np.float32)
    return x, x.sum(1)


# ---- final_loss and the data it is computed on ----------------------------------------------

def test_final_loss_is_not_changed_by_changing_the_data_afterwards():
    m, x, y = e1()
    before = fg.fit(m, x, y, optimizer=fg.SGD(0.1), stop=fg.stop.MaxSteps(4))
    expected = before.final_loss
    m, x, y = e1()
    after = fg.fit(m, x, y, optimizer=fg.SGD(0.1), stop=fg.stop.MaxSteps(4))
    x[:] = 100.0
    y[:] = -5.0
    assert after.final_loss == expected


def test_large_data_kept_by_reference_refuses_a_final_loss_after_a_change(monkeypatch):
    x, y = data(2000, 4)  # 10,000 elements: more than are copied
    kept = fg.fit(small_net(), x, y, batch_size=8, seed=1, stop=fg.stop.MaxSteps(5))
    assert kept._data[0] is x  # by reference, not copied
    monkeypatch.setattr(results, "KEEP_COPY_ELEMENTS", 10**6)
    copied = fg.fit(small_net(), x, y, batch_size=8, seed=1, stop=fg.stop.MaxSteps(5))
    assert copied._data[0] is not x
    assert kept.final_loss == copied.final_loss  # unchanged data: the same loss


def test_a_sample_of_large_data_sees_a_change_to_every_seventh_row():
    x, y = data(2000, 8)
    r = fg.fit(small_net(), x, y, batch_size=8, seed=1, stop=fg.stop.MaxSteps(3))
    x[::7] = 0.0
    with pytest.raises(RuntimeError, match="final_loss: x or y changed"):
        r.final_loss


@pytest.mark.parametrize("width", [2, 4, 8, 64])
def test_a_sample_of_large_data_sees_one_column_rescaled(width):
    # 2**16 rows: a plain stride of size // 4096 is a multiple of every width here, and would
    # only ever sample column 0
    rng = np.random.default_rng(0)
    x = rng.random((1 << 16, width), dtype=np.float32)
    y = x.sum(1)
    r = fg.fit(fg.Dense(1, seed=0), x, y, batch_size=4, seed=0, stop=fg.stop.MaxSteps(2))
    x[:, width - 1] *= 100
    with pytest.raises(RuntimeError, match="final_loss: x or y changed"):
        r.final_loss


def test_set_weights_gives_the_layer_new_arrays():
    layer = fg.Dense(1, seed=0).build(3)
    old = layer.kernel
    before = old.copy()
    layer.set_weights([np.zeros((3, 1)), np.zeros(1)])
    assert layer.kernel is not old
    np.testing.assert_array_equal(old, before)  # an array the user kept is not overwritten


def test_result_records_its_sample_count():
    x, y = data(30)
    assert fg.fit(small_net(), x, y, stop=fg.stop.MaxSteps(2)).samples == 30


# ---- threads and Ctrl-C ---------------------------------------------------------------------

@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="POSIX signals")
def test_a_native_run_on_another_thread_leaves_ctrl_c_to_the_main_thread():
    rng = np.random.default_rng(0)
    x = rng.random((256, 10)).astype(np.float32)
    y = x.sum(1)
    model = fg.Sequential([fg.Dense(64, "relu"), fg.Dense(1)], seed=0)
    # size the run from a short one, so that it is still going when the signal comes
    t0 = time.perf_counter()
    fg.fit(model, x, y, batch_size=32, seed=0, stop=fg.stop.MaxSteps(2000), optimizer=fg.SGD(1e-4))
    per_step = (time.perf_counter() - t0) / 2000
    steps = max(2000, int(BACKGROUND_RUN_S / per_step))
    out = {}

    def work():
        out["result"] = fg.fit(model, x, y, batch_size=32, seed=0, stop=fg.stop.MaxSteps(steps),
                               optimizer=fg.SGD(1e-4))

    t = threading.Thread(target=work)
    t.start()
    time.sleep(BACKGROUND_RUN_S / 5)
    got_interrupt = False
    try:
        os.kill(os.getpid(), signal.SIGINT)
        deadline = time.monotonic() + SIGNAL_WAIT_S
        while time.monotonic() < deadline:
            time.sleep(0.005)
    except KeyboardInterrupt:
        got_interrupt = True
    t.join()
    assert got_interrupt, "the main thread never saw Ctrl-C"
    assert out["result"].stopped_by == "max_steps"
    assert out["result"].loop == "native"


THREAD_WAIT_S = 60  # the longest a test waits for the other thread's run to reach a point


def test_a_model_that_another_thread_is_training_is_refused():
    x, y = data()
    model = small_net()
    started, go = threading.Event(), threading.Event()
    out = {}

    def hold(state):  # the first step is done: let the main thread try, then go on
        if state.step == 1:
            started.set()
            go.wait(THREAD_WAIT_S)

    def work():
        out["result"] = fg.fit(model, x, y, stop=fg.stop.MaxSteps(5), callbacks=[hold])

    t = threading.Thread(target=work)
    t.start()
    try:
        assert started.wait(THREAD_WAIT_S)
        before = model.get_weights()
        with pytest.raises(RuntimeError, match="model: another thread is training or changing this model"):
            fg.fit(model, x, y, stop=fg.stop.MaxSteps(5))
        with pytest.raises(RuntimeError, match="set_weights: another thread is training or changing this model"):
            model.set_weights(before)
        with pytest.raises(RuntimeError, match="set_weights: another thread is training"):
            model.layers[1].set_weights(before[2:])
        with pytest.raises(RuntimeError, match="build: another thread is training"):
            model.layers[0].build(3)
        assert model.build(3) is model  # built already: nothing to change, nothing refused
        for w, b in zip(model.get_weights(), before):  # the refused calls changed nothing
            np.testing.assert_array_equal(w, b)
    finally:
        go.set()
        t.join()
    assert out["result"].steps == 5
    assert fg.fit(model, x, y, stop=fg.stop.MaxSteps(2)).steps == 2  # free again once the run is over
    model.set_weights(before)


def test_a_fit_while_another_thread_is_in_set_weights_is_refused():
    x, y = data()
    model = small_net()
    model.build(3)
    entered, go = threading.Event(), threading.Event()
    before = model.get_weights()

    class Slow:  # an array-like whose conversion waits: set_weights is mid-call meanwhile
        def __init__(self, a):
            self.a = a

        def __array__(self, dtype=None, copy=None):
            entered.set()
            go.wait(THREAD_WAIT_S)
            return self.a if dtype is None else self.a.astype(dtype)

    t = threading.Thread(target=lambda: model.set_weights([Slow(before[0])] + before[1:]))
    t.start()
    try:
        assert entered.wait(THREAD_WAIT_S)
        with pytest.raises(RuntimeError, match="model: another thread is training or changing this model"):
            fg.fit(model, x, y, stop=fg.stop.MaxSteps(2))
    finally:
        go.set()
        t.join()
    assert fg.fit(model, x, y, stop=fg.stop.MaxSteps(2)).steps == 2


def test_the_mark_of_a_thread_that_has_ended_is_taken_over():
    # (as in the child of a fork made while another thread trained the model)
    x, y = data()
    model = small_net()
    gone = threading.Thread(target=lambda: None)
    gone.start()
    gone.join()
    for layer in model.layers:
        layer.__dict__["_fit_owner"] = (object(), gone)
    assert fg.fit(model, x, y, stop=fg.stop.MaxSteps(2)).steps == 2
    assert all("_fit_owner" not in layer.__dict__ for layer in model.layers)


def test_a_callback_that_fits_its_own_model_is_refused_and_frees_the_model():
    x, y = data()
    model = fg.Sequential([fg.Dense(4, "relu"), fg.Dense(1)], seed=0)
    shared = model.layers[1]
    other = fg.Sequential([fg.Dense(4, "relu"), shared], seed=1)  # shares a layer with model

    def nested(state):
        fg.fit(other, x, y, stop=fg.stop.MaxSteps(1))

    with pytest.raises(RuntimeError, match="model: the fit this callback or rule runs in is training this model"):
        fg.fit(model, x, y, stop=fg.stop.MaxSteps(3), callbacks=[nested])
    assert "_fit_owner" not in other.layers[0].__dict__  # the layer it had claimed first is let go
    for m in (model, other):  # neither is left marked
        assert fg.fit(m, x, y, stop=fg.stop.MaxSteps(2)).steps == 2


def test_a_copy_made_during_a_run_trains():
    import copy
    import pickle

    x, y = data()
    model = small_net()
    twins = []
    fg.fit(model, x, y, stop=fg.stop.MaxSteps(2),
           callbacks=[lambda s: twins.extend([copy.deepcopy(s.model), pickle.loads(pickle.dumps(s.model))])])
    for twin in twins:  # the mark of the run that was going on is not copied
        assert fg.fit(twin, x, y, stop=fg.stop.MaxSteps(2)).steps == 2


# ---- the model changed during or before a run -----------------------------------------------

def test_set_weights_from_a_callback_takes_effect_in_the_run():
    x, y = data()
    zeros = None

    def reset_at_5(state):
        if state.step == 5:
            state.model.set_weights(zeros)

    a = small_net().build(3)
    zeros = [np.zeros_like(w) for w in a.get_weights()]
    run = fg.fit(a, x, y, optimizer=fg.SGD(0.1), stop=fg.stop.MaxSteps(10), callbacks=[reset_at_5])
    b = small_net()
    first = fg.fit(b, x, y, optimizer=fg.SGD(0.1), stop=fg.stop.MaxSteps(5))
    b.set_weights(zeros)
    second = fg.fit(b, x, y, optimizer=fg.SGD(0.1), stop=fg.stop.MaxSteps(5))
    np.testing.assert_array_equal(run.history.loss, np.concatenate([first.history.loss, second.history.loss]))
    for got, want, model_w in zip(run.final_weights, second.final_weights, a.get_weights()):
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(model_w, want)


def test_a_prebuilt_layer_of_the_wrong_width_is_refused_at_once():
    with pytest.raises(ValueError, match=r"layers\[1\]: built for inputs of width 7, but layers\[0\] has 4 units"):
        fg.Sequential([fg.Dense(4), fg.Dense(1).build(7)])
    model = fg.Sequential([fg.Dense(4), fg.Dense(1)])
    model.layers[1].build(7)  # after the Sequential was made
    x, y = data()
    with pytest.raises(ValueError, match=r"layers\[1\]: built for inputs of width 7"):
        fg.fit(model, x, y)
    assert not model.layers[0].built  # nothing changed
    with pytest.raises(ValueError, match=r"layers\[1\]"):
        model.build(3)
    assert not model.layers[0].built


@pytest.mark.parametrize("make, match", [
    (lambda k: np.asfortranarray(k), "Fortran-order float32"),
    (lambda k: k.astype(np.float64), "float64 array"),
    (lambda k: k.tolist(), "got list"),
])
def test_a_kernel_assigned_directly_is_checked_before_the_run(make, match):
    x, y = data()
    model = small_net()
    model.build(3)
    before = model.get_weights()
    model.layers[0].kernel = make(model.layers[0].kernel)
    with pytest.raises(TypeError, match=r"layers\[0\]\.kernel: expected a writeable C-contiguous float32 array.*" + match):
        fg.fit(model, x, y)
    with pytest.raises(TypeError, match=r"layers\[0\]\.kernel"):
        fg.value_and_grad(model, x, y)
    for w, b in zip(model.layers[1].get_weights(), before[2:]):
        np.testing.assert_array_equal(w, b)


def test_a_read_only_kernel_is_not_written_by_a_cached_net():
    x, y = data()
    layer = fg.Dense(1, seed=0)
    fg.fit(layer, x, y, stop=fg.stop.MaxSteps(3))  # caches its compiled step
    layer.kernel.setflags(write=False)
    frozen = layer.kernel.copy()
    with pytest.raises(TypeError, match="kernel: .* got a read-only float32 array"):
        fg.fit(layer, x, y, stop=fg.stop.MaxSteps(3))
    np.testing.assert_array_equal(layer.kernel, frozen)
    layer.set_weights([frozen, np.zeros(1)])  # set_weights gives it writeable arrays again
    assert fg.fit(layer, x, y, stop=fg.stop.MaxSteps(3)).steps == 3


def test_a_net_is_pointed_only_at_arrays_of_its_own_shapes():
    from fastgrad import _core

    k, b = np.ones((3, 2), np.float32), np.zeros(2, np.float32)
    net = _core.NetF32([k, b], [True], [0], 4, False)
    for params, match in [([k], r"params: expected 2 arrays, got 1"),
                          ([np.ones((2, 3), np.float32), b], r"params\[0\]: expected shape \(3, 2\), got \(2, 3\)"),
                          ([k, np.zeros(3, np.float32)], r"params\[1\]: expected shape \(2,\), got \(3,\)")]:
        with pytest.raises(ValueError, match=match):
            net.rebind(params)
    frozen = k.copy()
    frozen.setflags(write=False)
    with pytest.raises(ValueError, match=r"params\[0\]: expected a writeable (aligned )?array"):
        net.rebind([frozen, b])
    # after the refusals the Net still trains k and b
    x, y = np.ones((4, 3), np.float32), np.ones((4, 2), np.float32)
    net.step(x, y, None, 0.1)
    assert not np.array_equal(k, np.ones((3, 2), np.float32))


def test_a_layer_pickled_before_activation_became_read_only_loads():
    layer = fg.Dense(2, "relu", seed=0).build(3)
    state = layer.__getstate__()
    state["activation"] = state.pop("_activation")  # what an older fastgrad pickled
    old = fg.Dense.__new__(fg.Dense)
    old.__setstate__(state)
    assert old.activation == "relu"
    x, y = data()
    np.testing.assert_array_equal(old(x), layer(x))


def test_value_and_grad_reads_read_only_weights():
    x, y = data()
    layer = fg.Dense(1, seed=0).build(3)
    want = fg.value_and_grad(layer, x, y)
    layer.kernel.setflags(write=False)
    got = fg.value_and_grad(layer, x, y)
    assert got[0] == want[0]
    with pytest.raises(TypeError, match="kernel: expected a writeable"):
        fg.fit(layer, x, y)


def test_a_learning_rate_changed_after_the_optimizer_was_made_is_checked_again():
    m, x, y = e1()
    opt = fg.SGD(0.1)
    opt.learning_rate = -0.1
    with pytest.raises(ValueError, match="optimizer.learning_rate: expected a finite number > 0"):
        fg.fit(m, x, y, optimizer=opt)


def test_activation_cannot_be_changed_after_the_layer_is_made():
    layer = fg.Dense(2)
    with pytest.raises(AttributeError):
        layer.activation = "relu"
    assert layer.activation == "linear"


@pytest.mark.parametrize("dtype", [">f4", ">f8", "float16", "int32"])
def test_only_native_float32_and_float64_layers(dtype):
    with pytest.raises(ValueError, match="dtype: expected 'float32' or 'float64'"):
        fg.Dense(1, dtype=dtype)


def test_dtype_none_is_the_default():
    assert fg.Dense(1, dtype=None).dtype == np.float32


# ---- the arguments of fit ------------------------------------------------------------------

@pytest.mark.parametrize("n", [2**62 + 1, 2**63, 2**70])
def test_step_counts_beyond_what_the_loop_counts_are_refused_when_made(n):
    with pytest.raises(ValueError, match="n: expected at most 2\\*\\*62"):
        fg.stop.MaxSteps(n)
    with pytest.raises(ValueError, match="patience: expected at most 2\\*\\*62"):
        fg.stop.Plateau(0.0, patience=n)
    assert fg.stop.MaxSteps(2**62).n == 2**62


@pytest.mark.parametrize("loop", ["auto", "python"])
def test_a_rule_changed_after_it_was_made_is_checked_again(loop):
    m, x, y = e1()
    rule = fg.stop.MaxSteps(5)
    rule.n = -1
    with pytest.raises(ValueError, match=r"stop\[0\]\.n: expected a positive int"):
        fg.fit(m, x, y, stop=rule, loop=loop)
    tol = fg.stop.Plateau(1e-3, 5)
    tol.tol = float("nan")
    with pytest.raises(ValueError, match=r"stop\[0\]\.tol"):
        fg.fit(m, x, y, stop=[tol], loop=loop)


def test_a_rule_class_instead_of_a_rule():
    m, x, y = e1()
    with pytest.raises(TypeError, match=r"stop\[0\]: expected a rule, got the class LossBelow"):
        fg.fit(m, x, y, stop=fg.stop.LossBelow)


def test_callbacks_must_be_a_list():
    m, x, y = e1()
    with pytest.raises(TypeError, match="callbacks: expected a list of callables"):
        fg.fit(m, x, y, callbacks=print)


@pytest.mark.parametrize("lr, word", [(1e-50, "is 0 in float32"), (1e39, "is inf in float32")])
def test_a_learning_rate_float32_cannot_hold(lr, word):
    m, x, y = e1()
    with pytest.raises(ValueError, match="learning_rate: .*" + word):
        fg.fit(m, x, y, optimizer=fg.SGD(lr))
    m64 = fg.Dense(1, use_bias=False, dtype="float64")
    m64.set_weights([np.array([[2.0]])])
    assert fg.fit(m64, x, y, optimizer=fg.SGD(1e-50), stop=fg.stop.MaxSteps(2)).steps == 2


def test_data_that_overflows_float32_is_named_so():
    m, _, _ = e1()
    with pytest.raises(ValueError, match=r"x: values up to 1e\+300 overflow float32"):
        fg.fit(m, np.array([[1e300], [2.0]]), [1.0, 2.0])
    with pytest.raises(ValueError, match="x: contains NaN or inf"):
        fg.fit(m, np.array([[np.inf], [2.0]]), [1.0, 2.0])


def test_y_of_the_wrong_width_is_reported_as_given():
    model = fg.Sequential([fg.Dense(2)])
    x, y = data(10)
    with pytest.raises(ValueError, match=r"got shape \(10,\)"):
        fg.fit(model, x, y)


# ---- results and errors ---------------------------------------------------------------------

def test_divergence_error_pickles_with_its_result():
    m, x, _ = e1()
    with pytest.raises(fg.DivergenceError) as info:
        fg.fit(m, x * 1e18, x.ravel() * 1e18, optimizer=fg.SGD(10.0), on_divergence="raise")
    back = pickle.loads(pickle.dumps(info.value))
    assert str(back) == str(info.value)
    assert back.result.steps == info.value.result.steps
    assert back.result.stopped_by == "diverged"


def test_results_compare_by_identity():
    m, x, y = e1()
    a = fg.fit(m, x, y, stop=fg.stop.MaxSteps(2))
    b = fg.fit(m, x, y, stop=fg.stop.MaxSteps(2))
    assert a == a and a != b
    assert a.history == a.history and a.history != b.history


def test_replay_refuses_other_data():
    x, y = data(30)
    r = fg.fit(small_net(), x, y, batch_size=4, seed=0, stop=fg.stop.MaxSteps(3))
    with pytest.raises(ValueError, match="x: expected the 30 samples the run trained on"):
        fg.oracle.replay(r, x[:10], y[:10])
    with pytest.raises(ValueError, match="x: expected 3 features"):
        fg.oracle.replay(r, np.ones((30, 5)), y)


# ---- the kernels -----------------------------------------------------------------------------

def test_ops_name_a_missing_array():
    with pytest.raises(TypeError, match="pred: expected a numeric array, got None"):
        ops.mse(None, [1.0])
    with pytest.raises(TypeError, match="kernel: expected a numeric array, got None"):
        ops.dense_forward([[1.0]], None)
    x = np.ones((2, 1), np.float32)  # arrays the kernels take as they are: the fast path
    with pytest.raises(TypeError, match="kernel: expected a numeric array, got None"):
        ops.dense_forward(x, None)
    with pytest.raises(TypeError, match="y: expected a numeric array, got None"):
        ops.dense_backward(x, x, x, None)


def test_ops_flags_must_be_bools():
    one = [[1.0]]
    with pytest.raises(TypeError, match="use_bias: expected True or False"):
        ops.dense_backward(one, one, one, one, use_bias="no")
    with pytest.raises(TypeError, match="need_dx: expected True or False"):
        ops.dense_backward(one, one, one, one, need_dx=2)
    dx, dk, db = ops.dense_backward(one, one, one, one, use_bias=0, need_dx=1)  # 0 and 1 are taken
    assert db is None and dx is not None


def test_ops_keep_a_scalar_a_scalar():
    w = np.array(1.0)
    assert ops.sgd_update(w, 1.0, 0.5) == 0.5
    assert w == 0.5
    with pytest.raises(ValueError, match=r"kernel: .*got shape \(\)"):
        ops.dense_forward([[1.0]], 1.0)


# ---- the walkthrough's figures, plots and the oracle (a second probe) ------------------------

def _with_nan_weights(h, from_row):
    """A copy of History ``h`` whose weights are NaN from row ``from_row`` on."""
    import dataclasses

    weights = [w.astype(np.float64) for w in h.weights]
    for w in weights:
        w[from_row:] = np.nan
    return dataclasses.replace(h, weights=weights)


def test_max_deviation_compares_the_finite_steps_and_never_says_0_for_nan():
    from fastgrad.walkthrough import max_deviation

    x, y = data(30)
    r = fg.fit(small_net(), x, y, optimizer=fg.SGD(0.05), stop=fg.stop.MaxSteps(20), record_weights=True)
    same = max_deviation(r, r.history, y)
    assert same == {"loss": 0.0, "loss_strict": 0.0, "weights": 0.0}
    shifted = _with_nan_weights(r.history, 10)
    # rows 10.. are NaN in the "replay": compared over rows 0-9 only, where they agree exactly
    assert max_deviation(r, shifted, y)["weights"] == 0.0
    all_nan = _with_nan_weights(r.history, 0)
    assert np.isnan(max_deviation(r, all_nan, y)["weights"])
    import dataclasses

    nan_loss = dataclasses.replace(r.history, loss=np.full(r.steps, np.nan))
    dev = max_deviation(r, nan_loss, y)
    assert np.isnan(dev["loss"]) and np.isnan(dev["loss_strict"])
    with pytest.raises(ValueError, match="tf_history: expected the run's 20 steps, got 5"):
        max_deviation(r, dataclasses.replace(r.history, loss=r.history.loss[:5]), y)
    with pytest.raises(ValueError, match="tf_history: expected recorded weights"):
        max_deviation(r, dataclasses.replace(r.history, weights=None), y)


def test_replay_checks_initial_weights():
    x, y = data(30)
    r = fg.fit(small_net(), x, y, stop=fg.stop.MaxSteps(2))
    nan = [np.full(w.shape, np.nan) for w in r.initial_weights]
    with pytest.raises(ValueError, match=r"initial_weights\[0\]: contains NaN or inf"):
        fg.oracle.replay(r, x, y, initial_weights=nan)
    text = [np.full(w.shape, "a") for w in r.initial_weights]
    with pytest.raises(TypeError, match=r"initial_weights\[0\]: expected a numeric array"):
        fg.oracle.replay(r, x, y, initial_weights=text)


def test_a_result_still_prints_and_plots_after_its_large_data_changed(monkeypatch):
    x, y = data(2000, 4)
    r = fg.fit(small_net(), x, y, batch_size=4, seed=0, stop=fg.stop.MaxSteps(5))
    x *= 2.0
    assert "final_loss=? (the data changed since the run)" in repr(r)
    mpl = pytest.importorskip("matplotlib")
    mpl.use("Agg")
    import matplotlib.pyplot as plt

    fig = r.plot()
    try:
        assert "final loss" not in fig.axes[0].get_title() + (fig._suptitle.get_text() if fig._suptitle else "")
    finally:
        plt.close(fig)


def test_plots_name_arguments_of_the_wrong_kind():
    mpl = pytest.importorskip("matplotlib")
    mpl.use("Agg")
    import matplotlib.pyplot as plt

    from fastgrad import plotting

    m, x, y = e1()
    r = fg.fit(m, x, y, stop=fg.stop.MaxSteps(3))
    fig = plt.figure()
    try:
        with pytest.raises(TypeError, match="ax: expected a matplotlib Axes .* got Figure"):
            r.plot(ax=fig)
    finally:
        plt.close(fig)
    with pytest.raises(TypeError, match="runs: expected a dict {label: FitResult}, got list"):
        plotting.plot_runs([r])
    with pytest.raises(TypeError, match="runs: .* got a dict of History"):
        plotting.plot_runs({"a": r.history})
    with pytest.raises(TypeError, match="history: expected a fastgrad History"):
        plotting.history_to_dataframe(r)


def test_one_axes_leaves_a_gap_where_the_loss_is_0():
    mpl = pytest.importorskip("matplotlib")
    mpl.use("Agg")
    import matplotlib.pyplot as plt

    layer = fg.Dense(1, use_bias=False)
    layer.set_weights([np.array([[2.0]])])
    # x = y = 1, w0 = 2, lr 0.25: w halves its distance to 1 each step until it is exactly 1
    r = fg.fit(layer, [[1.0]], [1.0], optimizer=fg.SGD(0.25), stop=fg.stop.MaxSteps(40))
    assert (r.history.loss == 0).any() and (r.history.loss[:5] > 0).all()
    fig, ax = plt.subplots()
    try:
        r.plot(ax=ax)
        assert ax.get_yscale() == "log"
        scale = ax.yaxis.get_transform()
        assert scale._clip is False  # nonpositive="mask": a 0 is left out, not clipped to the bottom
    finally:
        plt.close(fig)


def test_walkthrough_run_takes_a_name_or_names():
    from fastgrad import walkthrough

    assert [e.id for e in walkthrough.run("e1")] == ["E1"]
    with pytest.raises(TypeError, match="ids: expected experiment names such as 'E4', got 4"):
        walkthrough.run([4])
    with pytest.raises(ValueError, match="steps: expected a positive int"):
        walkthrough.e6(steps=0)


def test_batch_stream_bounds_n():
    with pytest.raises(ValueError, match=r"n: expected at most 2\*\*48"):
        _batches.BatchStream(2**70, 1, "random", 0)


def test_record_weights_takes_numpy_bools():
    m, x, y = e1()
    on = fg.fit(m, x, y, record_weights=np.True_, stop=fg.stop.MaxSteps(3))
    off = fg.fit(m, x, y, record_weights=np.False_, stop=fg.stop.MaxSteps(3))
    assert on.history.weights[0].shape == (4, 1, 1) and off.history.weights is None


# ---- the kernels at their edges (a third probe) --------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shift", [1, 3, 8])
def test_sgd_update_with_g_overlapping_w_is_numpys(dtype, shift):
    buf = np.arange(40, dtype=dtype)
    want = buf.copy()
    w_want, g_want = want[shift:], want[:-shift].copy()
    change = np.abs(w_want - (w_want - 0.5 * g_want)).max()
    w_want -= dtype(0.5) * g_want
    got = ops.sgd_update(buf[shift:], buf[:-shift], 0.5)
    np.testing.assert_array_equal(buf, want)
    assert got == change


def test_empty_arrays_with_a_huge_dimension_return_at_once():
    # no element to compute, however many rows or columns: each call must return, not loop over
    # 2**40 empty rows (a subprocess, so that a hang fails the test instead of stalling the run)
    import subprocess
    import sys

    code = (
        "import numpy as np\nfrom fastgrad import ops\nf = np.float32\nH = 2**40\n"
        "assert ops.dense_forward(np.ones((H, 0), f), np.ones((0, 0), f)).shape == (H, 0)\n"
        "assert ops.dense_forward(np.ones((H, 0), f), np.ones((0, 0), f), np.ones(0, f), 'relu').shape == (H, 0)\n"
        "dx, dk, db = ops.dense_backward(np.ones((0, 0), f), np.ones((0, H), f), np.ones((H, 0), f), np.ones((0, 0), f))\n"
        "assert dx.shape == (0, H) and dk.shape == (H, 0) and db.shape == (0,)\n"
        "dx, dk, db = ops.dense_backward(np.ones((H, 0), f), np.ones((H, 0), f), np.ones((0, 0), f), "
        "np.ones((H, 0), f), 'relu', True, False)\n"
        "assert dx is None and dk.shape == (0, 0) and db.shape == (0,)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=EMPTY_CALLS_TIMEOUT_S)


EMPTY_CALLS_TIMEOUT_S = 120  # four calls that do no work; minutes on a slow machine would be a loop


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_backward_keeps_a_nan_gradient_where_the_unit_is_off(dtype):
    # TensorFlow's ReluGrad is dy * (y > 0): NaN * 0 is NaN, as it must be for a diverged run
    dy = np.array([[np.nan, 1.0], [np.inf, -2.0]], dtype)
    x = np.ones((2, 1), dtype)
    k = np.ones((1, 2), dtype)
    y = np.array([[0.0, 3.0], [0.0, 0.0]], dtype)  # unit 0 off in both rows
    dx, dk, db = ops.dense_backward(dy, x, k, y, "relu")
    assert np.isnan(dk[0, 0]) and np.isnan(db[0])
    assert dk[0, 1] == 1.0 and db[1] == 1.0  # -2 masked by 0 adds nothing
    assert np.isnan(dx).all()  # each row of dx sums a NaN


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_backward_is_dy_times_the_mask_bit_for_bit_on_wide_rows(dtype):
    # rows wide enough for the vectorised loop and its tail: every kind of dy against every kind
    # of y, the same bits as NumPy's dy * (y > 0) (a masked negative dy is -0, a masked NaN or
    # inf is NaN)
    tiny = np.finfo(dtype).smallest_subnormal
    kinds_dy = np.array([1.5, -2.0, 0.0, -0.0, np.nan, np.inf, -np.inf, tiny, -tiny], dtype)
    kinds_y = np.array([2.0, 0.0, -0.0, -1.0, np.nan, np.inf, tiny, -tiny], dtype)
    dy = np.repeat(kinds_dy, kinds_y.size).reshape(1, -1)  # (1, 72): dk = 1 * dz, db = dz, exactly
    y = np.tile(kinds_y, kinds_dy.size).reshape(1, -1)
    x = np.ones((1, 1), dtype)
    k = np.ones((1, dy.shape[1]), dtype)
    with np.errstate(invalid="ignore"):
        want = dy * (y > 0)
    _, dk, db = ops.dense_backward(dy, x, k, y, "relu")
    bits = np.uint32 if dtype == np.float32 else np.uint64
    for got in (dk[0], db):
        same_or_both_nan = (got.view(bits) == want[0].view(bits)) | (np.isnan(got) & np.isnan(want[0]))
        assert same_or_both_nan.all()


def test_ops_take_big_endian_float32_as_float32():
    x = np.array([[1.0, 2.0]], ">f4")
    k = np.array([[1.0], [2.0]], ">f4")
    out = ops.dense_forward(x, k)
    assert out.dtype == np.float32 and out[0, 0] == 5.0


def test_sgd_update_names_a_learning_rate_too_large_for_a_float():
    with pytest.raises(ValueError, match="learning_rate: expected a number a float can hold"):
        ops.sgd_update(np.ones(2), np.ones(2), 10**400)


# ---- Ctrl-C at the edges of a run (a fourth probe) ----------------------------------------------

LATE_SIGNALS = 60  # Ctrl-Cs sent at random moments of back-to-back native runs
LATE_WINDOW_S = 0.02  # each one within this long of its thread's start
SURFACE_S = 0.05  # how long a pending KeyboardInterrupt gets to surface
SENT_WAIT_S = 60  # the longest the sender may take to send, on a loaded machine


def _late_ctrl_c(m, x, y, delay):
    """Back-to-back native runs while another thread sends one Ctrl-C after ``delay`` seconds:
    "interrupted" (a run stopped for it), "raised" (KeyboardInterrupt) or "lost".

    Python raises a pending KeyboardInterrupt at its next check between bytecodes, wherever the
    main thread is then: in Thread.start (a short delay, on a loaded machine), in fit, in join.
    Every statement from the start of the sender to the end of the wait for a pending one is
    inside the try, so that it is counted here and never reaches pytest."""
    sent = threading.Event()

    def kill():
        time.sleep(delay)
        os.kill(os.getpid(), signal.SIGINT)
        sent.set()

    t = threading.Thread(target=kill)
    outcome = "lost"
    try:
        t.start()
        while not sent.is_set():
            r = fg.fit(m, x, y, optimizer=fg.SGD(0.01), stop=fg.stop.MaxSteps(100_000))
            assert r.loop == "native"
            if r.stopped_by == "interrupted":
                outcome = "interrupted"
                break
        t.join()
        deadline = time.monotonic() + SURFACE_S
        while outcome == "lost" and time.monotonic() < deadline:  # (each pass back checks for it)
            time.sleep(0.001)
    except KeyboardInterrupt:
        outcome = "raised"
    # sent, the Ctrl-C has been raised; the sender may not have been started for Thread.join yet
    assert sent.wait(SENT_WAIT_S)
    t.join()
    return outcome


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="POSIX signals")
def test_a_ctrl_c_near_the_end_of_a_native_run_is_never_lost():
    # each Ctrl-C either stops a run ('interrupted') or raises KeyboardInterrupt; before the fix
    # one that came after a run's last poll vanished (about 1 in 3 of 100,000-step W1 runs)
    import random

    m, x, y = e1()
    rng = random.Random(0)
    outcomes = [_late_ctrl_c(m, x, y, rng.uniform(0, LATE_WINDOW_S)) for _ in range(LATE_SIGNALS)]
    assert outcomes.count("lost") == 0
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_ctrl_c_after_the_python_loops_last_look_raises():
    m, x, y = e1()

    def ctrl_c_at_the_last_step(state):
        if state.step == 5:
            os.kill(os.getpid(), signal.SIGINT)  # the loop has looked at its flag for this step

    with pytest.raises(KeyboardInterrupt):
        fg.fit(m, x, y, stop=fg.stop.MaxSteps(5), callbacks=[ctrl_c_at_the_last_step])
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.parametrize("loop", ["native", "python"])
def test_an_ignored_ctrl_c_stays_ignored(loop):
    # a worker pool's initializer often ignores SIGINT (the parent handles it): fit must not
    # take it over
    m, x, y = e1()
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        steps = 2_000_000 if loop == "native" else 20_000
        timer = threading.Timer(0.005, lambda: os.kill(os.getpid(), signal.SIGINT))  # during the run
        timer.start()
        r = fg.fit(m, x, y, optimizer=fg.SGD(0.01), stop=fg.stop.MaxSteps(steps), loop=loop)
        timer.join()
        assert r.stopped_by == "max_steps" and r.steps == steps
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, old)
