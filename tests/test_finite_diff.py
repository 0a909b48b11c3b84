"""Every gradient against central finite differences, in float64.

For each parameter element and each input element: (L(θ+ε) − L(θ−ε)) / 2ε with ε = 1e-6,
compared per tensor as max |ours − fd| / max |fd|.  ReLU pre-activations are kept at least
RELU_MARGIN from 0 so that no ±ε step crosses the kink.

The differences and the comparison are fastgrad.checks', which ``fastgrad check`` runs too;
the reference is the loss of the forward pass alone (no backward kernel), and the first tests
hold the checks themselves to functions whose derivatives are known.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastgrad as fg
from fastgrad import checks, ops

EPS = 1e-6
TOL = 1e-7  # issue 2: finite differences agree within 1e-7 (float64, relative)
RELU_MARGIN = 1e-3
KNOWN_TOL = 1e-8  # a cubic, eps 1e-6: rounding in f, ~1e-16 |f| / eps, dominates; 10x under TOL


def loss_of(model, x, y) -> float:
    return ops.mse(model(x), y)


def test_central_differences_of_a_known_function():
    # d/da sum(a^3 + 2a) = 3a^2 + 2, element by element; a is restored afterwards
    a = np.random.default_rng(0).normal(size=(3, 4))
    before = a.copy()
    fd = checks.central_differences(lambda: float(np.sum(a**3 + 2 * a)), a, EPS)
    np.testing.assert_array_equal(a, before)
    assert checks.relative_error(fd, 3 * before**2 + 2) <= KNOWN_TOL


def test_relative_error_and_its_zero_reference():
    assert checks.errors(np.array([1.0, 2.5]), np.array([1.0, 2.0])) == (0.5, 0.25)
    assert checks.relative_error(np.zeros(3), np.zeros(3)) == 0.0
    assert checks.relative_error(np.array([0.0, 1e-300]), np.zeros(2)) == np.inf  # no scale: any error fails
    with pytest.raises(ValueError, match="shape"):
        checks.relative_error(np.zeros(2), np.zeros(3))


def grads_with_input(model, x, y):
    """value_and_grad's parameter gradients, plus dL/dx through fastgrad.ops."""
    loss, grads = fg.value_and_grad(model, x, y)
    acts = [x]
    for layer in model.layers:
        acts.append(ops.dense_forward(acts[-1], layer.kernel, layer.bias, layer.activation))
    d = ops.mse_grad(acts[-1], y)
    for li in range(len(model.layers) - 1, -1, -1):
        layer = model.layers[li]
        d, _, _ = ops.dense_backward(d, acts[li], layer.kernel, acts[li + 1], layer.activation, layer.use_bias)
    return loss, grads, d


def min_abs_preactivation(model, x) -> float:
    a, m = x, np.inf
    for layer in model.layers:
        z = ops.dense_forward(a, layer.kernel, layer.bias, "linear")
        if layer.activation == "relu":
            m = min(m, float(np.abs(z).min()))
        a = ops.dense_forward(a, layer.kernel, layer.bias, layer.activation)
    return m


def make_case(seed: int):
    rng = np.random.default_rng(seed)
    for _ in range(100):
        depth = int(rng.integers(1, 4))
        layers = [
            fg.Dense(int(rng.integers(1, 7)), activation=str(rng.choice(["linear", "relu"])),
                     use_bias=bool(rng.random() < 0.8), dtype="float64")
            for _ in range(depth)
        ]
        model = fg.Sequential(layers, seed=int(rng.integers(1 << 30)))
        x = rng.normal(size=(int(rng.integers(1, 9)), int(rng.integers(1, 7))))
        y = rng.normal(size=(x.shape[0], layers[-1].units))
        model.build(x.shape[1])
        model.set_weights([w if w.ndim == 2 else rng.normal(scale=0.5, size=w.shape) for w in model.get_weights()])
        if min_abs_preactivation(model, x) > RELU_MARGIN:
            return model, x, y
    raise AssertionError("no case with ReLU inputs away from 0")  # pragma: no cover


@pytest.mark.parametrize("seed", range(30))
def test_gradients_match_central_differences(report, seed):
    model, x, y = make_case(seed)
    _, grads, dx = grads_with_input(model, x, y)
    assert checks.relu_margin(model, x) > RELU_MARGIN
    comparisons = checks.against_finite_differences(model, x, y, grads, eps=EPS, tol=TOL)
    assert [c.shape for c in comparisons] == [w.shape for w in model.get_weights()]
    for c in comparisons:
        report.add("finite differences float64: d" + c.tensor.split()[-1], c.rel_err, TOL)
        assert c.rel_err <= TOL, f"{c.tensor}: {c.rel_err:.3e}"
    xc = x.copy()
    fd_x = checks.central_differences(lambda: loss_of(model, xc, y), xc, EPS)
    e = checks.relative_error(dx, fd_x)
    report.add("finite differences float64: dx", e, TOL)
    assert e <= TOL


def test_finite_difference_check_catches_a_wrong_gradient():
    # the comparison itself can fail: a gradient off by 1e-5 relative is rejected
    model, x, y = make_case(0)
    _, grads, _ = grads_with_input(model, x, y)
    assert all(c.ok for c in checks.against_finite_differences(model, x, y, grads, eps=EPS, tol=TOL))
    wrong = [g.copy() for g in grads]
    fd = checks.central_differences(lambda: loss_of(model, x, y), checks.parameters(model)[0], EPS)
    wrong[0].flat[0] += 1e-5 * max(np.abs(fd).max(), 1.0)
    verdicts = [c.ok for c in checks.against_finite_differences(model, x, y, wrong, eps=EPS, tol=TOL)]
    assert verdicts == [False] + [True] * (len(grads) - 1)
