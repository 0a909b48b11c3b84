"""Dense layers and Sequential models.  Parameters are NumPy arrays in Keras layout."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Union

import numpy as np

from . import _core
from ._marks import changing
from ._validation import as_array, check_finite, check_params, human_bytes, model_input, nonneg_seed, positive_int
from .ops import activation_code

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

__all__ = ["Dense", "Sequential", "Model"]

_DTYPES = {"float32": np.dtype(np.float32), "float64": np.dtype(np.float64)}


def _dtype(dtype) -> np.dtype:
    """float32 or float64 in the machine's byte order (the kernels' types); None: float32."""
    if dtype is None:
        return _DTYPES["float32"]
    try:
        d = np.dtype(dtype)
    except TypeError:
        d = None
    if d is None or d not in _DTYPES.values():  # '>f4' is named float32 but is not the kernels' type
        raise ValueError(f"dtype: expected 'float32' or 'float64', got {dtype!r}")
    return d


class _Keras:
    """What Dense and Sequential share with Keras's models: ``predict`` and ``save``."""

    def predict(self, x: ArrayLike) -> np.ndarray:
        """``self(x)``: Keras's name for the call."""
        return self(x)  # type: ignore[operator]

    def save(self, path: Union[str, os.PathLike], *, extra: Optional[Dict[str, Any]] = None) -> None:
        """Architecture, dtype and weights to ``path`` (an .npz, no pickle); ``fastgrad.load`` gives
        the same bits back.  See :func:`fastgrad.io.save`."""
        from .io import save  # (io imports this module)

        save(self, path, extra=extra)

    def to_keras(self) -> Any:
        """A ``keras.Sequential`` with the same layers and the same bits (needs the tf extra)."""
        from .keras_io import to_keras

        return to_keras(self)


class Dense(_Keras):
    """A fully connected layer: ``y = act(x @ kernel + bias)``.

    Parameters
    ----------
    units : number of outputs.
    activation : "linear" (the default) or "relu".
    use_bias : whether the layer has a bias (``bias`` is None otherwise).
    dtype : "float32" (the default, as in TensorFlow; None means it too) or "float64".
    seed : a non-negative int, the seed of the Glorot-uniform kernel initialiser; None draws
        fresh entropy.  The bias starts at zero.

    The layer is built (its parameters created) by :meth:`build`, or on the first call, from
    the width of its input.  ``kernel`` is (input_dim, units); ``bias`` is (units,).
    """

    def __init__(
        self,
        units: int,
        activation: str = "linear",
        use_bias: bool = True,
        dtype: str = "float32",
        seed: Optional[int] = None,
    ) -> None:
        self.units = positive_int("units", units)
        self._act = activation_code(activation)
        self._activation = activation
        if not isinstance(use_bias, (bool, np.bool_)):
            raise TypeError(f"use_bias: expected True or False, got {use_bias!r}")
        self.use_bias = bool(use_bias)
        self.dtype = _dtype(dtype)
        self.seed = nonneg_seed("seed", seed)
        self.kernel: Optional[np.ndarray] = None
        self.bias: Optional[np.ndarray] = None

    # fit keeps its compiled step here between calls (see training._net_for), and fit,
    # set_weights and build mark the layer while they change it (see _marks): not part of
    # the layer's state, so copies and pickles leave them out
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.pop("_fit_net", None)
        state.pop("_fit_owner", None)
        return state

    def __setstate__(self, state: dict) -> None:
        if "activation" in state:  # pickled before activation became read-only
            state["_activation"] = state.pop("activation")
        self.__dict__.update(state)

    @property
    def activation(self) -> str:
        """"linear" or "relu" (fixed when the layer is made)."""
        return self._activation

    # -- building -------------------------------------------------------------------------
    @property
    def built(self) -> bool:
        return self.kernel is not None

    @property
    def input_dim(self) -> Optional[int]:
        return None if self.kernel is None else self.kernel.shape[0]

    def build(self, input_dim: int, seed: Union[int, np.random.SeedSequence, None] = None) -> "Dense":
        """Create the parameters for inputs of width ``input_dim``: Glorot-uniform kernel, zero bias.

        ``seed`` (an int or a ``np.random.SeedSequence``) overrides the layer's own seed.
        """
        input_dim = positive_int("input_dim", input_dim)
        self._check_size(input_dim)
        return changing([self], "build", self._build, input_dim, seed)

    def _check_size(self, input_dim: int) -> None:
        """ValueError when the kernel (input_dim, units) is more than an array can hold (it is
        drawn in float64, 8 bytes an element)."""
        elements = input_dim * self.units
        if elements * 8 > sys.maxsize:
            raise ValueError(f"units: {self.units} units on {input_dim} inputs make a kernel of {elements:.3g} "
                             f"elements ({human_bytes(elements * 8)} as drawn in float64), more than an array can hold")

    def _build(self, input_dim: int, seed) -> "Dense":
        rng = np.random.default_rng(self.seed if seed is None else seed)
        limit = np.sqrt(6.0 / (input_dim + self.units))
        shape = (input_dim, self.units)
        try:
            kernel = np.ascontiguousarray(rng.uniform(-limit, limit, size=shape), dtype=self.dtype)
            bias = np.zeros(self.units, dtype=self.dtype) if self.use_bias else None
        except MemoryError:
            raise MemoryError(f"build: could not allocate the kernel {shape} of this Dense({self.units}) layer "
                              f"({human_bytes(input_dim * self.units * 8)} as drawn in float64)") from None
        self.kernel, self.bias = kernel, bias
        return self

    # -- parameters -----------------------------------------------------------------------
    def get_weights(self) -> List[np.ndarray]:
        """Copies of ``[kernel, bias]`` (``[kernel]`` without bias); [] before the layer is built."""
        return [w.copy() for w in self._params()]

    def _params(self) -> List[np.ndarray]:
        if self.kernel is None:
            return []
        return [self.kernel] if self.bias is None else [self.kernel, self.bias]

    def _param_shapes(self, input_dim: Optional[int]) -> List[tuple]:
        shapes = [(input_dim, self.units)]
        if self.use_bias:
            shapes.append((self.units,))
        return shapes

    def _checked(self, weights: Sequence, input_dim: Optional[int], where: str) -> List[np.ndarray]:
        """Validate ``weights`` for this layer (built or not); returns contiguous copies."""
        shapes = self._param_shapes(input_dim)
        if len(weights) != len(shapes):
            raise ValueError(
                f"weights: expected {len(shapes)} array(s) for {where} "
                f"({'kernel, bias' if self.use_bias else 'kernel'}), got {len(weights)}"
            )
        out = []
        for j, (w, shape) in enumerate(zip(weights, shapes)):
            name = f"weights[{where}{'kernel' if j == 0 else 'bias'}]"
            a = np.array(as_array(name, w, self.dtype), copy=True)
            want = tuple(a.shape[0] if s is None else s for s in shape)
            if a.ndim != len(shape) or a.shape != want:
                shown = tuple("input_dim" if s is None else s for s in shape)
                raise ValueError(f"{name}: expected shape {shown}, got {a.shape}")
            check_finite(name, a)
            out.append(a)
        return out

    def set_weights(self, weights: Sequence) -> None:
        """Replace the parameters with copies of ``[kernel, bias]`` (``[kernel]`` without bias).

        An unbuilt layer is built by this call.  Shapes, dtype and finiteness are checked
        first; on error nothing changes.
        """
        weights = _weight_list(weights)
        changing([self], "set_weights", lambda: self._assign(self._checked(weights, self.input_dim, "")))

    def _assign(self, arrays: List[np.ndarray]) -> None:
        self.kernel = arrays[0]
        self.bias = arrays[1] if self.use_bias else None

    # -- calling --------------------------------------------------------------------------
    def __call__(self, x: ArrayLike) -> np.ndarray:
        """``act(x @ kernel + bias)`` for ``x`` of shape (batch, input_dim); a new array.

        ``x`` is converted to the layer's dtype; complex, string and masked arrays are refused.
        """
        x = model_input(x, self.dtype)
        if self.kernel is None:
            self.build(x.shape[1])
        elif not _aligned_params(self):
            check_params([self], writeable=False)  # assigned directly: say what is wrong
        try:
            return _core.dense_forward(x, self.kernel, self.bias, self._act, True)
        except MemoryError:
            raise _output_memory_error(0, self, x.shape[0]) from None

    def __repr__(self) -> str:
        shape = "unbuilt" if self.kernel is None else f"{self.input_dim}->{self.units}"
        return (
            f"Dense({self.units}, activation={self.activation!r}, use_bias={self.use_bias}, "
            f"dtype={self.dtype.name!r}) [{shape}]"
        )


class Sequential(_Keras):
    """A stack of :class:`Dense` layers applied in order.

    ``seed`` seeds every layer that has no seed of its own (each gets its own stream, spawned
    from ``seed``), so ``Sequential([...], seed=0)`` is reproducible.  All layers share one dtype.
    """

    def __init__(self, layers: Sequence[Dense], seed: Optional[int] = None) -> None:
        layers = list(layers) if not isinstance(layers, Dense) else [layers]
        if not layers:
            raise ValueError("layers: expected at least one Dense layer, got none")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Dense):
                raise TypeError(f"layers[{i}]: expected a fastgrad.Dense, got {type(layer).__name__}")
        dtypes = {layer.dtype for layer in layers}
        if len(dtypes) > 1:
            raise ValueError(f"layers: expected one dtype for all layers, got {sorted(d.name for d in dtypes)}")
        seed = nonneg_seed("seed", seed)
        _check_chain(layers)
        self.layers: List[Dense] = layers
        self.seed = seed

    @property
    def dtype(self) -> np.dtype:
        return self.layers[0].dtype

    @property
    def built(self) -> bool:
        return all(layer.built for layer in self.layers)

    @property
    def input_dim(self) -> Optional[int]:
        return self.layers[0].input_dim

    @property
    def units(self) -> int:
        return self.layers[-1].units

    def build(self, input_dim: int) -> "Sequential":
        """Build every unbuilt layer, the first for inputs of width ``input_dim``."""
        input_dim = positive_int("input_dim", input_dim)
        if self.layers[0].built and self.layers[0].input_dim != input_dim:
            raise ValueError(
                f"input_dim: this model is built for inputs of width {self.layers[0].input_dim}, got {input_dim}"
            )
        _check_chain(self.layers)
        if self.built:
            return self  # nothing to do (and nothing to refuse while another thread trains it)
        width = input_dim
        for layer in self.layers:  # every size first: a refusal builds no layer
            if not layer.built:
                layer._check_size(width)
            width = layer.units
        return changing(self.layers, "build", self._build, input_dim)

    def _build(self, input_dim: int) -> "Sequential":
        seeds = np.random.SeedSequence(self.seed).spawn(len(self.layers))
        width = input_dim
        built = []
        try:
            for layer, s in zip(self.layers, seeds):
                if not layer.built:
                    layer.build(width, seed=s if layer.seed is None else None)
                    built.append(layer)
                width = layer.units
        except BaseException:  # (a MemoryError, say) the layers this call built are unbuilt again
            for layer in built:
                layer.kernel = layer.bias = None
            raise
        return self

    def get_weights(self) -> List[np.ndarray]:
        """Copies of ``[k1, b1, k2, b2, ...]`` (no entry for a layer without bias)."""
        return [w for layer in self.layers for w in layer.get_weights()]

    def _params(self) -> List[np.ndarray]:
        return [w for layer in self.layers for w in layer._params()]

    def set_weights(self, weights: Sequence) -> None:
        """Replace every parameter with copies of ``weights`` (``get_weights()`` order).

        Every array is checked (count, shape, dtype, finiteness) before any is assigned;
        an unbuilt model is built from the first kernel's shape.
        """
        weights = _weight_list(weights)
        changing(self.layers, "set_weights", self._set_weights, weights)

    def _set_weights(self, weights: List) -> None:
        need = sum(2 if layer.use_bias else 1 for layer in self.layers)
        if len(weights) != need:
            raise ValueError(f"weights: expected {need} arrays (get_weights() order), got {len(weights)}")
        checked, pos = [], 0
        width = self.layers[0].input_dim
        for li, layer in enumerate(self.layers):
            n = 2 if layer.use_bias else 1
            arrs = layer._checked(weights[pos : pos + n], width, f"layer {li} ")
            checked.append(arrs)
            width = layer.units
            pos += n
        for layer, arrs in zip(self.layers, checked):
            layer._assign(arrs)

    def __call__(self, x: ArrayLike) -> np.ndarray:
        """The output of the last layer for ``x`` of shape (batch, input_dim); as :meth:`Dense.__call__`."""
        x = model_input(x, self.dtype)
        if not self.built:
            self.build(x.shape[1])
        i = 0
        try:
            for i, layer in enumerate(self.layers):
                if not _aligned_params(layer):
                    check_params(self.layers, writeable=False)  # assigned directly: say what is wrong
                x = _core.dense_forward(x, layer.kernel, layer.bias, layer._act, i == 0)
        except MemoryError:
            raise _output_memory_error(i, self.layers[i], x.shape[0]) from None
        return x

    def __repr__(self) -> str:
        inner = ",\n  ".join(repr(layer) for layer in self.layers)
        return f"Sequential([\n  {inner}\n])"


Model = Union[Dense, Sequential]


def _weight_list(weights) -> list:
    try:
        return list(weights)
    except TypeError:
        raise TypeError(f"weights: expected a list of arrays (get_weights() order), "
                        f"got {type(weights).__name__}") from None


def _aligned_params(layer: Dense) -> bool:
    """Whether a built layer's parameters are arrays at aligned addresses (the kernels take them
    through typed pointers; the binding checks dtype, order and shape)."""
    k, b = layer.kernel, layer.bias
    return type(k) is np.ndarray and k.flags.aligned and (b is None or type(b) is np.ndarray and b.flags.aligned)


def _output_memory_error(i: int, layer: Dense, rows: int) -> MemoryError:
    size = human_bytes(rows * layer.units * layer.dtype.itemsize)
    return MemoryError(f"x: could not allocate the output of layer {i}, ({rows}, {layer.units}) "
                       f"{layer.dtype.name}: {size}; call the model on fewer rows at a time")


def _check_chain(layers: Sequence[Dense]) -> None:
    """ValueError if a built layer's input width is not the previous layer's units."""
    for i in range(1, len(layers)):
        layer, units = layers[i], layers[i - 1].units
        if layer.built and layer.input_dim != units:
            raise ValueError(
                f"layers[{i}]: built for inputs of width {layer.input_dim}, but layers[{i - 1}] has {units} units"
            )


def _layers_of(model) -> List[Dense]:
    """The Dense layers of a Dense or Sequential; TypeError for anything else."""
    if isinstance(model, Sequential):
        return model.layers
    if isinstance(model, Dense):
        return [model]
    raise TypeError(f"model: expected a fastgrad.Sequential or fastgrad.Dense, got {type(model).__name__}")
