"""Gradient checks: fastgrad's gradients against central finite differences and against TensorFlow.

``fastgrad check`` and the tests (``tests/test_finite_diff.py``, ``tests/test_oracle.py``) use
these functions, so the command checks a model the way the suite does:

    loss, grads = fg.value_and_grad(model, x, y)
    for c in checks.against_finite_differences(model, x, y, grads):   # float64 models
        print(c.tensor, c.rel_err, c.ok)

Every comparison is per tensor: the relative error max|ours − ref| / max|ref| in float64.
The references do not use fastgrad's backward kernels: finite differences take the loss from
the forward pass and NumPy, TensorFlow takes its own gradients (``fastgrad.oracle``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    from .layers import Model

__all__ = [
    "Comparison",
    "errors",
    "relative_error",
    "central_differences",
    "parameters",
    "tensor_names",
    "relu_margin",
    "mse",
    "against_finite_differences",
    "against_tensorflow",
    "TF_RTOL",
    "FD_RTOL",
    "FD_EPS",
    "RELU_MARGIN",
]

#: the relative error each gradient is held to against TensorFlow, by dtype
TF_RTOL: Dict[str, float] = {"float64": 1e-12, "float32": 1e-6}
#: against central finite differences (float64), and their step
FD_RTOL = 1e-7
FD_EPS = 1e-6
#: how far from 0 every ReLU input is kept, so that no ±eps step crosses the kink
RELU_MARGIN = 1e-3


@dataclass(frozen=True)
class Comparison:
    """One tensor compared: its name and shape, the max absolute error, the relative error
    (max|ours − ref| / max|ref|) and the tolerance it is held to."""

    tensor: str
    shape: Tuple[int, ...]
    abs_err: float
    rel_err: float
    tol: float

    @property
    def ok(self) -> bool:
        """Whether the relative error is within the tolerance."""
        return self.rel_err <= self.tol


def errors(ours: np.ndarray, ref: np.ndarray) -> Tuple[float, float]:
    """(max|ours − ref|, max|ours − ref| / max|ref|), in float64.

    When ``ref`` is all zero the relative error is 0 if ``ours`` equals it, else infinite.
    """
    a = np.asarray(ours, dtype=np.float64)
    b = np.asarray(ref, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"ours: expected the reference's shape {b.shape}, got {a.shape}")
    err = float(np.max(np.abs(a - b))) if a.size else 0.0
    scale = float(np.max(np.abs(b))) if b.size else 0.0
    if scale == 0:
        return err, 0.0 if err == 0 else math.inf
    return err, err / scale


def relative_error(ours: np.ndarray, ref: np.ndarray) -> float:
    """max|ours − ref| / max|ref| in float64 (see :func:`errors`)."""
    return errors(ours, ref)[1]


def central_differences(loss: Callable[[], float], a: np.ndarray, eps: float = FD_EPS) -> np.ndarray:
    """d loss / d a by central differences: (loss(a + eps) − loss(a − eps)) / 2 eps per element.

    ``loss`` reads ``a``, which is perturbed in place, one element at a time, and restored.
    """
    out = np.empty(a.shape, dtype=np.float64)
    for i in np.ndindex(*a.shape):
        keep = a[i]
        a[i] = keep + eps
        up = loss()
        a[i] = keep - eps
        down = loss()
        a[i] = keep
        out[i] = (up - down) / (2 * eps)
    return out


def _layers(model: "Model") -> list:
    return list(model.layers) if hasattr(model, "layers") else [model]


def parameters(model: "Model") -> List[np.ndarray]:
    """The model's live parameter arrays (kernels and biases), in ``get_weights()`` order."""
    return [p for layer in _layers(model) for p in (layer.kernel, layer.bias) if p is not None]


def tensor_names(model: "Model") -> List[str]:
    """'layer 0 kernel', 'layer 0 bias', ... in ``get_weights()`` order."""
    return [f"layer {i} {name}" for i, layer in enumerate(_layers(model))
            for name in (("kernel", "bias") if layer.bias is not None else ("kernel",))]


def relu_margin(model: "Model", x: np.ndarray) -> float:
    """The smallest |input| of any ReLU in ``model`` on ``x`` (inf without ReLUs), in float64
    NumPy: how far a finite-difference step may go before it crosses a kink."""
    a, margin = np.asarray(x, dtype=np.float64), math.inf
    for layer in _layers(model):
        z = a @ np.asarray(layer.kernel, dtype=np.float64)
        if layer.bias is not None:
            z = z + np.asarray(layer.bias, dtype=np.float64)
        if layer.activation == "relu":
            margin = min(margin, float(np.min(np.abs(z))) if z.size else math.inf)
            z = np.maximum(z, 0)
        a = z
    return margin


def mse(model: "Model", x: np.ndarray, y: np.ndarray) -> float:
    """The MSE of ``model`` on (x, y), the forward pass by fastgrad and the mean by NumPy in float64."""
    pred = np.asarray(model(x), dtype=np.float64)
    return float(np.mean((pred - np.asarray(y, dtype=np.float64).reshape(pred.shape)) ** 2))


def against_finite_differences(model: "Model", x: np.ndarray, y: np.ndarray, grads: Sequence[np.ndarray],
                               eps: float = FD_EPS, tol: float = FD_RTOL) -> List[Comparison]:
    """Each of ``grads`` (a gradient for every parameter, ``get_weights()`` order) against
    central differences of :func:`mse` over that parameter.

    Use a float64 model with every ReLU input at least a few ``eps`` from 0 (:func:`relu_margin`).
    The parameters are perturbed in place and restored.
    """
    params = parameters(model)
    if len(grads) != len(params):
        raise ValueError(f"grads: expected one array per parameter ({len(params)}), got {len(grads)}")
    out = []
    for name, p, g in zip(tensor_names(model), params, grads):
        fd = central_differences(lambda: mse(model, x, y), p, eps)
        out.append(Comparison(name, tuple(p.shape), *errors(g, fd), tol))
    return out


def against_tensorflow(model: "Model", x: np.ndarray, y: np.ndarray, loss: float, grads: Sequence[np.ndarray],
                       tol: Optional[float] = None) -> List[Comparison]:
    """``loss`` and ``grads`` against TensorFlow's at the model's weights (``fastgrad.oracle``):
    the loss first, then one comparison per parameter.  ``tol``: :data:`TF_RTOL` of the
    model's dtype by default.  Needs TensorFlow."""
    from . import oracle

    tf_loss, tf_grads = oracle.value_and_grad(model, x, y)
    if tol is None:
        tol = TF_RTOL[str(parameters(model)[0].dtype)]
    out = [Comparison("loss", (), *errors(np.array(loss), np.array(tf_loss)), tol)]
    for name, p, g, t in zip(tensor_names(model), parameters(model), grads, tf_grads):
        out.append(Comparison(name, tuple(p.shape), *errors(g, t), tol))
    return out
