"""Properties of the kernels over random shapes and dtypes (hypothesis)."""

from __future__ import annotations

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

import fastgrad as fg
from fastgrad import ops

# float32 kernels sum in float32: against a float64 NumPy reference a sum of n terms is off by
# at most about n ulps of the sum of its |terms| (not of the sum itself, which cancellation can
# make far smaller: one dX of 0.003 from eight terms of about 1 was off by 1.01e-5 of itself).
# With n <= 12, 1e-5 of the largest sum of |terms| is well above that (as the C++ tests measure).
REL = {np.float32: 1e-5, np.float64: 1e-12}

dims = st.integers(1, 12)
dtypes = st.sampled_from([np.float32, np.float64])
acts = st.sampled_from(["linear", "relu"])
settings.register_profile("fastgrad", max_examples=60, deadline=None)
settings.load_profile("fastgrad")


def rel(a, b, scale=None):
    """max |a - b| over the largest |b|, or over the largest of `scale` (the sums of |terms|)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    s = np.abs(b).max() if scale is None else np.max(scale)
    return np.abs(a - b).max() / s if s > 0 else np.abs(a).max()


@st.composite
def dense_case(draw):
    n, i, o = draw(dims), draw(dims), draw(dims)
    dtype = draw(dtypes)
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, i)).astype(dtype)
    k = rng.normal(size=(i, o)).astype(dtype)
    b = rng.normal(size=o).astype(dtype)
    dy = rng.normal(size=(n, o)).astype(dtype)
    return x, k, b, dy, draw(acts), dtype


# found by hypothesis: dX = 0.003 from eight products of about 1 (cancellation)
CANCELLING = (
    np.array([[-1.7382663]], np.float32),
    np.array([[-1.3366427, -1.3611068, -0.35161713, -2.3125815,
               -0.18889719, -0.95722926, 0.89360017, 0.95684725]], np.float32),
    np.array([1.3922583, 0.7674701, -0.05302978, 0.85979396,
              1.5054811, -0.65359455, 0.61035115, -0.04267383], np.float32),
    np.array([[1.4400167, -0.83689505, -0.3015466, 0.3623386,
               0.25811026, -1.6394479, 0.36015522, -0.1184977]], np.float32),
    "relu",
    np.float32,
)


@given(dense_case())
@example(CANCELLING)
def test_forward_and_backward_against_numpy(case):
    x, k, b, dy, act, dtype = case
    y = ops.dense_forward(x, k, b, act)
    assert y.shape == (x.shape[0], k.shape[1]) and y.dtype == dtype
    x64, k64, b64 = (a.astype(np.float64) for a in (x, k, b))
    z = x64 @ k64 + b64
    ref = np.maximum(z, 0) if act == "relu" else z
    assert rel(y, ref, abs(x64) @ abs(k64) + abs(b64)) <= REL[dtype]
    dx, dk, db = ops.dense_backward(dy, x, k, y, act)
    dz = dy.astype(np.float64) * ((y > 0) if act == "relu" else 1.0)
    assert rel(dk, x64.T @ dz, abs(x64).T @ abs(dz)) <= REL[dtype]
    assert rel(dx, dz @ k64.T, abs(dz) @ abs(k64).T) <= REL[dtype]
    # db is exactly the column sum of dZ, summed in row order in the array's dtype
    dz_t = (dy * (y > 0)).astype(dtype) if act == "relu" else dy
    expect = np.zeros(dz_t.shape[1], dtype=dtype)
    for row in dz_t:
        expect = expect + row
    np.testing.assert_array_equal(db, expect)


@given(dense_case())
def test_non_contiguous_and_integer_inputs_give_the_same_result(case):
    x, k, b, _, act, dtype = case
    wide = np.zeros((x.shape[0], 2 * x.shape[1]), dtype=dtype)
    wide[:, ::2] = x
    strided = wide[:, ::2]
    assert x.shape[1] == 1 or not strided.flags.c_contiguous
    np.testing.assert_array_equal(ops.dense_forward(strided, k, b, act), ops.dense_forward(x, k, b, act))
    layer = fg.Dense(k.shape[1], activation=act, dtype=np.dtype(dtype).name)
    layer.set_weights([k, b])
    np.testing.assert_array_equal(layer(strided), layer(x))
    xi = np.round(x * 3).astype(np.int32)
    np.testing.assert_array_equal(layer(xi), layer(xi.astype(dtype)))
    np.testing.assert_array_equal(layer(xi.tolist()), layer(xi.astype(dtype)))


@given(st.integers(1, 20), st.integers(1, 5), dtypes, st.integers(0, 2**31 - 1))
def test_mse_is_zero_at_the_target_and_its_gradient_vanishes(n, o, dtype, seed):
    p = np.random.default_rng(seed).normal(size=(n, o)).astype(dtype)
    assert ops.mse(p, p.copy()) == 0.0
    np.testing.assert_array_equal(ops.mse_grad(p, p.copy()), np.zeros_like(p))
    t = p + 1
    assert abs(ops.mse(p, t) - 1.0) <= REL[dtype]
    np.testing.assert_allclose(ops.mse_grad(p, t), np.full_like(p, -2.0 / p.size), rtol=REL[dtype])


@given(st.integers(1, 6), st.integers(1, 6), dtypes, st.integers(0, 2**31 - 1))
def test_value_and_grad_is_deterministic_and_leaves_weights_alone(n, i, dtype, seed):
    rng = np.random.default_rng(seed)
    model = fg.Sequential([fg.Dense(4, "relu", dtype=np.dtype(dtype).name), fg.Dense(2, dtype=np.dtype(dtype).name)], seed=seed)
    x, y = rng.normal(size=(n, i)), rng.normal(size=(n, 2))
    l1, g1 = fg.value_and_grad(model, x, y)
    before = model.get_weights()
    l2, g2 = fg.value_and_grad(model, x, y)
    assert l1 == l2
    for a, b in zip(g1, g2):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


@given(st.integers(0, 2**31 - 1))
def test_same_seed_same_initial_weights(seed):
    a = fg.Sequential([fg.Dense(3, "relu"), fg.Dense(1)], seed=seed).build(5).get_weights()
    b = fg.Sequential([fg.Dense(3, "relu"), fg.Dense(1)], seed=seed).build(5).get_weights()
    c = fg.Sequential([fg.Dense(3, "relu"), fg.Dense(1)], seed=seed + 1).build(5).get_weights()
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(a[0], c[0])
    limit = np.sqrt(6 / (5 + 3))  # Glorot uniform
    assert np.abs(a[0]).max() <= limit
    np.testing.assert_array_equal(a[1], np.zeros(3))


@given(dense_case())
def test_sgd_update_in_place_and_delta(case):
    x, k, _, _, _, dtype = case
    w = k.copy()
    g = x[:1].T @ np.ones((1, k.shape[1]), dtype=dtype) if x.shape[1] == k.shape[0] else k
    delta = ops.sgd_update(w, g, 0.5)
    expect = k - (dtype(0.5) * g.astype(dtype))
    np.testing.assert_array_equal(w, expect)
    assert delta == np.abs(expect - k).max()
