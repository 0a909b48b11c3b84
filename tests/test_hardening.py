"""The boundary hardened (issue 14): each test fails on the code before its fix."""

from __future__ import annotations

import tracemalloc
import warnings

import numpy as np
import pytest

import fastgrad as fg
from fastgrad import _core, _loops, _run, ops, training
from fastgrad.stop import MaxSteps


def same_bits(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def plane(n=20, d=3, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(dtype)
    return x, (x @ rng.normal(size=d) + 1.0).astype(dtype)


def two_layer(dtype="float64", seed=0):
    return fg.Sequential([fg.Dense(4, "relu", dtype=dtype), fg.Dense(1, dtype=dtype)], seed=seed)


def assert_same_weights(got, want):
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert same_bits(a, b)


def assert_same_run(a, b):
    assert (a.stopped_by, a.steps) == (b.stopped_by, b.steps)
    assert same_bits(a.history.loss, b.history.loss)
    assert_same_weights(a.final_weights, b.final_weights)
    if a.history.weights is not None:
        assert a.history.weight_steps.tolist() == b.history.weight_steps.tolist()
        assert_same_weights(a.history.weights, b.history.weights)


# ---- 1. record_weights is bounded ------------------------------------------------------------

@pytest.mark.parametrize("every", [2**62 + 1, 2**63, 2**64 - 1000, 2**64 - 2, 2**64, 2**70])
@pytest.mark.parametrize("loop", ["auto", "python"])
def test_record_weights_beyond_2_62_is_refused_naming_the_bound(every, loop):
    # 2**63 .. 2**64 - 1 overflowed the native loop's record buffer; 2**64 got pybind11's signature dump
    model = two_layer().build(3)
    before = model.get_weights()
    x, y = plane()
    with pytest.raises(ValueError, match=r"record_weights: expected .* at most 2\*\*62, got " + str(every)):
        fg.fit(model, x, y, stop=MaxSteps(1500), record_weights=every, loop=loop)
    assert_same_weights(model.get_weights(), before)


def test_record_weights_at_the_bound_records_the_ends_in_both_loops():
    x, y = plane()
    runs = [fg.fit(two_layer(), x, y, optimizer=fg.SGD(0.01), stop=MaxSteps(1500), record_weights=2**62, loop=loop)
            for loop in ("python", "native")]
    for r in runs:
        assert r.history.weight_steps.tolist() == [0, 1500]
    assert_same_run(*runs)


# ---- 2. unaligned arrays never reach the kernels -----------------------------------------------

def unaligned(a):
    """A copy of ``a`` one byte past an aligned address (flags.aligned False)."""
    a = np.asarray(a)
    buf = np.zeros(a.nbytes + 1, np.uint8)
    out = buf[1:].view(a.dtype).reshape(a.shape)
    out[...] = a
    assert not out.flags.aligned and out.flags.c_contiguous
    return out


def _all_aligned(v):
    if isinstance(v, np.ndarray):
        return v.flags.aligned
    if isinstance(v, (list, tuple)):
        return all(_all_aligned(u) for u in v)
    return True


@pytest.fixture
def strict_core(monkeypatch):
    """_core's array functions and Nets, asserting that every array they are given is aligned."""

    def check(name, args):
        assert _all_aligned(args), f"an unaligned array reached _core.{name}"

    def wrap(name, f):
        def checked(*args, **kw):
            check(name, (args, tuple(kw.values())))
            return f(*args, **kw)

        return checked

    for name in ("dense_forward", "dense_backward", "mse", "mse_grad", "sgd_update", "all_finite", "fast_data"):
        monkeypatch.setattr(_core, name, wrap(name, getattr(_core, name)))
    for name in ("NetF32", "NetF64"):
        real = getattr(_core, name)

        class Checked:
            def __init__(self, params, *args, _real=real, _name=name):
                check(_name, params)
                self._net = _real(params, *args)

            def rebind(self, params):
                check("Net.rebind", params)
                self._net.rebind(params)

            def step(self, *args):
                check("Net.step", args)
                return self._net.step(*args)

            def fit_run(self, *args, **kw):
                check("Net.fit_run", (args, tuple(kw.get("validation") or ())))
                return self._net.fit_run(*args, **kw)

            def validate(self, *args):
                check("Net.validate", args)
                return self._net.validate(*args)

            def set_optimizer(self, kind, params, schedule, slots, iterations):
                check("Net.set_optimizer", [a for kind_ in slots for a in kind_])
                self._net.set_optimizer(kind, params, schedule, slots, iterations)

            @property
            def iterations(self):
                return self._net.iterations

            @property
            def plain(self):
                return self._net.plain

        monkeypatch.setattr(_core, name, Checked)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_an_unaligned_x_or_y_gives_what_an_aligned_copy_gives(strict_core, dtype):
    x, y = plane(dtype=dtype)
    ux, uy = unaligned(x), unaligned(y)
    name = np.dtype(dtype).name
    model = two_layer(name).build(3)
    assert same_bits(model(ux), model(x))
    assert same_bits(model.layers[0](ux), model.layers[0](x))
    loss, grads = fg.value_and_grad(model, ux, uy)
    want_loss, want_grads = fg.value_and_grad(model, x, y)
    assert loss == want_loss
    assert_same_weights(grads, want_grads)
    for loop in ("native", "python"):
        a = fg.fit(two_layer(name), ux, uy, batch_size=3, seed=1, stop=MaxSteps(40), record_weights=7, loop=loop)
        b = fg.fit(two_layer(name), x, y, batch_size=3, seed=1, stop=MaxSteps(40), record_weights=7, loop=loop)
        assert_same_run(a, b)
        assert a.final_loss == b.final_loss


def test_ops_copy_unaligned_inputs_and_refuse_an_unaligned_w(strict_core):
    x, _ = plane()
    k = np.arange(6.0).reshape(3, 2)
    assert same_bits(ops.dense_forward(unaligned(x), unaligned(k), unaligned(np.ones(2))),
                     ops.dense_forward(x, k, np.ones(2)))
    assert ops.mse(unaligned(x), x) == 0.0
    w = np.ones(3)
    ops.sgd_update(w, unaligned(np.arange(3.0)), 0.5)
    assert w.tolist() == [1.0, 0.5, 0.0]
    with pytest.raises(ValueError, match="w: expected an aligned array"):
        ops.sgd_update(unaligned(np.ones(3)), np.ones(3), 0.5)


def test_an_unaligned_kernel_assigned_directly_is_refused():
    x, y = plane()
    layer = fg.Dense(1, dtype="float64", seed=0).build(3)
    before = layer.get_weights()
    layer.kernel = unaligned(layer.kernel)
    for call in (lambda: layer(x), lambda: fg.value_and_grad(layer, x, y), lambda: fg.fit(layer, x, y)):
        with pytest.raises(TypeError, match="kernel: expected .* got an unaligned float64 array"):
            call()
    assert_same_weights(layer.get_weights(), before)


# ---- 3. data that shares memory with a parameter ----------------------------------------------

@pytest.mark.parametrize("loop", ["native", "python"])
def test_x_that_is_the_models_own_kernel_trains_as_a_copy(loop):
    d = fg.Dense(3, dtype="float64", seed=0).build(3)  # kernel (3, 3): x of 3 samples, 3 features
    twin = fg.Dense(3, dtype="float64", seed=0).build(3)
    y = np.arange(9.0).reshape(3, 3)
    x_copy = d.kernel.copy()
    kw = dict(optimizer=fg.SGD(0.1), stop=MaxSteps(50), loop=loop, record_weights=True)
    got = fg.fit(d, d.kernel, y, **kw)
    want = fg.fit(twin, x_copy, y, **kw)
    assert_same_run(got, want)
    assert got.final_loss == want.final_loss


@pytest.mark.parametrize("loop", ["native", "python"])
def test_x_and_y_viewing_parameters_train_as_copies(loop):
    model = two_layer().build(2)  # layer 0: kernel (2, 4), bias (4,)
    rng = np.random.default_rng(1)
    model.set_weights([rng.normal(size=w.shape) for w in model.get_weights()])
    twin = two_layer().build(2)
    twin.set_weights(model.get_weights())
    x = model.layers[0].kernel.reshape(4, 2)  # views: 4 samples of 2 features, and their targets
    y = model.layers[0].bias
    x_copy, y_copy = x.copy(), y.copy()
    kw = dict(optimizer=fg.SGD(0.05), batch_size=2, seed=3, stop=MaxSteps(60), loop=loop)
    got = fg.fit(model, x, y, **kw)
    want = fg.fit(twin, x_copy, y_copy, **kw)
    assert_same_run(got, want)


# ---- 4. a model's call refuses what fit refuses ---------------------------------------------------

BAD_X = {
    "complex": (lambda: np.ones((4, 3)) + 1j, TypeError, r"x: expected a numeric array, got dtype complex128"),
    "strings": (lambda: np.array([["1", "2", "3"]] * 4), TypeError, r"x: expected a numeric array, got dtype <U1"),
    "masked": (lambda: np.ma.masked_array(np.ones((4, 3)), mask=[[0, 1, 0]] * 4), TypeError,
               r"x: expected a plain array, got a masked array"),
    "0-d": (lambda: np.float64(2.0), ValueError, r"x: expected a 2-D array \(batch, input_dim\), got a 0-d array"),
}


@pytest.mark.parametrize("case", list(BAD_X))
@pytest.mark.parametrize("make", [lambda: fg.Dense(2, seed=0), two_layer], ids=["Dense", "Sequential"])
@pytest.mark.parametrize("built", [True, False])
def test_a_models_call_refuses_complex_strings_masks_and_scalars(case, make, built):
    bad, exc, match = BAD_X[case]
    model = make()
    if built:
        model.build(3)
    before = model.get_weights() if built else None
    with warnings.catch_warnings(), pytest.raises(exc, match=match):
        # as for a user, for whom NumPy's ComplexWarning ("discards the imaginary part") is no error
        warnings.simplefilter("ignore")
        model(bad())
    assert model.built is built
    if built:
        assert_same_weights(model.get_weights(), before)


def test_fit_and_value_and_grad_refuse_a_masked_array():
    x, y = plane(4)
    masked = np.ma.masked_array(x, mask=np.zeros_like(x, bool))
    model = two_layer()
    with pytest.raises(TypeError, match="x: expected a plain array, got a masked array"):
        fg.fit(model, masked, y)
    with pytest.raises(TypeError, match="y: expected a plain array, got a masked array"):
        fg.value_and_grad(model, x, np.ma.masked_array(y))
    assert not model.built


# ---- 5. memory: a failed run leaves the weights, and records are arrays -----------------------

class _FailingNet:
    """A compiled Net whose run fails for want of memory after it has updated the weights."""

    real = None

    def __init__(self, *args):
        self._net = self.real(*args)
        self.steps = 0

    def rebind(self, params):
        self._net.rebind(params)

    def set_optimizer(self, *args):
        self._net.set_optimizer(*args)

    @property
    def iterations(self):
        return self._net.iterations

    @property
    def plain(self):
        return self._net.plain

    def step(self, *args):
        out = self._net.step(*args)
        self.steps += 1
        if self.steps == 3:
            raise MemoryError("std::bad_alloc")
        return out

    def fit_run(self, *args, **kw):
        self._net.fit_run(*args, **kw)
        raise MemoryError("std::bad_alloc")


@pytest.mark.parametrize("loop", ["native", "python"])
@pytest.mark.parametrize("built", [True, False])
def test_a_run_that_runs_out_of_memory_leaves_the_weights_as_they_were(monkeypatch, loop, built):
    monkeypatch.setattr(_FailingNet, "real", _core.NetF64)
    monkeypatch.setattr(_core, "NetF64", _FailingNet)
    x, y = plane()
    model = two_layer()
    if built:
        model.build(3)
    before = model.get_weights()
    arrays = model._params()
    with pytest.raises(MemoryError, match="fit: could not allocate|std::bad_alloc"):
        fg.fit(model, x, y, optimizer=fg.SGD(0.1), batch_size=2, seed=0, stop=MaxSteps(100), loop=loop)
    assert model.built is built
    assert_same_weights(model.get_weights(), before)
    for a, b in zip(model._params(), arrays):  # the same arrays, holding the same values
        assert a is b


def test_a_python_run_whose_weight_records_cannot_grow_leaves_the_weights(monkeypatch):
    calls = []
    add_row = _loops.Records.add_row

    def failing(self, step):
        calls.append(step)
        if step >= 1:  # row 0 is the initial weights; the first update is step 1
            raise MemoryError("cannot allocate")
        add_row(self, step)

    monkeypatch.setattr(_loops.Records, "add_row", failing)
    x, y = plane()
    model = two_layer().build(3)
    before = model.get_weights()
    with pytest.raises(MemoryError):
        fg.fit(model, x, y, optimizer=fg.SGD(0.1), stop=MaxSteps(10), record_weights=True, loop="python")
    assert calls == [0, 1]
    assert_same_weights(model.get_weights(), before)


@pytest.mark.parametrize("loop", ["native", "python"])
def test_a_recording_that_cannot_fit_in_memory_is_refused_up_front(monkeypatch, loop):
    monkeypatch.setattr(training, "available_memory", lambda: 50 * 10**6)
    x, y = plane()
    model = two_layer()
    # 10**7 rows of 21 float64 weights: 1.68 GB
    with pytest.raises(MemoryError, match=r"record_weights: .* 10000001 rows .*: 1\.68 GB, more than the 50 MB"):
        fg.fit(model, x, y, stop=MaxSteps(10**7), record_weights=True, loop=loop)
    assert not model.built
    # every 1000 steps: 1.68 MB, under the threshold checked
    r = fg.fit(model, x, y, stop=MaxSteps(3000), record_weights=1000, loop=loop)
    assert r.history.weight_steps.tolist() == [0, 1000, 2000, 3000]


def test_python_loop_records_weights_in_arrays_not_a_list_per_step():
    # a list of small arrays per step peaked at about 50 times the records it made
    steps = 50_000
    x, y = plane(d=3, dtype=np.float32)
    model = fg.Dense(1, seed=0)  # 4 weights: 16 bytes a row
    never = lambda state: False  # noqa: E731 (a custom rule: the Python loop)
    fg.fit(model, x, y, stop=[MaxSteps(10), never], record_weights=True)  # warm-up (caches, imports)
    tracemalloc.start()
    try:
        r = fg.fit(model, x, y, optimizer=fg.SGD(1e-4), batch_size=2, seed=0, stop=[MaxSteps(steps), never],
                   record_weights=True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    h = r.history
    records = sum(a.nbytes for a in [h.loss, h.grad_norm, h.batches, h.weight_steps, *h.weights])
    assert r.steps == steps
    assert peak < 3 * records, (peak, records)


def test_a_compiled_step_that_cannot_be_allocated_says_how_big(monkeypatch):
    def no_memory(*args):
        raise MemoryError("std::bad_alloc")

    monkeypatch.setattr(_core, "NetF64", no_memory)
    x, y = plane(1000)
    model = two_layer()
    with pytest.raises(MemoryError, match=r"fit: could not allocate .* batches of 1000 rows .*about \d.* kB"):
        fg.fit(model, x, y)
    assert not model.built


def test_a_models_output_that_cannot_be_allocated_says_how_big(monkeypatch):
    def no_memory(*args):
        raise MemoryError("std::bad_alloc")

    model = two_layer().build(3)
    x, y = plane(1000)
    monkeypatch.setattr(_core, "dense_forward", no_memory)
    with pytest.raises(MemoryError, match=r"x: could not allocate the output of layer 0, \(1000, 4\) float64: 32 kB"):
        model(x)
    with pytest.raises(MemoryError, match=r"x: could not allocate the activations and gradients of 1000 samples"):
        fg.value_and_grad(model, x, y)


def test_a_layer_too_large_to_build_says_so():
    with pytest.raises(ValueError, match=r"units: 9223372036854775808 units on 3 inputs make a kernel of 2\.77e\+19"):
        fg.Dense(2**63).build(3)
    model = fg.Sequential([fg.Dense(3), fg.Dense(2**62)])
    with pytest.raises(ValueError, match=r"units: 4611686018427387904 units on 3 inputs"):
        model.build(3)
    assert not model.layers[0].built  # nothing was built: every size is checked first


def test_a_layer_whose_kernel_cannot_be_allocated_says_how_big_and_builds_nothing():
    model = fg.Sequential([fg.Dense(3), fg.Dense(2**44)], seed=0)  # 3 x 2**44 float64: 422 TB
    with pytest.raises(MemoryError, match=r"build: could not allocate the kernel \(3, 17592186044416\) .*422 TB"):
        model.build(3)
    assert not model.layers[0].built and not model.layers[1].built


# ---- 6. a stopping rule answers with a bool ------------------------------------------------------

@pytest.mark.parametrize("answer", ["no", float("nan"), 1, None, np.float64(1.0), [True]])
def test_a_rule_that_answers_something_else_than_a_bool_is_refused(answer):
    def my_rule(state):
        return answer

    x, y = plane()
    model = two_layer().build(3)
    before = model.get_weights()
    with pytest.raises(TypeError, match=rf"stop\[1\] \(my_rule\) returned {type(answer).__name__}; expected a bool"):
        fg.fit(model, x, y, stop=[MaxSteps(50), my_rule])
    assert_same_weights(model.get_weights(), before)  # put back: the run had updated them


def test_rules_may_answer_numpy_bools_and_callbacks_anything():
    x, y = plane()
    r = fg.fit(two_layer(), x, y, stop=[lambda s: np.bool_(s.step == 4), MaxSteps(50)],
               callbacks=[lambda s: "no"])
    assert r.steps == 4 and r.stopped_by == "<lambda>"
    r = fg.fit(two_layer(), x, y, stop=[lambda s: s.loss < np.inf, MaxSteps(50)])  # np.True_
    assert r.steps == 1


# ---- 7. clear messages --------------------------------------------------------------------------

def test_messages_name_the_argument():
    with pytest.raises(ValueError, match=r"learning_rate: expected a finite number > 0, got an int of 1329 bits"):
        fg.SGD(10**400)
    with pytest.raises(ValueError, match=r"tol: expected a finite number >= 0, got an int of"):
        fg.stop.LossBelow(10**400)
    for model in (fg.Dense(1), two_layer().build(3)):
        with pytest.raises(TypeError, match=r"weights: expected a list of arrays \(get_weights\(\) order\), got NoneType"):
            model.set_weights(None)
    x, y = plane(1)
    with pytest.raises(ValueError, match=r"x: expected a 2-D array \(samples, features\), got a 0-d array"):
        fg.fit(fg.Dense(1), np.float64(3.0), y)
    with pytest.raises(ValueError, match=r"y: expected a 1-D or 2-D array \(samples, outputs\), got a 0-d array"):
        fg.fit(fg.Dense(1), x, 2.0)
    with pytest.raises(ValueError, match=r"y: expected a 1-D or 2-D array \(samples, outputs\), got a 0-d array"):
        fg.value_and_grad(fg.Dense(1), x, np.float32(2.0))


# ---- 8. a Ctrl-C in fit's clean-up does not leave the model marked ----------------------------------

def test_a_ctrl_c_in_fits_clean_up_leaves_no_mark_behind(monkeypatch):
    # a KeyboardInterrupt can land in the finally that takes fit's mark off the model; the mark,
    # left behind, refused every later fit of that model from this thread
    x, y = plane()
    model = two_layer()
    unmark = _run.unmark

    def interrupted(layers, owner):
        monkeypatch.setattr(_run, "unmark", unmark)
        raise KeyboardInterrupt

    monkeypatch.setattr(_run, "unmark", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fg.fit(model, x, y, stop=MaxSteps(3))
    assert "_fit_owner" in model.layers[0].__dict__  # left behind
    assert fg.fit(model, x, y, stop=MaxSteps(3)).steps == 3
    model.set_weights(model.get_weights())
    # a fit that is still running is not taken over: a callback's fit of its own model is refused
    with pytest.raises(RuntimeError, match="model: the fit this callback or rule runs in is training this model"):
        fg.fit(model, x, y, stop=MaxSteps(3), callbacks=[lambda s: fg.fit(model, x, y, stop=MaxSteps(1))])
