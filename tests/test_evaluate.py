"""fastgrad.metrics.evaluate against scikit-learn's metrics running on the same predictions,
and its mse against the loss fit computes (value_and_grad), bit for bit."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

import fastgrad as fg
from fastgrad.metrics import evaluate

# evaluate's mae and r2 are computed in float64 from the model's predictions, as scikit-learn
# computes them from the same predictions in float64: the two differ by summation order only
TOL_F64 = 1e-12
# mse is the float64 sum rounded to the model's dtype (the loss fit reports)
TOL_MSE = {"float32": 2 ** -23, "float64": 1e-12}

KEYS = {"mse", "rmse", "mae", "r2"}


def _model(kind: str, dtype: str, inputs: int):
    """A built model of each shape evaluate meets: one layer, deeper, no bias, several outputs."""
    layers = {
        "dense1": [fg.Dense(1, dtype=dtype, seed=1)],
        "dense3": [fg.Dense(3, dtype=dtype, seed=2)],
        "nobias": [fg.Dense(2, use_bias=False, dtype=dtype, seed=3)],
        "relu-1": [fg.Dense(8, "relu", dtype=dtype), fg.Dense(1, dtype=dtype)],
        "relu-relu-2": [fg.Dense(6, "relu", dtype=dtype), fg.Dense(5, "relu", dtype=dtype), fg.Dense(2, dtype=dtype)],
    }[kind]
    model = layers[0] if len(layers) == 1 else fg.Sequential(layers, seed=4)
    model.build(inputs)
    # non-zero biases, so that they matter
    model.set_weights([w + 0.1 * (i + 1) if w.ndim == 1 else w for i, w in enumerate(model.get_weights())])
    return model


def _data(model, n: int = 60, inputs: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, inputs))
    # targets related to x (r2 well away from 0 for the trained model, negative for others)
    y = np.tanh(x @ rng.normal(size=(inputs, model.units))) * 3 + rng.normal(scale=0.2, size=(n, model.units))
    return x, y


MODELS = ["dense1", "dense3", "nobias", "relu-1", "relu-relu-2"]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", MODELS)
def test_metrics_match_scikit_learn(kind, dtype, report):
    model = _model(kind, dtype, 4)
    x, y = _data(model)
    got = evaluate(model, x, y)
    assert set(got) == KEYS and all(type(v) is float for v in got.values())

    pred = model(x).astype(np.float64)
    y_model = y.astype(dtype).astype(np.float64)  # y as the model sees it: in its dtype
    want = {
        "mse": mean_squared_error(y_model, pred),
        "mae": mean_absolute_error(y_model, pred),
        "r2": r2_score(y_model, pred),
    }
    for key, tol in (("mse", TOL_MSE[dtype]), ("mae", TOL_F64), ("r2", TOL_F64)):
        err = abs(got[key] - want[key]) / max(abs(want[key]), 1.0)
        report.add(f"evaluate vs scikit-learn {dtype}: {key}", err, tol)
        assert err <= tol, (key, got[key], want[key])
    assert got["rmse"] == math.sqrt(got["mse"])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", MODELS)
def test_mse_is_the_loss_fit_computes_bit_for_bit(kind, dtype):
    model = _model(kind, dtype, 4)
    x, y = _data(model, seed=5)
    assert evaluate(model, x, y)["mse"] == fg.value_and_grad(model, x, y)[0]


def test_a_trained_model_scores_as_scikit_learn_says():
    # E6's data: a linear model recovers it, so r2 is near 1 and agrees with scikit-learn's
    rng = np.random.default_rng(42)
    x = rng.normal(size=(100, 3))
    y = x @ np.array([3.0, 2.0, -7.0]) + 5
    model = fg.Dense(1, dtype="float64", seed=0)
    fg.fit(model, x, y, optimizer=fg.SGD(0.1), stop=[fg.stop.LossBelow(1e-8), fg.stop.MaxSteps(5000)], seed=0)
    got = evaluate(model, x, y)
    pred = model(x)[:, 0]
    assert got["r2"] > 0.999999
    assert abs(got["r2"] - r2_score(y, pred)) <= TOL_F64
    assert abs(got["mae"] - mean_absolute_error(y, pred)) <= TOL_F64 * max(got["mae"], 1.0)


def test_y_one_dimensional_or_one_column_gives_the_same():
    model = _model("relu-1", "float64", 4)
    x, y = _data(model)
    assert evaluate(model, x, y[:, 0]) == evaluate(model, x, y)


def test_inputs_are_converted_as_fit_converts_them():
    # ints, a non-contiguous x, lists: converted to the model's dtype, as fit does
    model = _model("dense1", "float32", 3)
    rng = np.random.default_rng(1)
    wide = rng.integers(-5, 5, size=(20, 6))
    x = wide[:, ::2]  # non-contiguous
    y = rng.integers(0, 10, size=20)
    want = evaluate(model, np.ascontiguousarray(x, dtype=np.float32), y.astype(np.float32))
    assert evaluate(model, x, y) == want
    assert evaluate(model, x.tolist(), y.tolist()) == want


# ---- R², its edge cases as scikit-learn defines them ----------------------------------------------

def _constant_model(values, dtype="float64", inputs=2):
    """A Dense that predicts ``values`` for every row (zero kernel, the values as bias)."""
    layer = fg.Dense(len(values), dtype=dtype)
    layer.set_weights([np.zeros((inputs, len(values))), np.asarray(values, dtype=float)])
    return layer


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_constant_y_predicted_exactly_scores_one(dtype):
    x = np.random.default_rng(0).normal(size=(7, 2))
    y = np.full(7, 2.0)
    got = evaluate(_constant_model([2.0], dtype), x, y)
    assert got["r2"] == 1.0 == r2_score(y, np.full(7, 2.0))
    assert got["mse"] == got["mae"] == 0.0


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_constant_y_predicted_otherwise_scores_zero(dtype):
    x = np.random.default_rng(0).normal(size=(7, 2))
    y = np.full(7, -2.0)
    got = evaluate(_constant_model([-1.5], dtype), x, y)
    assert got["r2"] == 0.0 == r2_score(y, np.full(7, -1.5))
    assert got["mse"] == 0.25 and got["mae"] == 0.5


def test_several_outputs_average_uniformly_with_a_constant_one():
    # output 0 constant and missed (0.0), output 1 constant and hit (1.0), output 2 varies
    rng = np.random.default_rng(3)
    x = rng.normal(size=(9, 2))
    y = np.column_stack([np.full(9, 4.0), np.full(9, 0.5), rng.normal(size=9)])
    model = _constant_model([3.0, 0.5, 0.25])
    got = evaluate(model, x, y)
    pred = model(x)
    per_output = r2_score(y, pred, multioutput="raw_values")
    assert per_output[0] == 0.0 and per_output[1] == 1.0
    assert abs(got["r2"] - r2_score(y, pred)) <= TOL_F64
    assert abs(got["r2"] - per_output.mean()) <= TOL_F64


def test_constant_y_whose_mean_rounds_is_still_constant():
    # three 0.1s average to 0.10000000000000002 in float64: scikit-learn then divides by that
    # rounding error (about -1.7e27); a constant column scores 0.0 here, as scikit-learn intends
    x = np.zeros((3, 2))
    y = np.full(3, 0.1)
    assert np.mean(y) != 0.1  # the premise
    assert evaluate(_constant_model([0.2]), x, y)["r2"] == 0.0
    assert evaluate(_constant_model([0.1]), x, y)["r2"] == 1.0


def test_perfect_predictions_score_one():
    model = _model("relu-relu-2", "float64", 4)
    x, _ = _data(model)
    got = evaluate(model, x, model(x))
    assert got == {"mse": 0.0, "rmse": 0.0, "mae": 0.0, "r2": 1.0}


def test_r2_is_nan_for_a_single_sample():
    # undefined with one sample: scikit-learn returns NaN (and warns); the errors are still defined
    got = evaluate(_constant_model([1.0]), np.zeros((1, 2)), [3.0])
    assert math.isnan(got["r2"])
    assert got["mse"] == 4.0 and got["rmse"] == 2.0 and got["mae"] == 2.0


def test_a_diverged_model_gets_non_finite_metrics_not_an_error():
    layer = fg.Dense(1, dtype="float32", seed=0)
    layer.build(2)
    layer.kernel[...] = np.inf  # as a diverged run leaves it (set_weights refuses non-finite)
    got = evaluate(layer, np.ones((4, 2)), np.arange(4.0))
    assert set(got) == KEYS and got["mse"] == math.inf and not math.isfinite(got["r2"])


# ---- bad input: the message names the argument; nothing changes ---------------------------------

@pytest.mark.parametrize("x, y, error, match", [
    (np.ones((5, 3)), np.ones(4), ValueError, r"^y: expected 5 rows"),
    (np.ones(5), np.ones(5), ValueError, r"^x: expected a 2-D array"),
    (np.ones((5, 3)), np.ones((5, 2)), ValueError, r"^y: expected 1 output column"),
    (np.ones((5, 3)), np.ones((5, 1, 1)), ValueError, r"^y: expected a 1-D or 2-D array"),
    (np.ones((5, 3)), [1, 2, np.nan, 4, 5], ValueError, r"^y: .*(finite|NaN)"),
    (np.full((5, 3), "a"), np.ones(5), TypeError, r"^x: expected a numeric array"),
    (np.ones((5, 4)), np.ones(5), ValueError, r"^x: the model is built for inputs of width 3"),
    (np.zeros((0, 3)), np.zeros(0), ValueError, r"^x: expected at least one sample"),
])
def test_bad_data_is_refused_naming_the_argument(x, y, error, match):
    model = _model("relu-1", "float32", 3)
    before = model.get_weights()
    with pytest.raises(error, match=match):
        evaluate(model, x, y)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_not_a_model_is_a_type_error():
    with pytest.raises(TypeError, match=r"^model: expected a fastgrad.Sequential or fastgrad.Dense"):
        evaluate(lambda x: x, np.ones((3, 1)), np.ones(3))


def test_bad_data_leaves_an_unbuilt_model_unbuilt():
    model = fg.Sequential([fg.Dense(3, "relu"), fg.Dense(1)], seed=0)
    with pytest.raises(ValueError, match="^y"):
        evaluate(model, np.ones((4, 2)), np.ones(3))
    assert not model.built


def test_an_unbuilt_model_is_built_from_x_as_a_call_builds_it():
    x, y = np.random.default_rng(2).normal(size=(10, 3)), np.arange(10.0)
    model = fg.Sequential([fg.Dense(3, "relu"), fg.Dense(1)], seed=7)
    got = evaluate(model, x, y)
    twin = fg.Sequential([fg.Dense(3, "relu"), fg.Dense(1)], seed=7)
    twin(x)
    assert model.built and got == evaluate(twin, x, y)
