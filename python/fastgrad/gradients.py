"""Loss and gradients by the chain rule over the hand-derived kernels: no tape, no graph."""

from __future__ import annotations

from typing import TYPE_CHECKING, List, Tuple

import numpy as np

from . import _core
from ._validation import check_params, data, human_bytes
from .layers import Dense, Model, _check_chain, _layers_of

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

__all__ = ["value_and_grad"]


def _prepare(model: Model, x, y, build: bool = True,
             writeable: bool = False) -> Tuple[List[Dense], np.ndarray, np.ndarray]:
    """Validate ``(x, y)`` for ``model`` and (with ``build``) build it if needed.

    ``writeable``: the parameters must be writeable too (fit updates them).
    Returns ``(layers, x, y)`` with ``x``, ``y`` C-contiguous in the model's dtype, ``y`` 2-D.
    Raises ValueError/TypeError, naming the argument, before anything changes (also for a
    model whose parameters were assigned directly and are not what the kernels take).
    """
    layers = _layers_of(model)
    check_params(layers, writeable)  # parameters assigned directly (layer.kernel = ...) are checked here
    _check_chain(layers)
    x, y = data(x, y, layers[0].dtype, outputs=layers[-1].units)
    kernel = layers[0].kernel  # fit's fixed cost: attributes, not the built/input_dim properties
    if kernel is not None and kernel.shape[0] != x.shape[1]:
        raise ValueError(f"x: the model is built for inputs of width {kernel.shape[0]}, got shape {x.shape}")
    if build and not all(layer.built for layer in layers):
        model.build(x.shape[1])  # a Sequential seeds its layers from its own seed
    return layers, x, y


def value_and_grad(model: Model, x: ArrayLike, y: ArrayLike) -> Tuple[float, List[np.ndarray]]:
    """MSE of ``model`` on ``(x, y)`` and its gradient for every parameter.

    The gradients come in ``model.get_weights()`` order: ``[dk1, db1, dk2, db2, ...]``.
    ``y`` may be 1-D when the model has one output.  The model is built from ``x`` if needed;
    its weights are not changed.

    This is the readable reference: forward through each layer keeping its output, then
    backward from ``dL/dP`` through each layer, last first.
    """
    layers, x, y = _prepare(model, x, y)
    try:
        return _value_and_grad(layers, x, y)
    except MemoryError:
        widths = sum(layer.units for layer in layers)
        size = x.shape[0] * (2 * widths + x.shape[1]) * x.itemsize  # activations and their gradients
        raise MemoryError(f"x: could not allocate the activations and gradients of {x.shape[0]} samples "
                          f"(about {human_bytes(size)}); pass fewer samples at a time") from None


def _value_and_grad(layers: List[Dense], x: np.ndarray, y: np.ndarray) -> Tuple[float, List[np.ndarray]]:
    # forward:  a_0 = x,  a_l = act(a_{l-1} K_l + b_l)
    acts = [x]
    for layer in layers:
        acts.append(_core.dense_forward(acts[-1], layer.kernel, layer.bias, layer._act, False))
    pred = acts[-1]
    loss = _core.mse(pred, y)
    # backward:  dP = 2 (P - Y) / P.size,  then each layer maps dL/da_l to dL/da_{l-1}
    d = _core.mse_grad(pred, y)
    grads: List[np.ndarray] = []
    for li in range(len(layers) - 1, -1, -1):
        layer = layers[li]
        dx, dk, db = _core.dense_backward(
            d, acts[li], layer.kernel, acts[li + 1], layer.use_bias, layer._act, li > 0
        )
        grads[:0] = [dk] if db is None else [dk, db]
        d = dx
    return float(loss), grads
