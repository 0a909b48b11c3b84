"""Every gradient against central finite differences, in float64.

For each parameter element and each input element: (L(θ+ε) − L(θ−ε)) / 2ε with ε = 1e-6,
compared per tensor as max |ours − fd| / max |fd|.  ReLU pre-activations are kept at least
RELU_MARGIN from 0 so that no ±ε step crosses the kink.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastgrad as fg
from fastgrad import ops

EPS = 1e-6
TOL = 1e-7  # issue 2: finite differences agree within 1e-7 (float64, relative)
RELU_MARGIN = 1e-3


def loss_of(model, x, y) -> float:
    return ops.mse(model(x), y)


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


def central_difference(f, a: np.ndarray) -> np.ndarray:
    """d f / d a by central differences, perturbing ``a`` in place (restored after)."""
    out = np.empty_like(a)
    for i in np.ndindex(a.shape):
        keep = a[i]
        a[i] = keep + EPS
        up = f()
        a[i] = keep - EPS
        down = f()
        a[i] = keep
        out[i] = (up - down) / (2 * EPS)
    return out


def rel_err(ours, ref) -> float:
    scale = np.abs(ref).max()
    return float(np.abs(ours - ref).max() / scale) if scale > 0 else float(np.abs(ours).max())


@pytest.mark.parametrize("seed", range(30))
def test_gradients_match_central_differences(report, seed):
    model, x, y = make_case(seed)
    _, grads, dx = grads_with_input(model, x, y)
    params = model._params()  # the live arrays: perturbed in place, restored
    assert len(params) == len(grads)
    for j, (p, g) in enumerate(zip(params, grads)):
        fd = central_difference(lambda: loss_of(model, x, y), p)
        e = rel_err(g, fd)
        report.add("finite differences float64: d" + ("kernel" if p.ndim == 2 else "bias"), e, TOL)
        assert e <= TOL, f"parameter {j}: {e:.3e}"
    xc = x.copy()
    fd_x = central_difference(lambda: loss_of(model, xc, y), xc)
    e = rel_err(dx, fd_x)
    report.add("finite differences float64: dx", e, TOL)
    assert e <= TOL


def test_finite_difference_check_catches_a_wrong_gradient():
    # the comparison itself can fail: a gradient off by 1e-5 relative is rejected
    model, x, y = make_case(0)
    _, grads, _ = grads_with_input(model, x, y)
    fd = central_difference(lambda: loss_of(model, x, y), model._params()[0])
    assert rel_err(grads[0], fd) <= TOL
    wrong = grads[0].copy()
    wrong.flat[0] += 1e-5 * max(np.abs(fd).max(), 1.0)
    assert rel_err(wrong, fd) > TOL
