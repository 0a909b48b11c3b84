"""Dense layers and Sequential models.  Parameters are NumPy arrays in Keras layout."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import List, Optional, Sequence, Union

import numpy as np

from . import _core
from ._validation import as_array, check_finite, nonneg_seed, positive_int
from .ops import activation_code

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


class Dense:
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
    # set_weights and build mark the layer while they change it (see mark below): not part of
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

    def build(self, input_dim: int, seed=None) -> "Dense":
        """Create the parameters for inputs of width ``input_dim``: Glorot-uniform kernel, zero bias.

        ``seed`` (an int or a ``np.random.SeedSequence``) overrides the layer's own seed.
        """
        input_dim = positive_int("input_dim", input_dim)
        with changing([self], "build"):
            return self._build(input_dim, seed)

    def _build(self, input_dim: int, seed) -> "Dense":
        rng = np.random.default_rng(self.seed if seed is None else seed)
        limit = np.sqrt(6.0 / (input_dim + self.units))
        self.kernel = np.ascontiguousarray(
            rng.uniform(-limit, limit, size=(input_dim, self.units)), dtype=self.dtype
        )
        self.bias = np.zeros(self.units, dtype=self.dtype) if self.use_bias else None
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
        with changing([self], "set_weights"):
            self._assign(self._checked(list(weights), self.input_dim, ""))

    def _assign(self, arrays: List[np.ndarray]) -> None:
        self.kernel = arrays[0]
        self.bias = arrays[1] if self.use_bias else None

    # -- calling --------------------------------------------------------------------------
    def __call__(self, x) -> np.ndarray:
        """``act(x @ kernel + bias)`` for ``x`` of shape (batch, input_dim); a new array."""
        if self.kernel is None:
            xa = as_array("x", x, self.dtype)
            if xa.ndim != 2:
                raise ValueError(f"x: expected a 2-D array (batch, input_dim), got shape {xa.shape}")
            self.build(xa.shape[1])
            x = xa
        try:
            return _core.dense_forward(x, self.kernel, self.bias, self._act, True)
        except TypeError:
            # not convertible by the binding (strings, objects, ragged lists): say what was wrong
            as_array("x", x, self.dtype)
            raise

    def __repr__(self) -> str:
        shape = "unbuilt" if self.kernel is None else f"{self.input_dim}->{self.units}"
        return (
            f"Dense({self.units}, activation={self.activation!r}, use_bias={self.use_bias}, "
            f"dtype={self.dtype.name!r}) [{shape}]"
        )


class Sequential:
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
        check_chain(layers)
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
        check_chain(self.layers)
        if self.built:
            return self  # nothing to do (and nothing to refuse while another thread trains it)
        with changing(self.layers, "build"):
            return self._build(input_dim)

    def _build(self, input_dim: int) -> "Sequential":
        seeds = np.random.SeedSequence(self.seed).spawn(len(self.layers))
        width = input_dim
        for layer, s in zip(self.layers, seeds):
            if not layer.built:
                layer.build(width, seed=s if layer.seed is None else None)
            width = layer.units
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
        with changing(self.layers, "set_weights"):
            self._set_weights(weights)

    def _set_weights(self, weights: Sequence) -> None:
        weights = list(weights)
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

    def __call__(self, x) -> np.ndarray:
        """The output of the last layer for ``x`` of shape (batch, input_dim)."""
        if not self.built:
            xa = as_array("x", x, self.dtype)
            if xa.ndim != 2:
                raise ValueError(f"x: expected a 2-D array (batch, input_dim), got shape {xa.shape}")
            self.build(xa.shape[1])
            x = xa
        x = self.layers[0](x)
        for layer in self.layers[1:]:
            x = _core.dense_forward(x, layer.kernel, layer.bias, layer._act, False)
        return x

    def __repr__(self) -> str:
        inner = ",\n  ".join(repr(layer) for layer in self.layers)
        return f"Sequential([\n  {inner}\n])"


Model = Union[Dense, Sequential]


def fits(a, shape: tuple, dtype: np.dtype, writeable: bool = True) -> bool:
    """Whether ``a`` is a C-contiguous array of ``shape`` and ``dtype`` (writeable, when asked):
    what the kernels read (and training writes into)."""
    if not isinstance(a, np.ndarray) or a.shape != shape or a.dtype != dtype:
        return False
    flags = a.flags
    return flags.c_contiguous and (flags.writeable or not writeable)


# ---- who is changing a layer ---------------------------------------------------------------
# fit marks the layers it trains for the whole run, and set_weights and build mark them for their
# own call: layer.__dict__["_fit_owner"] = (token, thread), set in one step under the GIL.  Another
# thread's mark refuses the call (two threads changing one model's arrays would mix their
# changes).  The thread that holds a mark may call set_weights and build (fit's callbacks do), but
# not fit.  The mark of a thread that has ended (in a fork's child, say) is taken over.  Copies
# and pickles leave marks out (Dense.__getstate__).
_TAKE_OVER = threading.Lock()


def mark(layers: Sequence[Dense], owner: tuple, what: str, same_thread_ok: bool) -> None:
    """Mark ``layers`` for ``owner`` (a token, the current thread); RuntimeError naming ``what``
    when another holds one.  The caller unmarks in a ``finally``, whatever happened (a refusal
    leaves the marks it made until then)."""
    ordered = layers if len(layers) < 2 else sorted(set(layers), key=id)  # one order: no two refuse each other
    for layer in ordered:
        while True:
            held = layer.__dict__.setdefault("_fit_owner", owner)
            if held is owner or same_thread_ok and held[1] is owner[1]:
                break
            if not held[1].is_alive():
                with _TAKE_OVER:  # one taker; a second sees the first's mark
                    if layer.__dict__.get("_fit_owner") is held:
                        layer.__dict__["_fit_owner"] = owner
                        break
                continue  # the mark changed meanwhile: look again
            if held[1] is owner[1]:
                raise RuntimeError(f"{what}: the fit this callback or rule runs in is training this model; "
                                   "train a copy instead (copy.deepcopy(model))")
            raise RuntimeError(f"{what}: another thread is training or changing this model (fit, set_weights "
                               "or build); use one model from one thread at a time, or give each thread a copy")


def unmark(layers: Sequence[Dense], owner: tuple) -> None:
    """Take ``owner``'s marks off the layers (another's stay)."""
    for layer in layers:
        if layer.__dict__.get("_fit_owner") is owner:
            del layer.__dict__["_fit_owner"]


@contextmanager
def changing(layers: Sequence[Dense], what: str):
    """Hold marks on ``layers`` while the block changes them (set_weights, build)."""
    owner = (object(), threading.current_thread())
    try:
        mark(layers, owner, what, same_thread_ok=True)
        yield
    finally:
        unmark(layers, owner)


def check_chain(layers: Sequence[Dense]) -> None:
    """ValueError if a built layer's input width is not the previous layer's units."""
    for i in range(1, len(layers)):
        layer, units = layers[i], layers[i - 1].units
        if layer.built and layer.input_dim != units:
            raise ValueError(
                f"layers[{i}]: built for inputs of width {layer.input_dim}, but layers[{i - 1}] has {units} units"
            )


def check_params(layers: Sequence[Dense], writeable: bool = True) -> None:
    """The parameters of built layers are what the kernels take (they may have been assigned
    directly, as ``layer.kernel = ...``), and writeable when training is to update them:
    TypeError naming the first that is not."""
    for i, layer in enumerate(layers):
        k, b = layer.kernel, layer.bias
        if k is None:
            continue
        # the common case in a few attribute reads (fit's fixed cost): then the full check
        if (type(k) is np.ndarray and k.ndim == 2 and (k.flags.writeable or not writeable) and k.flags.c_contiguous
                and k.dtype is layer.dtype and k.shape[1] == layer.units
                and (b is None if not layer.use_bias else type(b) is np.ndarray and (b.flags.writeable or not writeable)
                     and b.flags.c_contiguous and b.dtype is layer.dtype and b.shape == (layer.units,))):
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
        if not fits(a, shape, layer.dtype, writeable) or not layer.use_bias and name == "bias":
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
    flags = ("" if a.flags.writeable else "read-only ") + ("" if a.flags.c_contiguous else
                                                             "Fortran-order " if a.flags.f_contiguous else "non-contiguous ")
    return f"a {flags}{a.dtype} array of shape {a.shape}"


def layers_of(model) -> List[Dense]:
    """The Dense layers of a Dense or Sequential; TypeError for anything else."""
    if isinstance(model, Sequential):
        return model.layers
    if isinstance(model, Dense):
        return [model]
    raise TypeError(f"model: expected a fastgrad.Sequential or fastgrad.Dense, got {type(model).__name__}")
