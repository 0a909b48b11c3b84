"""Argument checks shared by the public API.  Each raises before anything is changed."""

from __future__ import annotations

import math
import numbers
from typing import Tuple

import numpy as np

from . import _core


def as_array(name: str, a, dtype: np.dtype) -> np.ndarray:
    """``a`` as a C-contiguous array of ``dtype``; TypeError if it is not numeric."""
    if type(a) is np.ndarray and a.dtype == dtype and a.flags.c_contiguous:
        return a  # already what the kernels take (the common case: no conversion, no copy)
    if isinstance(a, np.ndarray):
        if a.dtype.kind not in "biuf":
            raise TypeError(f"{name}: expected a numeric array, got dtype {a.dtype}")
        with np.errstate(over="ignore"):  # values beyond dtype become inf: callers check finiteness
            return np.ascontiguousarray(a, dtype=dtype)
    try:
        arr = np.asarray(a)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name}: expected a numeric array, got {type(a).__name__} ({e})") from None
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name}: expected a numeric array, got {type(a).__name__} of dtype {arr.dtype}")
    with np.errstate(over="ignore"):
        return np.ascontiguousarray(arr, dtype=dtype)


def check_finite(name: str, a: np.ndarray) -> None:
    if a.dtype.kind == "f" and a.flags.c_contiguous and a.dtype.itemsize in (4, 8):
        ok = _core.all_finite(a)  # one pass, no temporary
    else:
        ok = bool(np.isfinite(a).all())
    if not ok:
        raise ValueError(f"{name}: contains NaN or inf")


def data(x, y, dtype: np.dtype, outputs: int | None = None) -> Tuple[np.ndarray, np.ndarray]:
    """Check and convert training data.

    ``x`` must be 2-D (samples, features); ``y`` (samples, outputs) or, for one output, (samples,).
    Both non-empty, finite, with the same number of rows.  Returns C-contiguous arrays of
    ``dtype`` with ``y`` always 2-D.
    """
    if outputs is not None:  # arrays that need nothing: every check in one compiled call
        y2 = _core.fast_data(x, y, dtype == np.float64, outputs)
        if y2 is not None:
            return x, y2
    x_in, y_in = x, y
    x = as_array("x", x, dtype)
    y = as_array("y", y, dtype)
    if x.ndim != 2:
        raise ValueError(f"x: expected a 2-D array (samples, features), got shape {x.shape}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"x: expected at least one sample and one feature, got shape {x.shape}")
    given = y.shape
    if y.ndim == 1:
        y = y.reshape(-1, 1)
    if y.ndim != 2:
        raise ValueError(f"y: expected a 1-D or 2-D array (samples, outputs), got shape {y.shape}")
    if y.shape[0] != x.shape[0]:
        raise ValueError(
            f"y: expected {x.shape[0]} rows to match x {x.shape}, got shape {given}"
        )
    if outputs is not None and y.shape[1] != outputs:
        raise ValueError(f"y: expected {outputs} output column(s) to match the model, got shape {given}")
    check_converted("x", x, x_in)
    check_converted("y", y, y_in)
    return x, y


def check_converted(name: str, a: np.ndarray, given) -> None:
    """check_finite, saying so when the values were finite but overflowed ``a``'s dtype."""
    try:
        check_finite(name, a)
    except ValueError:
        with np.errstate(over="ignore", invalid="ignore"):
            wide = np.asarray(given, dtype=np.float64)
        if a.dtype != np.float64 and np.isfinite(wide).all():
            raise ValueError(
                f"{name}: values up to {np.abs(wide).max():.4g} overflow {a.dtype} (largest {np.finfo(a.dtype).max:.4g}); "
                "scale the data (fastgrad.minmax) or use dtype='float64'"
            ) from None
        raise


def positive_int(name: str, v, allow_none: bool = False):
    if type(v) is int and v > 0:
        return v
    if v is None and allow_none:
        return None
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{name}: expected a positive int, got {v!r}")
    if v <= 0:
        raise ValueError(f"{name}: expected a positive int, got {v!r}")
    return int(v)


def nonneg_seed(name: str, v, allow_none: bool = True):
    """A seed: a non-negative int of any size (NumPy's SeedSequence takes those), or None."""
    if type(v) is int and v >= 0:
        return v
    if v is None and allow_none:
        return None
    expected = "a non-negative int" + (" or None" if allow_none else "")
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{name}: expected {expected}, got {v!r}")
    if v < 0:
        raise ValueError(f"{name}: expected {expected}, got {v!r}")
    return int(v)


def positive_float(name: str, v) -> float:
    if type(v) is float and 0.0 < v < math.inf:
        return v  # the common case without the abstract-class check (fit's fixed cost)
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name}: expected a positive number, got {v!r}")
    v = float(v)
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name}: expected a finite number > 0, got {v!r}")
    return v


def nonneg_float(name: str, v) -> float:
    if type(v) is float and 0.0 <= v < math.inf:
        return v  # as in positive_float
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name}: expected a number >= 0, got {v!r}")
    v = float(v)
    if not (math.isfinite(v) and v >= 0):
        raise ValueError(f"{name}: expected a finite number >= 0, got {v!r}")
    return v
