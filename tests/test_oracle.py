"""fastgrad's loss and every gradient against TensorFlow's GradientTape, at the same weights.

Error per tensor: max |ours - TF| / max |TF|.  Random shapes: batch 1..256, inputs 1..300,
units 1..300, 1 to 4 layers, ReLU and linear, float64 and float32 (fixed seeds: the cases are
the same in every run).
"""

from __future__ import annotations

import numpy as np
import pytest

import fastgrad as fg
from fastgrad.checks import relative_error as rel_err  # what `fastgrad check` measures too

TOL = {"float64": 1e-12, "float32": 1e-6}  # issue 2: relative to max |TF| per tensor
N_CASES = 24


def random_case(seed: int, dtype: str):
    rng = np.random.default_rng(seed)
    batch = int(rng.integers(1, 257))
    inputs = int(rng.integers(1, 301))
    depth = int(rng.integers(1, 5))
    layers = [
        fg.Dense(int(rng.integers(1, 301)), activation=str(rng.choice(["linear", "relu"])),
                 use_bias=bool(rng.random() < 0.8), dtype=dtype)
        for _ in range(depth)
    ]
    model = fg.Sequential(layers, seed=seed)
    model.build(inputs)
    # random biases too, so that the bias path is exercised away from zero
    model.set_weights([w if w.ndim == 2 else rng.normal(scale=0.1, size=w.shape) for w in model.get_weights()])
    x = rng.normal(size=(batch, inputs))
    y = rng.normal(size=(batch, layers[-1].units))
    return model, x, y


@pytest.mark.oracle
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("seed", range(N_CASES))
def test_value_and_grad_matches_tensorflow(tf, report, seed, dtype):
    model, x, y = random_case(seed, dtype)
    loss, grads = fg.value_and_grad(model, x, y)
    tf_loss, tf_grads = fg.oracle.value_and_grad(model, x, y)
    assert len(grads) == len(tf_grads) == len(model.get_weights())
    err = rel_err(np.array(loss), np.array(tf_loss))
    report.add(f"TF oracle {dtype}: loss", err, TOL[dtype])
    assert err <= TOL[dtype]
    names = [n for layer in model.layers for n in (["kernel", "bias"] if layer.use_bias else ["kernel"])]
    for g, t, w, name in zip(grads, tf_grads, model.get_weights(), names):
        assert g.shape == t.shape == w.shape
        assert g.dtype == np.dtype(dtype)
        e = rel_err(g, t)
        report.add(f"TF oracle {dtype}: d{name}", e, TOL[dtype])
        assert e <= TOL[dtype], f"d{name}: {e:.3e} > {TOL[dtype]:.0e}"


@pytest.mark.oracle
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_forward_matches_tensorflow(tf, report, dtype):
    model, x, _ = random_case(1000, dtype)
    ours = model(x)
    a = tf.constant(x.astype(dtype))
    for layer in model.layers:
        a = tf.matmul(a, layer.kernel)
        if layer.use_bias:
            a = a + layer.bias
        if layer.activation == "relu":
            a = tf.nn.relu(a)
    e = rel_err(ours, a.numpy())
    report.add(f"TF oracle {dtype}: forward", e, TOL[dtype])
    assert e <= TOL[dtype]


@pytest.mark.oracle
def test_relu_derivative_at_zero_is_zero_like_tensorflow(tf):
    # Z exactly 0 for every sample: TF's ReLU gradient there is 0, so is ours
    layer = fg.Dense(2, activation="relu", dtype="float64")
    layer.set_weights([np.array([[1.0, -1.0]]), np.zeros(2)])
    x = np.zeros((3, 1))
    y = np.ones((3, 2))
    loss, (dk, db) = fg.value_and_grad(layer, x, y)
    tf_loss, (tdk, tdb) = fg.oracle.value_and_grad(layer, x, y)
    assert loss == tf_loss
    np.testing.assert_array_equal(db, tdb)
    np.testing.assert_array_equal(db, np.zeros(2))
    np.testing.assert_array_equal(dk, tdk)


def test_oracle_without_tensorflow_names_the_extra(monkeypatch):
    import builtins
    import importlib

    real_import = builtins.__import__

    def no_tf(name, *args, **kwargs):
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ImportError("No module named 'tensorflow'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tf)
    oracle = importlib.import_module("fastgrad.oracle")
    layer = fg.Dense(1)
    with pytest.raises(ImportError, match=r"pip install 'fastgrad\[tf\]'"):
        oracle.value_and_grad(layer, np.ones((2, 3)), np.ones(2))
    assert oracle.available() is False


@pytest.mark.oracle
def test_replay_needs_keras_3(tf, monkeypatch):
    # replay runs Keras 3's optimizers; TensorFlow before 2.16 brings Keras 2, whose are other code
    import keras

    x = np.ones((4, 2))
    r = fg.fit(fg.Dense(1), x, np.ones(4), stop=fg.stop.MaxSteps(2))
    monkeypatch.setattr(keras, "__version__", "2.15.0")
    with pytest.raises(ImportError, match=r"Keras 3 .*found Keras 2\.15\.0.*pip install 'fastgrad\[tf\]'"):
        fg.oracle.replay(r, x, np.ones(4))
