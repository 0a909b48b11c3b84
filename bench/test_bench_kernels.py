"""pytest-benchmark: the kernels, at the walkthrough's tiny shape and at a layer of an MNIST-size net.

    pytest bench/ --benchmark-only

Shapes (Keras layout): small x (1, 3), kernel (3, 1); large x (128, 784), kernel (784, 256).
float32, as fit trains by default.  Each benchmark checks its result against NumPy once
(float64 reference; tolerance named below); nothing is asserted about time.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastgrad as fg

SHAPES = {"1x3->1": (1, 3, 1), "128x784->256": (128, 784, 256)}
# float32 results against a float64 NumPy reference: a sum of up to 784 products
RTOL, ATOL = 1e-4, 1e-5


def _data(shape, activation):
    n, i, o = shape
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, i), dtype=np.float32)
    k = (rng.standard_normal((i, o), dtype=np.float32) / np.sqrt(i)).astype(np.float32)
    b = rng.standard_normal(o, dtype=np.float32)
    y = _ref_forward(x, k, b, activation)
    dy = rng.standard_normal((n, o), dtype=np.float32)
    t = rng.standard_normal((n, o), dtype=np.float32)
    return x, k, b, y, dy, t


def _ref_forward(x, k, b, activation):
    z = x.astype(np.float64) @ k.astype(np.float64) + b
    return z if activation == "linear" else np.maximum(z, 0)


@pytest.mark.parametrize("shape", list(SHAPES), ids=list(SHAPES))
@pytest.mark.parametrize("activation", ["linear", "relu"])
def test_dense_forward(benchmark, shape, activation):
    x, k, b, *_ = _data(SHAPES[shape], activation)
    out = benchmark(fg.ops.dense_forward, x, k, b, activation)
    np.testing.assert_allclose(out, _ref_forward(x, k, b, activation), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("shape", list(SHAPES), ids=list(SHAPES))
@pytest.mark.parametrize("activation", ["linear", "relu"])
def test_dense_backward(benchmark, shape, activation):
    x, k, b, _, dy, _ = _data(SHAPES[shape], activation)
    y = fg.ops.dense_forward(x, k, b, activation)
    dx, dk, db = benchmark(fg.ops.dense_backward, dy, x, k, y, activation)
    # ReLU's mask is read from the forward output, as the kernel reads it (so no rounding flips it)
    dz = dy.astype(np.float64) * (1.0 if activation == "linear" else (y > 0))
    np.testing.assert_allclose(dx, dz @ k.T.astype(np.float64), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(dk, x.T.astype(np.float64) @ dz, rtol=RTOL, atol=ATOL * np.sqrt(len(x)))
    np.testing.assert_allclose(db, dz.sum(0), rtol=RTOL, atol=ATOL * np.sqrt(len(x)))


@pytest.mark.parametrize("shape", list(SHAPES), ids=list(SHAPES))
def test_mse(benchmark, shape):
    *_, y, _, t = _data(SHAPES[shape], "linear")
    pred = y.astype(np.float32)
    loss = benchmark(fg.ops.mse, pred, t)
    ref = np.mean((pred.astype(np.float64) - t) ** 2)
    assert loss == pytest.approx(ref, rel=RTOL)


@pytest.mark.parametrize("shape", list(SHAPES), ids=list(SHAPES))
def test_mse_grad(benchmark, shape):
    *_, y, _, t = _data(SHAPES[shape], "linear")
    pred = y.astype(np.float32)
    g = benchmark(fg.ops.mse_grad, pred, t)
    np.testing.assert_allclose(g, 2 * (pred.astype(np.float64) - t) / pred.size, rtol=RTOL, atol=1e-9)


def test_dense_layer_call_1x3(benchmark):
    """A built Dense(1) called on one sample of 3 features (issue 4: under 1.5 µs)."""
    layer = fg.Dense(1, seed=0)
    layer.build(3)
    x = np.array([[0.5, -1.0, 2.0]], dtype=np.float32)
    out = benchmark(layer, x)
    np.testing.assert_allclose(out, _ref_forward(x, layer.kernel, layer.bias, "linear"), rtol=RTOL, atol=ATOL)


# ReLU's backward alone (the mask dZ = dY * (Y > 0) and the bias gradient, over W7's 8192 x 256
# activations), against NumPy doing the same in the same run: the ratio of the two medians shows
# whether the kernel's loop is still vectorised.  It once was not (a multiply under a condition):
# 4.0-4.2 ms against 1.3 ms, which made NumPy's two calls the faster.
MASK_SHAPE = (8192, 256)
MASK_RTOL = 1e-4  # the bias gradient: 8192 float32 terms, summed in another order by NumPy


@pytest.mark.benchmark(group="relu backward 8192x256")
@pytest.mark.parametrize("impl", ["fastgrad", "numpy"])
def test_relu_backward_mask(benchmark, impl):
    rng = np.random.default_rng(0)
    dy = rng.standard_normal(MASK_SHAPE, dtype=np.float32)
    y = np.maximum(rng.standard_normal(MASK_SHAPE, dtype=np.float32), 0)
    x = np.zeros((MASK_SHAPE[0], 0), np.float32)  # no inputs: the products are empty, the mask is all
    k = np.zeros((0, MASK_SHAPE[1]), np.float32)
    if impl == "fastgrad":
        db = benchmark(lambda: fg.ops.dense_backward(dy, x, k, y, "relu")[2])
    else:
        db = benchmark(lambda: (dy * (y > 0)).sum(0))
    np.testing.assert_allclose(db, (dy.astype(np.float64) * (y > 0)).sum(0), rtol=MASK_RTOL, atol=MASK_RTOL)
