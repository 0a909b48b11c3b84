"""Keras models in and out (fastgrad.keras_io): from_keras predicts as Keras's predict, to_keras
holds the same bits, and what fastgrad has no layer for is refused by name.

Error: max |fastgrad - Keras| / max |Keras| over the predictions.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastgrad as fg
from fastgrad.checks import relative_error as rel_err
from fastgrad.keras_io import from_keras, to_keras

TOL = {"float32": 1e-6, "float64": 1e-12}  # issue 17 (float32); float64 as the oracle tests

pytestmark = pytest.mark.oracle


@pytest.fixture(scope="module")
def keras(tf):  # noqa: ARG001 (tf: TensorFlow imported quietly, or the test skipped)
    import keras

    return keras


def _keras_out(km, x):
    """Keras's predictions: ``predict`` for float32; for float64 the model's call, because Keras's
    ``predict`` first converts float inputs to ``keras.config.floatx()`` (float32)."""
    if x.dtype == np.float32:
        return km.predict(x, verbose=0)
    return np.asarray(km(x))


def _x(dtype, width=6, n=64):
    return np.random.default_rng(0).normal(size=(n, width)).astype(dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_from_keras_sequential_predicts_as_keras(keras, report, dtype):
    km = keras.Sequential([keras.Input((6,), dtype=dtype),
                           keras.layers.Dense(16, activation="relu", dtype=dtype),
                           keras.layers.Dense(8, activation="relu", use_bias=False, dtype=dtype),
                           keras.layers.Dense(2, dtype=dtype)])
    m = from_keras(km)
    assert isinstance(m, fg.Sequential) and m.dtype == np.dtype(dtype)
    assert [(lay.units, lay.activation, lay.use_bias) for lay in m.layers] == [
        (16, "relu", True), (8, "relu", False), (2, "linear", True)]
    for a, b in zip(m.get_weights(), km.get_weights()):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    x = _x(dtype)
    e = rel_err(m.predict(x), _keras_out(km, x))
    report.add(f"from_keras {dtype}: predictions", e, TOL[dtype])
    assert e <= TOL[dtype]


def test_from_keras_functional_chain_and_single_dense(keras, report):
    inp = keras.Input((6,))
    h = keras.layers.Dense(5, activation="relu")(inp)
    km = keras.Model(inp, keras.layers.Dense(1)(h))
    m = from_keras(km)
    x = _x("float32")
    e = rel_err(m(x), km.predict(x, verbose=0))
    report.add("from_keras float32: predictions", e, TOL["float32"])
    assert e <= TOL["float32"]
    layer = km.layers[1]
    one = from_keras(layer)
    assert len(one.layers) == 1 and np.array_equal(one.layers[0].kernel, layer.get_weights()[0])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_to_keras_same_bits(keras, dtype):
    m = fg.Sequential([fg.Dense(7, "relu", dtype=dtype), fg.Dense(3, use_bias=False, dtype=dtype),
                       fg.Dense(1, dtype=dtype)], seed=3)
    m.build(6)
    km = to_keras(m)
    assert isinstance(km, keras.Sequential)
    assert [lay.get_config()["activation"] for lay in km.layers] == ["relu", "linear", "linear"]
    kw, fw = km.get_weights(), m.get_weights()
    assert len(kw) == len(fw) == 5
    for a, b in zip(kw, fw):
        assert a.dtype == b.dtype == np.dtype(dtype) and a.shape == b.shape
        assert a.tobytes() == b.tobytes()
    x = _x(dtype)
    assert rel_err(m(x), _keras_out(km, x)) <= TOL[dtype]
    back = from_keras(km)  # the round trip gives the same bits again
    assert all(a.tobytes() == b.tobytes() for a, b in zip(back.get_weights(), fw))
    single = to_keras(m.layers[0])
    assert single.get_weights()[0].tobytes() == fw[0].tobytes()


def test_bad_layers_are_refused_by_name(keras):
    cases = [
        (keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="tanh", name="squash")]),
         "'squash'.*activation 'tanh'"),
        (keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dropout(0.5, name="drop")]),
         "'drop' \\(Dropout\\) is not a Dense layer"),
        (keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, dtype="mixed_float16", name="half")]),
         "'half'.*dtype policy 'mixed_float16'"),
        (keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, dtype="float32"),
                           keras.layers.Dense(1, dtype="float64")]), "mix dtypes"),
    ]
    for model, match in cases:
        with pytest.raises(ValueError, match=match):
            from_keras(model)
    inp = keras.Input((4,))
    d = keras.layers.Dense(4, name="shared")
    with pytest.raises(ValueError, match="'shared'"):
        from_keras(keras.Model(inp, d(d(inp))))  # one layer applied twice: not a plain chain
    with pytest.raises(TypeError, match="from_keras: expected"):
        from_keras("model")
    with pytest.raises(ValueError, match="not built"):
        to_keras(fg.Sequential([fg.Dense(2)]))
    with pytest.raises(TypeError, match="to_keras: expected"):
        to_keras(object())
