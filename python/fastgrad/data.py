"""Scaling and the walkthrough's data sets (shipped or generated; no scikit-learn needed)."""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING, Tuple

import numpy as np

from ._validation import check_finite

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

__all__ = ["minmax", "e1_data", "e4_data", "e6_data", "e8_data"]


def minmax(a: ArrayLike) -> np.ndarray:
    """``(a - min) / (max - min)`` per column (for a 1-D array, over the whole array).

    Returns float64 unless ``a`` is float32.  A constant column has no range to scale by and
    raises ValueError, as do a range too large for the dtype, NaN/inf and empty input.
    """
    arr = np.asarray(a)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"a: expected a numeric array, got dtype {arr.dtype}")
    if arr.ndim not in (1, 2):
        raise ValueError(f"a: expected a 1-D or 2-D array, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"a: expected a non-empty array, got shape {arr.shape}")
    arr = arr.astype(np.float32 if arr.dtype == np.float32 else np.float64)
    check_finite("a", arr)
    lo, hi = arr.min(axis=0), arr.max(axis=0)
    where = "" if arr.ndim == 1 else "column(s) {} "
    if np.any(hi == lo):
        cols = np.flatnonzero(np.atleast_1d(hi == lo)).tolist()
        raise ValueError(f"a: {where.format(cols)}constant: max == min, nothing to scale by")
    with np.errstate(over="ignore"):
        span = hi - lo
    if not np.isfinite(span).all():
        cols = np.flatnonzero(~np.isfinite(np.atleast_1d(span))).tolist()
        raise ValueError(f"a: {where.format(cols)}range max - min overflows {arr.dtype}; divide by a power of ten first")
    return (arr - lo) / span


def e1_data() -> Tuple[np.ndarray, np.ndarray]:
    """E1: x = [1, 2], y = [1, 2], one feature."""
    return np.array([[1.0], [2.0]]), np.array([1.0, 2.0])


def e4_data() -> Tuple[np.ndarray, np.ndarray]:
    """E4: x = y = 1..1999, raw (unscaled)."""
    v = np.arange(1, 2000, dtype=np.float64)
    return v.reshape(-1, 1), v.copy()


def e6_data() -> Tuple[np.ndarray, np.ndarray]:
    """E6/E7: 100 samples, x ~ N(0,1)^3 after ``np.random.seed(42)``; y = 3x1 + 2x2 - 7x3 + 5.

    Drawn as the walkthrough draws them (x1, then x2, then x3, each 100 normals), from a
    private ``RandomState(42)`` so NumPy's global state is left alone.
    """
    rs = np.random.RandomState(42)
    x1, x2, x3 = rs.normal(size=100), rs.normal(size=100), rs.normal(size=100)
    x = np.stack([x1, x2, x3], axis=1)
    y = 3 * x1 + 2 * x2 - 7 * x3 + 5
    return x, y


def e8_data() -> Tuple[np.ndarray, np.ndarray]:
    """E8: ``make_regression(n_samples=10, n_features=10, bias=1, random_state=42)``, as shipped.

    Returns x (10, 10) and y (10,) in float64, read from the package's CSV.
    """
    text = resources.files("fastgrad").joinpath("data/e8_make_regression.csv").read_text()
    table = np.loadtxt(text.splitlines(), delimiter=",", comments="#", skiprows=2)
    return table[:, :10].copy(), table[:, 10].copy()
