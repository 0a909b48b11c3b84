"""fit(): the loops, the stopping rules, the history, divergence, Ctrl-C and bad input."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

import fastgrad as fg
from fastgrad import _batches, _core
from fastgrad import stop


def plane(n=40, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    return x, x @ np.array([3.0, 2.0, -7.0]) + 5.0


def two_layer(seed=0, dtype="float32"):
    return fg.Sequential([fg.Dense(5, "relu", dtype=dtype), fg.Dense(1, dtype=dtype)], seed=seed)


def same_bits(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def one_layer(seed=0, dtype="float32", relu=False):
    return fg.Sequential([fg.Dense(1, "relu" if relu else "linear", dtype=dtype)], seed=seed)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("batch_size, sampling", [(None, "random"), (1, "random"), (4, "random"), (4, "shuffle")])
@pytest.mark.parametrize("make", [two_layer, one_layer, lambda s, d: one_layer(s, d, relu=True)],
                         ids=["two-layer", "one-layer", "one-layer-relu"])
def test_history_is_what_value_and_grad_and_sgd_give(dtype, batch_size, sampling, make):
    # every recorded step is: the batch's loss at the previous weights, then w - lr * grad, exactly
    x, y = plane()
    model = make(1, dtype)
    lr = 0.01
    r = fg.fit(model, x, y, optimizer=fg.SGD(lr), batch_size=batch_size, sampling=sampling,
               stop=stop.MaxSteps(25), seed=3, record_weights=True)
    assert r.steps == 25 and r.stopped_by == "max_steps"
    assert len(r.history.loss) == len(r.history.grad_norm) == 25
    probe = make(0, dtype).build(3)
    for t in range(r.steps):
        w_t = [w[t] for w in r.history.weights]
        probe.set_weights(w_t)
        idx = slice(None) if batch_size is None else r.history.batches[t]
        loss, grads = fg.value_and_grad(probe, x[idx], y[idx])
        assert r.history.loss[t] == loss
        norm = np.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads))
        assert r.history.grad_norm[t] == pytest.approx(norm, rel=1e-12)
        for p, g in enumerate(grads):
            expect = w_t[p].copy()
            fg.ops.sgd_update(expect, g, lr)
            assert same_bits(r.history.weights[p][t + 1], expect)
    for p, w in enumerate(model.get_weights()):
        assert same_bits(r.history.weights[p][-1], w)
    probe.set_weights(model.get_weights())
    assert r.final_loss == fg.value_and_grad(probe, x, y)[0]


def test_same_seed_same_trajectory_bit_for_bit():
    x, y = plane()
    runs = []
    for _ in range(2):
        model = two_layer(7)
        r = fg.fit(model, x, y, optimizer=fg.SGD(0.01), batch_size=3, stop=stop.MaxSteps(200), seed=11,
                   record_weights=True)
        runs.append(r)
    a, b = runs
    assert same_bits(a.history.loss, b.history.loss)
    assert same_bits(a.history.batches, b.history.batches)
    for u, v in zip(a.history.weights, b.history.weights):
        assert same_bits(u, v)
    model = two_layer(7)
    c = fg.fit(model, x, y, optimizer=fg.SGD(0.01), batch_size=3, stop=stop.MaxSteps(200), seed=12)
    assert not np.array_equal(a.history.batches, c.history.batches)


def test_seed_none_is_recorded_and_reproduces():
    x, y = plane()
    r1 = fg.fit(two_layer(0), x, y, batch_size=2, stop=stop.MaxSteps(20))
    r2 = fg.fit(two_layer(0), x, y, batch_size=2, stop=stop.MaxSteps(20), seed=r1.seed)
    assert isinstance(r1.seed, int)
    assert same_bits(r1.history.batches, r2.history.batches) and same_bits(r1.history.loss, r2.history.loss)


SEEDS_TO_CHECK = [0, 1, 2, 30, 42, 12345, 2**31 - 1, 2**32 - 1, 2**32, 2**32 + 1, 2**48 + 7, 2**63, 2**64 - 1]


@pytest.mark.parametrize("seed", SEEDS_TO_CHECK + list(np.random.default_rng(0).integers(0, 2**63, 20)))
def test_the_cpp_seed_state_is_numpys_seed_sequence(seed):
    # BatchStream seeds its generator in C++; the contract is NumPy's SeedSequence(seed)
    seed = int(seed)
    expect = tuple(int(v) for v in np.random.SeedSequence(seed).generate_state(4, dtype=np.uint64))
    assert _core.seed_state(seed) == expect


def test_seeds_past_64_bits_use_numpys_seed_sequence():
    big = 2**70 + 5
    a = _batches.BatchStream(n=50, batch_size=3, sampling="random", seed=big).next_chunk()
    state = np.random.SeedSequence(big).generate_state(4, dtype=np.uint64)
    s = _core.Sampler(state, 50, 3, False)
    b = np.empty_like(a)
    s.fill(b)
    assert np.array_equal(a, b)
    with pytest.raises(TypeError):
        _core.seed_state(-1)


def test_random_sampling_has_no_repeats_within_a_batch_and_covers_the_data():
    for k in (7, 1):
        stream = _batches.BatchStream(n=10, batch_size=k, sampling="random", seed=0)
        chunk = np.concatenate([stream.next_chunk() for _ in range(12)])
        rows = len(chunk)
        assert rows > 5000 and chunk.shape[1] == k and chunk.min() >= 0 and chunk.max() < 10
        assert all(len(set(row)) == k for row in chunk)
        counts = np.bincount(chunk.ravel(), minlength=10)
        p = k / 10  # each index is in a batch with probability k/10, independently per step
        sd = np.sqrt(rows * p * (1 - p)) if k < 10 else 1.0
        assert np.all(np.abs(counts - rows * p) < 5 * sd)  # 5 standard deviations
    big = _batches.BatchStream(n=300, batch_size=100, sampling="random", seed=1).next_chunk()  # Fisher-Yates path
    assert all(len(set(row)) == 100 for row in big) and big.max() < 300


def test_shuffle_walks_epochs_of_permutations():
    stream = _batches.BatchStream(n=10, batch_size=3, sampling="shuffle", seed=0)
    chunk = stream.next_chunk()
    e1, e2 = chunk[0:3], chunk[3:6]  # 10 // 3 batches an epoch; one sample left out per epoch
    for epoch in (e1, e2):
        assert len(set(epoch.ravel())) == 9
    assert not np.array_equal(e1, e2)


def test_full_batch_history_has_no_batches():
    x, y = plane()
    r = fg.fit(fg.Dense(1, seed=0), x, y, stop=stop.MaxSteps(3))
    assert r.history.batches is None and r.history.weights is None
    assert r.batch_size is None and r.sampling is None  # no batches were drawn, at random or not
    shuffled = fg.fit(fg.Dense(1, seed=0), x, y, batch_size=4, sampling="shuffle", stop=stop.MaxSteps(3))
    assert shuffled.batch_size == 4 and shuffled.sampling == "shuffle"


def test_record_every_k_steps_keeps_the_last():
    x, y = plane()
    r = fg.fit(fg.Dense(1, seed=0), x, y, optimizer=fg.SGD(0.1), stop=stop.MaxSteps(10), record_weights=4)
    assert r.history.weight_steps.tolist() == [0, 4, 8, 10]
    assert r.history.weights[0].shape == (4, 3, 1)


def test_fit_builds_an_unbuilt_model():
    x, y = plane()
    model = two_layer(0)
    assert not model.built
    fg.fit(model, x, y, stop=stop.MaxSteps(1))
    assert model.built and model.input_dim == 3


@pytest.mark.parametrize(
    "rule, name, fired",
    [
        (stop.LossBelow(1.0), "loss_below", lambda h, tol: h.loss[-1] <= tol),
        (stop.LossDelta(0.5), "loss_delta", lambda h, tol: abs(h.loss[-1] - h.loss[-2]) <= tol),
        (stop.WeightDelta(1e-3), "weight_delta", None),
        (stop.Plateau(1e-3, patience=5), "plateau", None),
    ],
)
def test_each_rule_stops_at_the_first_step_it_holds(rule, name, fired):
    x, y = plane()
    model = fg.Dense(1, seed=0)
    r = fg.fit(model, x, y, optimizer=fg.SGD(0.05), batch_size=2, stop=[rule, stop.MaxSteps(5000)], seed=1,
               record_weights=True)
    assert r.stopped_by == name
    h = r.history
    if name == "loss_below":
        assert h.loss[-1] <= rule.tol and np.all(h.loss[:-1] > rule.tol)
    elif name == "loss_delta":
        d = np.abs(np.diff(h.loss))
        assert d[-1] <= rule.tol and np.all(d[:-1] > rule.tol)
    elif name == "weight_delta":
        deltas = np.max([np.abs(np.diff(w, axis=0)).reshape(r.steps, -1).max(axis=1) for w in h.weights], axis=0)
        assert deltas[-1] <= rule.tol and np.all(deltas[:-1] > rule.tol)
    else:
        best = np.minimum.accumulate(h.loss)
        last_improvement = max(t for t in range(r.steps) if t == 0 or h.loss[t] < best[t - 1] - rule.tol)
        assert r.steps - 1 - last_improvement == rule.patience


def test_max_steps_default_applies_when_no_max_steps_given():
    x, y = plane()
    r = fg.fit(fg.Dense(1, seed=0), x, y, optimizer=fg.SGD(1e-9), stop=[stop.LossBelow(0.0)])
    assert r.stopped_by == "max_steps" and r.steps == fg.training.DEFAULT_MAX_STEPS


def test_custom_rules_and_callbacks():
    x, y = plane()
    seen = []

    def three_steps(state):
        return state.step == 3

    class Named:
        name = "my_rule"

        def __call__(self, state):
            return state.step == 2

    r = fg.fit(fg.Dense(1, seed=0), x, y, stop=[three_steps], callbacks=[seen.append])
    assert r.stopped_by == "three_steps" and r.steps == 3
    assert [s.step for s in seen] == [1, 2, 3]
    assert seen[0].prev_loss is None and seen[1].prev_loss == seen[0].loss
    assert fg.fit(fg.Dense(1, seed=0), x, y, stop=Named()).stopped_by == "my_rule"


def test_plateau_is_reset_between_runs():
    x, y = plane()
    rule = stop.Plateau(1e-3, patience=3)
    a = fg.fit(fg.Dense(1, seed=0), x, y, optimizer=fg.SGD(0.05), batch_size=2, stop=rule, seed=1)
    b = fg.fit(fg.Dense(1, seed=0), x, y, optimizer=fg.SGD(0.05), batch_size=2, stop=rule, seed=1)
    assert a.steps == b.steps


def test_overflow_in_the_forward_pass_diverges_at_step_1():
    # finite data, but a weight so large the ReLU output overflows in float32
    x = np.ones((4, 2))
    y = np.ones(4)
    model = two_layer(0)
    model.build(2)
    w = model.get_weights()
    w[0][:] = 3e38
    model.set_weights(w)
    with pytest.warns(fg.DivergenceWarning, match=r"diverged at step 1: the loss became (nan|inf)"):
        r = fg.fit(model, x, y, stop=stop.MaxSteps(5))
    assert r.stopped_by == "diverged" and r.steps == 1


def test_ctrl_c_returns_the_partial_result():
    x, y = plane()
    before = signal.getsignal(signal.SIGINT)

    def interrupt_at_5(state):
        if state.step == 5:
            os.kill(os.getpid(), signal.SIGINT)

    model = fg.Dense(1, seed=0)
    r = fg.fit(model, x, y, stop=stop.MaxSteps(1000), callbacks=[interrupt_at_5], record_weights=True)
    assert r.stopped_by == "interrupted" and r.steps == 5
    assert len(r.history.loss) == 5 and r.history.weights[0].shape[0] == 6
    assert same_bits(r.history.weights[0][-1], model.kernel)
    assert signal.getsignal(signal.SIGINT) is before


# ---- bad input: a clear error naming the argument, and the weights unchanged ----------------
X, Y = plane(10)
BAD_FIT = [
    (dict(x=np.ones(10), y=Y), ValueError, r"x: expected a 2-D array"),
    (dict(x=X, y=Y[:9]), ValueError, r"y: expected 10 rows"),
    (dict(x=np.where(X > 1, np.nan, X), y=Y), ValueError, r"x: contains NaN or inf"),
    (dict(x=X, y=np.where(Y > 1, np.inf, Y)), ValueError, r"y: contains NaN or inf"),
    (dict(x=X[:0], y=Y[:0]), ValueError, r"x: expected at least one sample"),
    (dict(batch_size=0), ValueError, r"batch_size: expected a positive int"),
    (dict(batch_size=11), ValueError, r"batch_size: expected at most the 10 samples"),
    (dict(batch_size=2.0), TypeError, r"batch_size: expected a positive int"),
    (dict(optimizer="sgd"), TypeError, r"optimizer: expected fastgrad.SGD"),
    (dict(sampling="cyclic"), ValueError, r"sampling: expected one of"),
    (dict(stop=[stop.MaxSteps(3), "loss"]), TypeError, r"stop\[1\]: expected a stopping rule"),
    (dict(stop=5), TypeError, r"stop: expected a stopping rule or a list"),
    (dict(record_weights=-1), ValueError, r"record_weights: expected a positive int"),
    (dict(on_divergence="ignore"), ValueError, r"on_divergence: expected 'warn' or 'raise'"),
    (dict(seed=-3), ValueError, r"seed: expected a non-negative int or None, got -3"),
    (dict(seed=np.int64(-3)), ValueError, r"seed: expected a non-negative int or None"),
    (dict(seed=2.0), TypeError, r"seed: expected a non-negative int or None"),
    (dict(x=np.ones((10, 4))), ValueError, r"x: the model is built for inputs of width 3"),
    (dict(callbacks=[1]), TypeError, r"callbacks\[0\]: expected a callable"),
]


@pytest.mark.parametrize("kwargs, exc, msg", BAD_FIT)
def test_fit_rejects_bad_input_and_changes_nothing(kwargs, exc, msg):
    model = fg.Dense(1, seed=0).build(3)
    before = model.get_weights()
    args = dict(x=X, y=Y, stop=stop.MaxSteps(3))
    args.update(kwargs)
    with pytest.raises(exc, match=msg):
        fg.fit(model, **args)
    for a, b in zip(model.get_weights(), before):
        assert same_bits(a, b)


@pytest.mark.parametrize(
    "make, exc, msg",
    [
        (lambda: fg.SGD(0), ValueError, r"learning_rate: expected a finite number > 0"),
        (lambda: fg.SGD(-0.1), ValueError, r"learning_rate: expected a finite number > 0"),
        (lambda: fg.SGD(float("nan")), ValueError, r"learning_rate: expected a finite number > 0"),
        (lambda: fg.SGD("0.1"), TypeError, r"learning_rate: expected a positive number"),
        (lambda: stop.WeightDelta(-1), ValueError, r"tol: expected a finite number >= 0"),
        (lambda: stop.Plateau(0.1, patience=0), ValueError, r"patience: expected a positive int"),
        (lambda: stop.MaxSteps(0), ValueError, r"n: expected a positive int"),
    ],
)
def test_optimizer_and_rules_reject_bad_arguments(make, exc, msg):
    with pytest.raises(exc, match=msg):
        make()


@pytest.mark.parametrize(
    "args, exc, msg",
    [
        ((10, 2, "random", -1), ValueError, r"seed: expected a non-negative int, got -1"),
        ((10, 2, "random", np.int64(-2)), ValueError, r"seed: expected a non-negative int"),
        ((10, 2, "random", 1.5), TypeError, r"seed: expected a non-negative int"),
        ((10, 2, "random", None), TypeError, r"seed: expected a non-negative int, got None"),
        ((10.0, 2, "random", 0), TypeError, r"n: expected a positive int"),
        ((0, 1, "random", 0), ValueError, r"n: expected a positive int"),
        ((10, 0, "random", 0), ValueError, r"batch_size: expected a positive int"),
        ((10, 11, "random", 0), ValueError, r"batch_size: expected at most n = 10, got 11"),
        ((10, 2, "bogus", 0), ValueError, r"sampling: expected one of"),
    ],
)
def test_batch_stream_rejects_bad_arguments(args, exc, msg):
    with pytest.raises(exc, match=msg):
        _batches.BatchStream(*args)


def test_batch_stream_takes_numpy_ints_and_big_seeds():
    a = _batches.BatchStream(np.int64(10), np.int32(3), "shuffle", np.uint64(7)).next_chunk()
    b = _batches.BatchStream(10, 3, "shuffle", 7).next_chunk()
    np.testing.assert_array_equal(a, b)
    big = _batches.BatchStream(10, 3, "random", 2**70).next_chunk()  # beyond 64 bits: NumPy's SeedSequence
    assert big.shape == (64, 3) and big.min() >= 0 and big.max() < 10


def test_a_failed_fit_does_not_build_the_model():
    model = fg.Sequential([fg.Dense(2, "relu"), fg.Dense(1)], seed=0)
    with pytest.raises(ValueError, match="batch_size: expected at most"):
        fg.fit(model, X, Y, batch_size=50)
    with pytest.raises(ValueError, match="loop: expected"):
        fg.fit(model, X, Y, loop="gpu")
    assert not model.built


def test_fit_rejects_a_non_model():
    with pytest.raises(TypeError, match="model: expected a fastgrad.Sequential or fastgrad.Dense"):
        fg.fit([fg.Dense(1)], X, Y)


def test_minmax():
    a = np.array([[1.0, 10.0], [3.0, 30.0], [2.0, 20.0]])
    np.testing.assert_array_equal(fg.minmax(a), [[0, 0], [1, 1], [0.5, 0.5]])
    np.testing.assert_array_equal(fg.minmax([1, 2, 3]), [0, 0.5, 1])
    with pytest.raises(ValueError, match=r"a: column\(s\) \[1\] constant"):
        fg.minmax([[1.0, 2.0], [3.0, 2.0]])
    with pytest.raises(ValueError, match=r"a: constant: max == min"):
        fg.minmax([2.0, 2.0])
    with pytest.raises(ValueError, match=r"a: column\(s\) \[1\] range max - min overflows float64"):
        fg.minmax([[0.0, -1e308], [1.0, 1e308]])
    with pytest.raises(ValueError, match=r"a: range max - min overflows float32"):
        fg.minmax(np.array([-3e38, 0.0, 3e38], np.float32))
    with pytest.raises(ValueError, match="a: contains NaN or inf"):
        fg.minmax([1.0, np.nan])
    with pytest.raises(ValueError, match="a: expected a non-empty array"):
        fg.minmax([])


def test_a_kept_net_gives_the_same_run_and_follows_the_live_weights():
    # fit keeps the compiled step of a small model between calls (_run._net_for): a second
    # fit from the same weights, set in place (the kept Net) or by set_weights (a new one), is
    # the same run, bit for bit
    x, y = plane()
    m = one_layer(3, "float32")
    m.build(3)
    w0 = m.get_weights()
    kw = dict(optimizer=fg.SGD(0.05), batch_size=2, stop=stop.MaxSteps(50), seed=9)
    a = fg.fit(m, x, y, **kw)
    assert "_fit_net" in m.layers[0].__dict__
    for live, w in zip(m.layers[0]._params(), w0):
        live[...] = w  # in place: the kept Net's arrays
    b = fg.fit(m, x, y, **kw)
    kept = m.layers[0]._fit_net[2]
    m.set_weights(w0)  # new arrays: the kept Net is pointed at them
    c = fg.fit(m, x, y, **kw)
    assert m.layers[0]._fit_net[2] is kept
    for r in (b, c):
        assert same_bits(a.history.loss, r.history.loss)
        for u, v in zip(a.final_weights, r.final_weights):
            assert same_bits(u, v)
    # the run trained the new arrays, not the ones set_weights replaced
    for live, v in zip(m.layers[0]._params(), c.final_weights):
        assert same_bits(live, v)
    # another batch size is another Net
    fg.fit(m, x, y, **{**kw, "batch_size": 3})
    assert m.layers[0]._fit_net[2] is not kept
    # the kept Net is not part of the model: copies and pickles leave it out, and still train
    import copy
    import pickle

    for twin in (copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
        assert "_fit_net" not in twin.layers[0].__dict__
        assert fg.fit(twin, x, y, **kw).steps == 50
