"""Tune (issue 16): SGD's options, Adam and the schedules give the same bits in both loops, on the
team too; the optimizer keeps its state between fits.  (Agreement with Keras's own optimizers is
tests/test_optimizers_keras.py.)"""

from __future__ import annotations

import numpy as np
import pytest

import fastgrad as fg
from fastgrad import _core, schedules, stop

OPTIMIZERS = {
    "sgd": lambda: fg.SGD(0.05),
    "momentum": lambda: fg.SGD(0.02, momentum=0.9),
    "nesterov": lambda: fg.SGD(0.02, momentum=0.9, nesterov=True),
    "weight_decay": lambda: fg.SGD(0.05, weight_decay=0.01),
    "clipnorm": lambda: fg.SGD(0.1, clipnorm=0.5),
    "clipvalue": lambda: fg.SGD(0.1, clipvalue=0.2),
    "global_clipnorm": lambda: fg.SGD(0.1, global_clipnorm=0.5),
    "adam": lambda: fg.Adam(0.01),
    "adam_amsgrad_wd": lambda: fg.Adam(0.01, amsgrad=True, weight_decay=0.004),
    "adam_clipnorm": lambda: fg.Adam(0.01, clipnorm=0.3),
    "exponential": lambda: fg.SGD(schedules.ExponentialDecay(0.05, 10, 0.9)),
    "inverse_time_staircase": lambda: fg.Adam(schedules.InverseTimeDecay(0.02, 7, 0.5, staircase=True)),
    "piecewise": lambda: fg.SGD(schedules.PiecewiseConstantDecay([10, 20], [0.05, 0.02, 0.01]), momentum=0.5),
    "l2_momentum": lambda: fg.SGD(0.02, momentum=0.9, l2=0.01),
    "l2_adam": lambda: fg.Adam(0.01, l2=0.01),
    "cosine_warmup": lambda: fg.Adam(schedules.CosineDecay(0.001, 30, alpha=0.1, warmup_target=0.02, warmup_steps=5)),
}


def data(n=32, dtype=np.float32):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 4))
    return x.astype(dtype), (x @ np.array([1.0, -2.0, 0.5, 3.0]) + 0.5).astype(dtype)


def two_layer(dtype=np.float32):
    return fg.Sequential([fg.Dense(6, "relu", dtype=dtype), fg.Dense(1, dtype=dtype)], seed=0)


def run(make_opt, loop, dtype=np.float32, steps=40, make=two_layer, **kw):
    x, y = data(dtype=dtype)
    opt = make_opt()
    m = make(dtype)
    r = fg.fit(m, x, y, optimizer=opt, batch_size=4, seed=3, stop=[stop.MaxSteps(steps)], loop=loop, **kw)
    return r, opt


def same(a, b):
    assert (a.stopped_by, a.steps) == (b.stopped_by, b.steps)
    assert a.history.loss.tobytes() == b.history.loss.tobytes()
    assert a.history.grad_norm.tobytes() == b.history.grad_norm.tobytes()
    assert (a.history.learning_rate is None) == (b.history.learning_rate is None)
    if a.history.learning_rate is not None:
        assert a.history.learning_rate.tobytes() == b.history.learning_rate.tobytes()
    for u, v in zip(a.final_weights, b.final_weights):
        assert u.tobytes() == v.tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_both_loops_give_the_same_bits_for_every_option(name, dtype):
    (a, oa), (b, ob) = run(OPTIMIZERS[name], "native", dtype), run(OPTIMIZERS[name], "python", dtype)
    same(a, b)
    assert oa.iterations == ob.iterations == 40
    for u, v in zip(oa.variables, ob.variables):
        assert u.tobytes() == v.tobytes()


@pytest.mark.parametrize("name", ["momentum", "nesterov", "adam", "global_clipnorm", "cosine_warmup", "l2_momentum"])
def test_a_one_output_layer_takes_the_optimizer_too(name):
    """(Momentum and Nesterov run in the register-resident loop natively, the one-output step and
    the optimizers' update in the Python loop: the same bits.)"""
    one = lambda dtype: fg.Sequential([fg.Dense(1, dtype=dtype)], seed=0)  # noqa: E731 (the tiny loop's model)
    (a, _), (b, _) = run(OPTIMIZERS[name], "native", make=one), run(OPTIMIZERS[name], "python", make=one)
    same(a, b)
    plain, _ = run(OPTIMIZERS["sgd"], "native", make=one)
    assert a.history.loss.tobytes() != plain.history.loss.tobytes()  # the rule was applied, not plain SGD


@pytest.mark.parametrize("rows_split", [1 << 20, 0])
@pytest.mark.parametrize("name", ["momentum", "adam_amsgrad_wd", "global_clipnorm", "clipnorm", "exponential"])
def test_the_team_gives_both_loops_the_same_bits(name, rows_split):
    saved = _core.get_team_parts(), _core.get_team_min_work(), _core.get_team_rows_split()
    _core.set_team_parts(2)
    _core.set_team_min_work(0)
    _core.set_team_rows_split(rows_split)
    try:
        before = _core.team_steps_run()
        (a, oa), (b, ob) = run(OPTIMIZERS[name], "native"), run(OPTIMIZERS[name], "python")
        assert _core.team_steps_run() >= before + 80
    finally:
        _core.set_team_parts(saved[0])
        _core.set_team_min_work(saved[1])
        _core.set_team_rows_split(saved[2])
    same(a, b)
    for u, v in zip(oa.variables, ob.variables):
        assert u.tobytes() == v.tobytes()
    serial, _ = run(OPTIMIZERS[name], "native")
    # on the team the sums (gradient norms, clips) are taken block by block: close to the serial step
    np.testing.assert_allclose(a.history.loss, serial.history.loss, rtol=TEAM_VS_SERIAL_RTOL)


TEAM_VS_SERIAL_RTOL = 1e-4  # float32 sums in another order, over 40 steps


@pytest.mark.parametrize("name", ["momentum", "adam", "exponential", "cosine_warmup"])
def test_a_second_fit_continues_where_the_first_ended(name):
    x, y = data()
    whole_opt, split_opt = OPTIMIZERS[name](), OPTIMIZERS[name]()
    whole = two_layer()
    fg.fit(whole, x, y, optimizer=whole_opt, batches=_batches(40), stop=[stop.MaxSteps(40)])
    split = two_layer()
    fg.fit(split, x, y, optimizer=split_opt, batches=_batches(40)[:25], loop="native")
    assert split_opt.iterations == 25
    fg.fit(split, x, y, optimizer=split_opt, batches=_batches(40)[25:], loop="python")
    assert split_opt.iterations == whole_opt.iterations == 40
    for u, v in zip(whole.get_weights(), split.get_weights()):
        assert u.tobytes() == v.tobytes()
    for u, v in zip(whole_opt.variables, split_opt.variables):
        assert u.tobytes() == v.tobytes()


def _batches(steps):
    return np.random.default_rng(5).integers(0, 32, size=(steps, 4))


def test_the_learning_rate_is_recorded_when_it_changes():
    r, _ = run(OPTIMIZERS["piecewise"], "native", steps=25)
    lr = r.history.learning_rate
    # the rate of step t is the schedule at the t-1 updates before it (Keras's iterations)
    assert lr.tolist() == [np.float32(0.05)] * 11 + [np.float32(0.02)] * 10 + [np.float32(0.01)] * 4
    assert run(OPTIMIZERS["momentum"], "native")[0].history.learning_rate is None
    sched = schedules.ExponentialDecay(0.05, 10, 0.9)
    assert sched(0) == pytest.approx(0.05) and sched(10) == pytest.approx(0.045)


def test_an_optimizer_with_state_stays_with_its_model():
    x, y = data()
    opt = fg.Adam(0.01)
    first = two_layer()
    fg.fit(first, x, y, optimizer=opt, batch_size=4, seed=0, stop=[stop.MaxSteps(5)])
    other = two_layer()
    other.build(4)
    before = [w.copy() for w in other.get_weights()]
    with pytest.raises(ValueError, match="holds the momentum/velocity state of another model"):
        fg.fit(other, x, y, optimizer=opt, stop=[stop.MaxSteps(5)])
    assert all(a.tobytes() == b.tobytes() for a, b in zip(before, other.get_weights()))
    opt.reset()
    fg.fit(other, x, y, optimizer=opt, batch_size=4, seed=0, stop=[stop.MaxSteps(5)])
    assert opt.iterations == 5
    plain = fg.SGD(0.01)  # no per-parameter state: any model
    fg.fit(first, x, y, optimizer=plain, stop=[stop.MaxSteps(2)])
    fg.fit(other, x, y, optimizer=plain, stop=[stop.MaxSteps(2)])
    assert plain.iterations == 4


@pytest.mark.parametrize("make, error, match", [
    (lambda: fg.SGD(0.1, momentum=1.5), ValueError, r"momentum: expected a number in \[0, 1\)"),
    (lambda: fg.SGD(0.1, clipnorm=1.0, clipvalue=1.0), ValueError, "at most one of them"),
    (lambda: fg.Adam(0.1, weight_decay=-1.0), ValueError, "weight_decay"),
    (lambda: fg.Adam(schedules.CosineDecay), TypeError, "expected a schedule, got the class CosineDecay"),
    (lambda: schedules.PiecewiseConstantDecay([10, 20], [0.1, 0.2]), ValueError, "values: expected one more"),
    (lambda: fg.Adam(0.1, beta_1=1.0), ValueError, "beta_1"),
    (lambda: fg.SGD(0.1, nesterov="yes"), TypeError, "nesterov"),
])
def test_bad_optimizer_arguments_are_clear_errors(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_fit_refuses_something_else_than_an_optimizer():
    x, y = data()
    with pytest.raises(TypeError, match="optimizer: expected fastgrad.SGD or fastgrad.Adam, got str"):
        fg.fit(two_layer(), x, y, optimizer="adam")
    with pytest.raises(TypeError, match="got the class Adam"):
        fg.fit(two_layer(), x, y, optimizer=fg.Adam)


def test_l2_adds_l2_times_each_kernel_to_its_gradient():
    """The coupled L2 option (scikit-learn's alpha / batch): one step of plain SGD with it is
    w - lr * (g + l2 * w) on the kernels and w - lr * g on the biases."""
    x, y = data(dtype=np.float64)
    m = two_layer(np.float64)
    m.build(4)
    w0 = [w.copy() for w in m.get_weights()]
    _, grads = fg.value_and_grad(m, x[:4], y[:4])
    fg.fit(m, x, y, optimizer=fg.SGD(0.1, l2=0.5), batches=np.arange(4)[None], loop="native")
    kernel = [True, False, True, False]
    for w, w_0, g, k in zip(m.get_weights(), w0, grads, kernel):
        want = w_0 - 0.1 * ((g + 0.5 * w_0) if k else g)
        np.testing.assert_allclose(w, want, rtol=L2_RTOL, atol=0)


L2_RTOL = 1e-14  # float64: the same operations, rounded once or twice more
