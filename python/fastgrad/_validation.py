"""Argument checks shared by the public API.  Each raises before anything is changed."""

from __future__ import annotations

import math
import numbers
import os
import sys
from typing import TYPE_CHECKING, Sequence, Tuple

import numpy as np

from . import _core

if TYPE_CHECKING:
    from .layers import Dense


def is_masked(a) -> bool:
    ma = sys.modules.get("numpy.ma")  # not imported: no masked array can exist
    return ma is not None and isinstance(a, ma.MaskedArray)


def as_array(name: str, a, dtype: np.dtype) -> np.ndarray:
    """``a`` as a C-contiguous, aligned array of ``dtype`` (0-d stays 0-d); TypeError if it is not
    real numbers (complex, strings, objects) or a masked array (whose mask would be ignored)."""
    if type(a) is np.ndarray and (a.dtype is dtype or a.dtype == dtype):
        flags = a.flags
        if flags.c_contiguous and flags.aligned:
            return a  # already what the kernels take (the common case: no conversion, no copy)
    if is_masked(a):
        raise TypeError(f"{name}: expected a plain array, got a masked array (its mask would be ignored); "
                        "pass a.filled(value) or drop the masked rows")
    if isinstance(a, np.ndarray):
        if a.dtype.kind not in "biuf":
            raise TypeError(f"{name}: expected a numeric array, got dtype {a.dtype}")
        arr = a
    else:
        try:
            arr = np.asarray(a)
        except (TypeError, ValueError) as e:
            raise TypeError(f"{name}: expected a numeric array, got {type(a).__name__} ({e})") from None
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"{name}: expected a numeric array, got {type(a).__name__} of dtype {arr.dtype}")
    with np.errstate(over="ignore"):  # values beyond dtype become inf: callers check finiteness
        out = np.asarray(arr, dtype=dtype, order="C")
    if not out.flags.aligned:  # at an odd address the kernels' typed pointers would be misaligned
        out = out.copy()
    return out


def aligned(a: np.ndarray) -> np.ndarray:
    """``a``, or an aligned copy when it is not (the kernels read it through typed pointers)."""
    return a if a.flags.aligned else a.copy()


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
    # arrays that need nothing: every check in one compiled call (which reads them through typed
    # pointers: only aligned arrays go there)
    if outputs is not None and type(x) is np.ndarray and type(y) is np.ndarray and x.flags.aligned and y.flags.aligned:
        y2 = _core.fast_data(x, y, dtype == np.float64, outputs)
        if y2 is not None:
            return x, y2
    x_in, y_in = x, y
    x = as_array("x", x, dtype)
    y = as_array("y", y, dtype)
    if x.ndim != 2:
        raise ValueError(f"x: expected a 2-D array (samples, features), got {_shape_of(x)}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"x: expected at least one sample and one feature, got shape {x.shape}")
    given = y.shape
    if y.ndim == 1:
        y = y.reshape(-1, 1)
    if y.ndim != 2:
        raise ValueError(f"y: expected a 1-D or 2-D array (samples, outputs), got {_shape_of(given)}")
    if y.shape[0] != x.shape[0]:
        raise ValueError(
            f"y: expected {x.shape[0]} rows to match x {x.shape}, got shape {given}"
        )
    if outputs is not None and y.shape[1] != outputs:
        raise ValueError(f"y: expected {outputs} output column(s) to match the model, got shape {given}")
    check_converted("x", x, x_in)
    check_converted("y", y, y_in)
    return x, y


def _shape_of(a) -> str:
    """'shape (4, 3)', or 'a 0-d array (a scalar)': a scalar's shape () reads as nothing."""
    shape = a if isinstance(a, tuple) else a.shape
    return "a 0-d array (a scalar)" if shape == () else f"shape {shape}"


def model_input(x, dtype: np.dtype) -> np.ndarray:
    """``x`` for a model's call: what :func:`as_array` takes, 2-D (batch, input_dim)."""
    x = as_array("x", x, dtype)
    if x.ndim != 2:
        raise ValueError(f"x: expected a 2-D array (batch, input_dim), got {_shape_of(x)}")
    return x


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
    v = _as_float(name, v, "a finite number > 0")
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name}: expected a finite number > 0, got {v!r}")
    return v


def nonneg_float(name: str, v) -> float:
    if type(v) is float and 0.0 <= v < math.inf:
        return v  # as in positive_float
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name}: expected a number >= 0, got {v!r}")
    v = _as_float(name, v, "a finite number >= 0")
    if not (math.isfinite(v) and v >= 0):
        raise ValueError(f"{name}: expected a finite number >= 0, got {v!r}")
    return v


def _as_float(name: str, v, expected: str) -> float:
    try:
        return float(v)
    except OverflowError:  # an int beyond a float's range (10**400): say which argument
        raise ValueError(f"{name}: expected {expected}, got an int of {abs(int(v)).bit_length()} bits, "
                         "beyond a float's range (about 1.8e308)") from None


def human_bytes(n: float) -> str:
    """``n`` bytes as '15.3 MB', '2.1 GB' (powers of 1000, as free and df -H print them)."""
    for unit in ("bytes", "kB", "MB", "GB", "TB", "PB", "EB"):
        if n < 1000 or unit == "EB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.3g} {unit}"
        n /= 1000
    raise AssertionError  # pragma: no cover


def available_memory() -> int | None:
    """Bytes of memory available for new allocations (Linux's MemAvailable, else the free pages),
    or None where neither can be read."""
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


# ---- the parameters of built layers ------------------------------------------------------------

def _fits(a, shape: tuple, dtype: np.dtype, writeable: bool = True) -> bool:
    """Whether ``a`` is a C-contiguous, aligned array of ``shape`` and ``dtype`` (writeable, when
    asked): what the kernels read (and training writes into)."""
    if not isinstance(a, np.ndarray) or a.shape != shape or a.dtype != dtype:
        return False
    flags = a.flags
    return flags.c_contiguous and flags.aligned and (flags.writeable or not writeable)


def check_params(layers: Sequence[Dense], writeable: bool = True) -> None:
    """The parameters of built layers are what the kernels take (they may have been assigned
    directly, as ``layer.kernel = ...``), and writeable when training is to update them:
    TypeError naming the first that is not."""
    for i, layer in enumerate(layers):
        k, b = layer.kernel, layer.bias
        if k is None:
            continue
        # the common case in a few attribute reads (fit's fixed cost): then the full check
        if (type(k) is np.ndarray and k.ndim == 2 and k.dtype is layer.dtype and k.shape[1] == layer.units
                and (kf := k.flags).c_contiguous and kf.aligned and (kf.writeable or not writeable)
                and (b is None if not layer.use_bias else type(b) is np.ndarray and b.dtype is layer.dtype
                     and b.shape == (layer.units,) and (bf := b.flags).c_contiguous and bf.aligned
                     and (bf.writeable or not writeable))):
            continue
        _check_layer_params(i, layer, len(layers), writeable)


def _check_layer_params(i: int, layer: Dense, count: int, writeable: bool) -> None:
    where = "" if count == 1 else f"layers[{i}]."
    k = layer.kernel
    rows = k.shape[0] if isinstance(k, np.ndarray) and k.ndim == 2 else "input_dim"
    checks = [("kernel", k, (rows, layer.units))]
    if layer.use_bias or layer.bias is not None:
        checks.append(("bias", layer.bias, (layer.units,)))
    for name, a, shape in checks:
        if not _fits(a, shape, layer.dtype, writeable) or not layer.use_bias and name == "bias":
            raise TypeError(f"{where}{name}: expected {_expected(layer, name, shape, writeable)}, "
                            f"got {_described(a)}; set_weights converts")


def _expected(layer: Dense, name: str, shape: tuple, writeable: bool) -> str:
    if name == "bias" and not layer.use_bias:
        return "None (the layer has use_bias=False)"
    shown = "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"
    return f"a {'writeable ' if writeable else ''}C-contiguous {layer.dtype.name} array of shape {shown}"


def _described(a) -> str:
    if not isinstance(a, np.ndarray):
        return type(a).__name__
    flags = ("" if a.flags.writeable else "read-only ") + ("" if a.flags.aligned else "unaligned ") + (
        "" if a.flags.c_contiguous else "Fortran-order " if a.flags.f_contiguous else "non-contiguous ")
    return f"a{'n' if flags.startswith('u') else ''} {flags}{a.dtype} array of shape {a.shape}"
