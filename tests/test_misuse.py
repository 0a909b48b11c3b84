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
from fastgrad import ops
from fastgrad import training

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
    monkeypatch.setattr(training, "KEEP_COPY_BYTES", 64)  # every array counts as large
    x, y = data(200, 4)
    kept = fg.fit(small_net(), x, y, batch_size=8, seed=1, stop=fg.stop.MaxSteps(5))
    assert kept._data[0] is x  # by reference, not copied
    monkeypatch.setattr(training, "KEEP_COPY_BYTES", 8 << 20)
    copied = fg.fit(small_net(), x, y, batch_size=8, seed=1, stop=fg.stop.MaxSteps(5))
    assert copied._data[0] is not x
    assert kept.final_loss == copied.final_loss  # unchanged data: the same loss


def test_a_sample_of_large_data_sees_a_change_to_every_seventh_row(monkeypatch):
    monkeypatch.setattr(training, "KEEP_COPY_BYTES", 64)
    x, y = data(500, 8)
    r = fg.fit(small_net(), x, y, batch_size=8, seed=1, stop=fg.stop.MaxSteps(3))
    x[::7] = 0.0
    with pytest.raises(RuntimeError, match="final_loss: x or y changed"):
        r.final_loss


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
    (lambda k: np.asfortranarray(k), "non-contiguous float32"),
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


def test_ops_flags_must_be_bools():
    one = [[1.0]]
    with pytest.raises(TypeError, match="use_bias: expected True or False"):
        ops.dense_backward(one, one, one, one, use_bias="no")
    with pytest.raises(TypeError, match="need_dx: expected True or False"):
        ops.dense_backward(one, one, one, one, need_dx=0)


def test_ops_keep_a_scalar_a_scalar():
    w = np.array(1.0)
    assert ops.sgd_update(w, 1.0, 0.5) == 0.5
    assert w == 0.5
    with pytest.raises(ValueError, match=r"kernel: .*got shape \(\)"):
        ops.dense_forward([[1.0]], 1.0)
