"""The hand-derived kernels, one forward/backward pair per operation.

Shapes use Keras layout::

    x: (N, I)   kernel: (I, O)   bias: (O,)   y, dy: (N, O)   dx: (N, I)

    dense_forward:   Z = x @ kernel + bias,   y = act(Z)
    dense_backward:  dZ = dy * act'(Z)   (ReLU: 1 where Z > 0, else 0, as TensorFlow)
                     dx = dZ @ kernel.T   dkernel = x.T @ dZ   dbias = dZ.sum(0)
    mse:             L = sum((pred - target)**2) / pred.size
    mse_grad:        dpred = 2 * (pred - target) / pred.size

Arrays of bool, integer or floating dtype are accepted; they are computed in float32 when
every floating input is float32 (or when there is no floating input) and in float64 otherwise.
"""

from __future__ import annotations

import numbers
from typing import TYPE_CHECKING, Optional, Tuple

import numpy as np

from . import _core
from ._validation import aligned, is_masked

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

__all__ = ["dense_forward", "dense_backward", "mse", "mse_grad", "sgd_update", "ACTIVATIONS"]

#: activation name -> the code the compiled kernels use
ACTIVATIONS = {"linear": 0, "relu": 1}


def activation_code(activation: str) -> int:
    """Return the kernel code of ``activation`` ("linear" or "relu"); ValueError otherwise."""
    try:
        return ACTIVATIONS[activation]
    except (KeyError, TypeError):
        raise ValueError(
            f"activation: expected one of {sorted(ACTIVATIONS)}, got {activation!r}"
        ) from None


_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _common_dtype(*arrays) -> np.dtype:
    floats = [a.dtype for a in arrays if a is not None and a.dtype.kind == "f"]
    if floats and any(d.itemsize != 4 for d in floats):  # (a big-endian float32 is a float32 too)
        return np.dtype(np.float64)
    return np.dtype(np.float32)


def _coerce(name: str, a, dtype=None) -> np.ndarray:
    if a is None:
        raise TypeError(f"{name}: expected a numeric array, got None")
    if is_masked(a):
        raise TypeError(f"{name}: expected a plain array, got a masked array (its mask would be ignored)")
    try:
        arr = np.asarray(a) if dtype is None else np.asarray(a, dtype=dtype, order="C")
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name}: expected a numeric array, got {type(a).__name__} ({e})") from None
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name}: expected a numeric array, got dtype {arr.dtype}")
    return arr


def _prepare(optional: Tuple[str, ...] = (), **named) -> Tuple[np.ndarray, ...]:
    """The arrays in one float dtype, C-contiguous (0-d stays 0-d); None only for ``optional`` names."""
    vals = tuple(named.values())
    first = next((v for v in vals if v is not None), None)
    if isinstance(first, np.ndarray) and first.dtype in _FLOATS and all(
        (type(v) is np.ndarray and v.dtype == first.dtype and v.flags.c_contiguous and v.flags.aligned)
        or (v is None and k in optional)
        for k, v in named.items()
    ):
        return vals  # already what the kernels take: no conversion, no copy
    raw = {k: (None if v is None and k in optional else _coerce(k, v)) for k, v in named.items()}
    dtype = _common_dtype(*raw.values())
    return tuple(None if v is None else aligned(np.asarray(v, dtype=dtype, order="C")) for v in raw.values())


def dense_forward(x: ArrayLike, kernel: ArrayLike, bias: Optional[ArrayLike] = None,
                  activation: str = "linear") -> np.ndarray:
    """``act(x @ kernel + bias)``; ``bias=None`` means no bias.  Returns a new (N, O) array."""
    act = activation_code(activation)
    x, kernel, bias = _prepare(("bias",), x=x, kernel=kernel, bias=bias)
    return _core.dense_forward(x, kernel, bias, act)


def dense_backward(
    dy: ArrayLike, x: ArrayLike, kernel: ArrayLike, y: ArrayLike, activation: str = "linear",
    use_bias: bool = True, need_dx: bool = True,
) -> Tuple[Optional[np.ndarray], np.ndarray, Optional[np.ndarray]]:
    """Gradients of a Dense layer given ``dy = dL/dy`` and the forward output ``y``.

    Returns ``(dx, dkernel, dbias)``; ``dx`` is None when ``need_dx`` is False and ``dbias`` is
    None when ``use_bias`` is False.  ReLU's derivative is read from ``y`` (``y > 0``).
    """
    act = activation_code(activation)
    for name, flag in (("use_bias", use_bias), ("need_dx", need_dx)):
        if not isinstance(flag, (bool, np.bool_)) and not (isinstance(flag, numbers.Integral) and flag in (0, 1)):
            raise TypeError(f"{name}: expected True or False, got {flag!r}")
    dy, x, kernel, y = _prepare(dy=dy, x=x, kernel=kernel, y=y)
    return _core.dense_backward(dy, x, kernel, y, bool(use_bias), act, bool(need_dx))


def mse(pred: ArrayLike, target: ArrayLike) -> float:
    """Mean squared error over every element: ``sum((pred - target)**2) / pred.size``."""
    pred, target = _prepare(pred=pred, target=target)
    return _core.mse(pred, target)


def mse_grad(pred: ArrayLike, target: ArrayLike) -> np.ndarray:
    """Gradient of :func:`mse` with respect to ``pred``: ``2 * (pred - target) / pred.size``."""
    pred, target = _prepare(pred=pred, target=target)
    return _core.mse_grad(pred, target)


def sgd_update(w: np.ndarray, g: ArrayLike, learning_rate: float) -> float:
    """In place: ``w -= learning_rate * g``.  Returns ``max |w_new - w_old|``.

    ``w`` must be a writeable, C-contiguous float32 or float64 array (it is updated, never
    copied); ``g`` is converted to ``w``'s dtype.  ``learning_rate`` is any real number (the
    kernel alone: :class:`fastgrad.SGD` is where it must be positive).  The learning rate is
    taken in ``w``'s dtype (as TensorFlow's ``assign_sub`` does), so a float32 ``w`` rounds it.
    """
    if not isinstance(w, np.ndarray) or w.dtype not in (np.float32, np.float64):
        raise TypeError("w: expected a float32 or float64 NumPy array (updated in place)")
    if not w.flags.c_contiguous or not w.flags.writeable:
        raise ValueError("w: expected a writeable C-contiguous array (updated in place)")
    if not w.flags.aligned:  # updated in place, so it cannot be copied to an aligned address
        raise ValueError("w: expected an aligned array (updated in place); this one starts at an address "
                         f"that is not a multiple of {w.itemsize}: use an aligned copy, w.copy()")
    if isinstance(learning_rate, bool) or not isinstance(learning_rate, numbers.Real):
        raise TypeError(f"learning_rate: expected a real number, got {learning_rate!r}")
    try:
        lr = float(learning_rate)
    except OverflowError:
        raise ValueError(f"learning_rate: expected a number a float can hold, got {learning_rate!r}") from None
    g = np.asarray(_coerce("g", g), dtype=w.dtype, order="C")
    if np.may_share_memory(w, g) or not g.flags.aligned:  # the kernel reads g while it writes w: a g
        g = g.copy()  # that overlaps w is copied (and one at an odd address, for the typed pointer)
    return _core.sgd_update(w, g, lr)
