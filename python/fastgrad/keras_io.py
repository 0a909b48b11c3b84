"""Keras models in and out: :func:`from_keras` and :func:`to_keras`, the same bits both ways.

fastgrad's parameters are in Keras's layout (kernel (inputs, units), bias (units,)), so a Dense
stack crosses over by copying arrays.  Needs the ``tf`` extra (``pip install 'fastgrad[tf]'``);
TensorFlow is imported on first use.
"""

from __future__ import annotations

from typing import Any, List, Union

import numpy as np

from .layers import Dense, Sequential

__all__ = ["from_keras", "to_keras"]

_ACTIVATIONS = {"linear": "linear", "relu": "relu"}  # Keras's name -> fastgrad's
_DTYPES = ("float32", "float64")


def _keras():
    from .oracle import _tf  # TensorFlow's quiet import, with the install hint when it is missing

    try:
        _tf()
        import keras
    except ImportError as e:
        raise ImportError("fastgrad's Keras interop needs TensorFlow and Keras, which are not installed: "
                          "pip install 'fastgrad[tf]'") from e
    return keras


def _refuse(layer: Any, why: str) -> ValueError:
    return ValueError(f"from_keras: layer {layer.name!r} ({type(layer).__name__}) {why}; fastgrad takes "
                      "Dense layers with linear or ReLU activation, in float32 or float64")


def _dense_chain(keras, model: Any) -> List[Any]:
    """The model's Dense layers in order; a ValueError naming the first layer that is not one
    fastgrad has, or a functional model that is not a single chain."""
    if isinstance(model, keras.layers.Dense):
        return [model]
    if not isinstance(model, keras.Model):
        raise TypeError(f"from_keras: expected a keras.Sequential, a keras.Model or a keras.layers.Dense, "
                        f"got {type(model).__name__}")
    layers = [lay for lay in model.layers if not isinstance(lay, keras.layers.InputLayer)]
    if not layers:
        raise ValueError("from_keras: the model has no layers")
    for lay in layers:
        if not isinstance(lay, keras.layers.Dense):
            raise _refuse(lay, "is not a Dense layer")
    if not isinstance(model, keras.Sequential):
        # a functional model: one input, one output, each layer fed by the one before it
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise ValueError(f"from_keras: expected a chain with one input and one output, got "
                             f"{len(model.inputs)} inputs and {len(model.outputs)} outputs")
        feeds = [model.inputs[0]] + [lay.output for lay in layers[:-1]]
        for lay, feed in zip(layers, feeds):
            if len(lay._inbound_nodes) != 1 or lay.input is not feed:
                raise _refuse(lay, "is not fed by the layer before it (fastgrad takes a plain chain)")
        if layers[-1].output is not model.outputs[0]:
            raise _refuse(layers[-1], "is not the model's output")
    return layers


def from_keras(model: Any) -> Sequential:
    """A :class:`~fastgrad.Sequential` with the layers, dtype and weights (copied bit for bit) of a
    built Keras ``Sequential`` or functional chain of ``Dense`` layers (or one ``Dense``).

    Each Dense must have a linear or ReLU activation and a float32 or float64 dtype (one dtype for
    all); anything else -- another layer, activation, a mixed-precision policy, LoRA, an unbuilt
    model -- is a ValueError naming the layer.
    """
    keras = _keras()
    layers = _dense_chain(keras, model)
    out, weights, dtypes = [], [], set()
    for lay in layers:
        config = lay.get_config()
        act = config.get("activation")
        if not isinstance(act, str) or act not in _ACTIVATIONS:
            raise _refuse(lay, f"has the activation {act!r}")
        if getattr(lay, "lora_enabled", False):
            raise _refuse(lay, "has LoRA enabled")
        if not lay.built:
            raise _refuse(lay, "is not built (call the model on data, or build it, first)")
        dtype = lay.dtype_policy.name
        if dtype not in _DTYPES or lay.compute_dtype != lay.variable_dtype:
            raise _refuse(lay, f"has the dtype policy {dtype!r}")
        if lay.kernel.ndim != 2:
            raise _refuse(lay, f"has a kernel of shape {tuple(lay.kernel.shape)}")
        dtypes.add(dtype)
        use_bias = bool(config.get("use_bias", True))
        out.append(Dense(int(lay.units), _ACTIVATIONS[act], use_bias=use_bias, dtype=dtype))
        weights += [np.asarray(w) for w in lay.get_weights()]
    if len(dtypes) > 1:
        raise ValueError(f"from_keras: the layers mix dtypes {sorted(dtypes)}; fastgrad's layers share one")
    fg_model = Sequential(out)
    fg_model.set_weights(weights)  # builds it; shapes checked against the chain
    return fg_model


def to_keras(model: Union[Sequential, Dense]) -> Any:
    """A ``keras.Sequential`` (an ``Input`` of the model's width, then one ``keras.layers.Dense`` per
    layer, same units, activation, use_bias and dtype) holding the same bits as ``model``, a built
    :class:`~fastgrad.Sequential` or :class:`~fastgrad.Dense`."""
    if isinstance(model, Dense):
        layers = [model]
    elif isinstance(model, Sequential):
        layers = model.layers
    else:
        raise TypeError(f"to_keras: expected a fastgrad.Sequential or fastgrad.Dense, got {type(model).__name__}")
    if not all(layer.built for layer in layers):
        raise ValueError("to_keras: the model is not built (call it on data, or build(input_dim), first)")
    keras = _keras()
    dtype = layers[0].dtype.name
    k_layers = [keras.Input(shape=(layers[0].input_dim,), dtype=dtype)]
    k_layers += [keras.layers.Dense(layer.units, activation=layer.activation, use_bias=layer.use_bias, dtype=dtype)
                 for layer in layers]
    k_model = keras.Sequential(k_layers)
    for k_layer, layer in zip(k_model.layers, layers):
        k_layer.set_weights(layer.get_weights())
    return k_model
