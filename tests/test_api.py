"""The public API: E1 by hand with value_and_grad, layers and models, and bad input."""

from __future__ import annotations

import numpy as np
import pytest

import fastgrad as fg
from fastgrad import ops


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_e1_by_hand_with_value_and_grad(dtype):
    # the walkthrough's first loop: w <- w - 0.1 * dL/dw until |w_t - w_{t-1}| <= 0.1
    layer = fg.Dense(1, use_bias=False, dtype=dtype)
    layer.set_weights([np.array([[2.0]])])
    x, y = np.array([[1.0], [2.0]]), np.array([1.0, 2.0])
    weights, losses = [], []
    while True:
        weights.append(float(layer.kernel[0, 0]))
        loss, (dk,) = fg.value_and_grad(layer, x, y)
        losses.append(loss)
        if len(weights) > 1 and abs(weights[-1] - weights[-2]) <= 0.1:
            break
        ops.sgd_update(layer.kernel, dk, 0.1)
    assert weights == [2.0, 1.5, 1.25, 1.125, 1.0625]
    assert losses == [2.5, 0.625, 0.15625, 0.0390625, 0.009765625]


def test_model_call_e3():
    layer = fg.Dense(1, use_bias=False)
    layer.set_weights([[[2.0]]])
    out = layer([[3.0]])
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[6.0]])


def test_layer_builds_on_first_call_and_sequential_chains():
    model = fg.Sequential([fg.Dense(4, "relu"), fg.Dense(2)], seed=3)
    assert not model.built
    out = model(np.ones((5, 7)))
    assert out.shape == (5, 2)
    assert [w.shape for w in model.get_weights()] == [(7, 4), (4,), (4, 2), (2,)]
    h = np.maximum(np.ones((5, 7), np.float32) @ model.layers[0].kernel + model.layers[0].bias, 0)
    np.testing.assert_allclose(out, h @ model.layers[1].kernel + model.layers[1].bias, rtol=1e-6)


def test_get_weights_are_copies_and_set_weights_copies():
    layer = fg.Dense(2, seed=0).build(3)
    w = layer.get_weights()
    w[0][:] = 99
    assert not np.any(layer.kernel == 99)
    new = [np.ones((3, 2)), np.zeros(2)]
    layer.set_weights(new)
    new[0][:] = 5
    np.testing.assert_array_equal(layer.kernel, np.ones((3, 2)))
    assert layer.kernel.dtype == np.float32 and layer.kernel.flags.c_contiguous


def _unchanged(model, before):
    after = model.get_weights()
    assert len(after) == len(before)
    for a, b in zip(after, before):
        np.testing.assert_array_equal(a, b)


@pytest.fixture
def model():
    return fg.Sequential([fg.Dense(3, "relu"), fg.Dense(1)], seed=0).build(2)


BAD_VALUE_AND_GRAD = [
    (np.ones(4), np.ones(4), ValueError, r"x: expected a 2-D array"),
    (np.ones((4, 2, 1)), np.ones(4), ValueError, r"x: expected a 2-D array"),
    (np.ones((4, 3)), np.ones(4), ValueError, r"x: the model is built for inputs of width 2"),
    (np.ones((4, 2)), np.ones(5), ValueError, r"y: expected 4 rows"),
    (np.ones((4, 2)), np.ones((4, 2)), ValueError, r"y: expected 1 output column"),
    (np.zeros((0, 2)), np.zeros(0), ValueError, r"x: expected at least one sample"),
    (np.array([[1.0, np.nan]] * 4), np.ones(4), ValueError, r"x: contains NaN or inf"),
    (np.ones((4, 2)), np.array([1.0, 2.0, np.inf, 0.0]), ValueError, r"y: contains NaN or inf"),
    (np.array([["a", "b"]] * 4), np.ones(4), TypeError, r"x: expected a numeric array"),
    ("not an array", np.ones(4), TypeError, r"x: expected a numeric array"),
]


@pytest.mark.parametrize("x, y, exc, msg", BAD_VALUE_AND_GRAD)
def test_value_and_grad_rejects_bad_input(model, x, y, exc, msg):
    before = model.get_weights()
    with pytest.raises(exc, match=msg):
        fg.value_and_grad(model, x, y)
    _unchanged(model, before)


def test_value_and_grad_rejects_a_non_model():
    with pytest.raises(TypeError, match="model: expected a fastgrad.Sequential or fastgrad.Dense"):
        fg.value_and_grad(object(), np.ones((2, 2)), np.ones(2))


BAD_WEIGHTS = [
    ([np.ones((2, 3)), np.zeros(3), np.ones((3, 1))], ValueError, r"weights: expected 4 arrays"),
    ([np.ones((3, 3)), np.zeros(3), np.ones((3, 1)), np.zeros(1)], ValueError, r"layer 0 kernel\]: expected shape \(2, 3\)"),
    ([np.ones((2, 3)), np.zeros(4), np.ones((3, 1)), np.zeros(1)], ValueError, r"layer 0 bias\]: expected shape \(3,\)"),
    ([np.ones((2, 3)), np.zeros(3), np.ones((3, 2)), np.zeros(1)], ValueError, r"layer 1 kernel\]: expected shape \(3, 1\)"),
    ([np.ones((2, 3)), np.zeros(3), np.full((3, 1), np.nan), np.zeros(1)], ValueError, r"layer 1 kernel\]: contains NaN"),
    ([np.ones((2, 3)), np.zeros(3), np.ones((3, 1)), np.array(["x"])], TypeError, r"layer 1 bias\]: expected a numeric"),
    ([np.ones(6), np.zeros(3), np.ones((3, 1)), np.zeros(1)], ValueError, r"layer 0 kernel\]: expected shape"),
]


@pytest.mark.parametrize("weights, exc, msg", BAD_WEIGHTS)
def test_set_weights_rejects_bad_weights_and_changes_nothing(model, weights, exc, msg):
    before = model.get_weights()
    with pytest.raises(exc, match=msg):
        model.set_weights(weights)
    _unchanged(model, before)


def test_layer_call_rejects_bad_input():
    layer = fg.Dense(2, seed=0).build(3)
    with pytest.raises(ValueError, match=r"x: expected 3 columns to match kernel \(3, 2\), got shape \(4, 2\)"):
        layer(np.ones((4, 2)))
    with pytest.raises(ValueError, match=r"x: expected a 2-D array"):
        layer(np.ones(3))
    with pytest.raises(ValueError, match=r"x: contains NaN or inf"):
        layer(np.array([[1.0, np.inf, 0.0]]))
    with pytest.raises(TypeError, match=r"x: expected a numeric array"):
        layer([["a", "b", "c"]])


@pytest.mark.parametrize(
    "kwargs, exc, msg",
    [
        ({"units": 0}, ValueError, "units: expected a positive int"),
        ({"units": 2.5}, TypeError, "units: expected a positive int"),
        ({"units": 1, "activation": "tanh"}, ValueError, "activation: expected one of"),
        ({"units": 1, "dtype": "float16"}, ValueError, "dtype: expected 'float32' or 'float64'"),
        ({"units": 1, "use_bias": "yes"}, TypeError, "use_bias: expected True or False"),
        ({"units": 1, "seed": 1.5}, TypeError, "seed: expected a non-negative int or None"),
        ({"units": 1, "seed": -1}, ValueError, "seed: expected a non-negative int or None, got -1"),
    ],
)
def test_dense_rejects_bad_arguments(kwargs, exc, msg):
    with pytest.raises(exc, match=msg):
        fg.Dense(**kwargs)


def test_sequential_rejects_bad_layers():
    with pytest.raises(ValueError, match="layers: expected at least one"):
        fg.Sequential([])
    with pytest.raises(TypeError, match=r"layers\[1\]: expected a fastgrad.Dense"):
        fg.Sequential([fg.Dense(1), "relu"])
    with pytest.raises(ValueError, match="layers: expected one dtype"):
        fg.Sequential([fg.Dense(2), fg.Dense(1, dtype="float64")])
    with pytest.raises(ValueError, match="seed: expected a non-negative int or None, got -1"):
        fg.Sequential([fg.Dense(1)], seed=-1)
    with pytest.raises(TypeError, match="seed: expected a non-negative int or None"):
        fg.Sequential([fg.Dense(1)], seed="0")


def test_ops_reject_mismatched_shapes():
    with pytest.raises(ValueError, match=r"x: expected 3 columns"):
        ops.dense_forward(np.ones((2, 2)), np.ones((3, 1)))
    with pytest.raises(ValueError, match=r"bias: expected shape \(1,\)"):
        ops.dense_forward(np.ones((2, 3)), np.ones((3, 1)), np.ones(2))
    with pytest.raises(ValueError, match=r"target: expected the shape of pred"):
        ops.mse(np.ones((2, 1)), np.ones((3, 1)))
    with pytest.raises(ValueError, match=r"pred: expected at least one element"):
        ops.mse(np.ones((0, 1)), np.ones((0, 1)))
    with pytest.raises(ValueError, match=r"dy: expected shape \(2, 1\)"):
        ops.dense_backward(np.ones((2, 2)), np.ones((2, 3)), np.ones((3, 1)), np.ones((2, 1)))
    with pytest.raises(ValueError, match=r"w: expected a writeable C-contiguous"):
        ops.sgd_update(np.ones((3, 2), np.float32)[:, :1], np.ones((3, 1)), 0.1)
    with pytest.raises(TypeError, match=r"w: expected a float32 or float64"):
        ops.sgd_update(np.ones(3, np.int64), np.ones(3), 0.1)
    w = np.ones(3)
    for lr in ("0.1", None, True):
        with pytest.raises(TypeError, match=r"learning_rate: expected a real number"):
            ops.sgd_update(w, np.ones(3), lr)
    np.testing.assert_array_equal(w, np.ones(3))  # nothing was updated


def test_sgd_update_writes_into_the_array_it_was_given():
    w = np.ones(3, np.float32)
    ops.sgd_update(w, [1, 2, 3], 0.5)  # g converted, w updated in place (not a copy)
    np.testing.assert_array_equal(w, np.array([0.5, 0.0, -0.5], np.float32))


def test_version_is_the_pyproject_version():
    import importlib.metadata

    assert fg.__version__ == importlib.metadata.version("fastgrad")


# data(): arrays that need nothing take one compiled call (_core.fast_data); the result, and the
# error for bad data, must be those of the checks in Python
class _Sub(np.ndarray):
    pass


_R = np.random.default_rng(3)
_X, _Y = _R.normal(size=(7, 3)), _R.normal(size=7)
DATA_CASES = {
    "exact, y 1-D": (_X, _Y),
    "exact, y 2-D": (_X, _Y.reshape(-1, 1)),
    "other dtype": (_X.astype(np.float32), _Y),
    "ints": (np.arange(21).reshape(7, 3), np.arange(7)),
    "strided x": (np.asfortranarray(_X), _Y),
    "big-endian": (_X.astype(">f8"), _Y.astype(">f8")),
    "subclass": (_X.view(_Sub), _Y.view(_Sub)),
    "lists": (_X.tolist(), _Y.tolist()),
    "NaN in x": (np.where(_X > 1, np.nan, _X), _Y),
    "inf in y": (_X, np.where(_Y > 1, np.inf, _Y)),
    "y rows": (_X, _Y[:6]),
    "y outputs": (_X, np.ones((7, 2))),
    "x 1-D": (_Y, _Y),
    "x empty": (_X[:0], _Y[:0]),
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", list(DATA_CASES))
def test_data_fast_path_agrees_with_the_python_checks(case, dtype):
    from fastgrad import _validation

    x, y = DATA_CASES[case]
    dt = np.dtype(dtype)

    def run(fast):
        try:
            if fast:
                return _validation.data(x, y, dt, outputs=1)
            xs, ys = _validation.data(x, y, dt)  # no outputs: the Python checks only
            if ys.shape[1] != 1:
                raise ValueError(f"y: expected 1 output column(s) to match the model, got shape {ys.shape}")
            return xs, ys
        except (TypeError, ValueError) as e:
            return type(e), str(e)

    fast, slow = run(True), run(False)
    if isinstance(slow[0], type):
        assert fast == slow
    else:
        for a, b in zip(fast, slow):
            assert type(a) is np.ndarray and a.dtype == dt and a.flags.c_contiguous
            assert a.shape == b.shape and np.array_equal(a, b)
