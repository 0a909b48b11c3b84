"""Keep a model: save it to one ``.npz`` file and load it back, the same bits.

The file is a plain NumPy ``.npz`` (a zip of ``.npy`` arrays), readable without fastgrad::

    format        "fastgrad-model"                 0-d string
    version       1                                0-d int64
    model         "Sequential" or "Dense"          0-d string: what load returns
    dtype         "float32" or "float64"           0-d string
    units         (layers,) int64
    activation    (layers,) string, "linear" or "relu"
    use_bias      (layers,) bool
    weight_0 ...  the parameters in get_weights() order: k1, b1, k2, b2, ... (no bias for a layer
                  without one), in the model's dtype
    extra/NAME    what ``save(..., extra=)`` was given: strings as string arrays, numbers as arrays

It is read with ``allow_pickle=False`` always: an entry that would need unpickling (an object
array) is refused without being unpickled, so a model file from elsewhere cannot run code.
"""

from __future__ import annotations

import io as _stdio
import os
import re
import zipfile
import zlib
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np

from ._validation import check_params
from .layers import Dense, Model, Sequential, _check_chain, _layers_of
from .ops import ACTIVATIONS

__all__ = ["save", "load", "read_extra", "FORMAT", "VERSION"]

FORMAT = "fastgrad-model"
VERSION = 1  # the newest format this fastgrad writes and reads

PathLike = Union[str, "os.PathLike[str]"]
ExtraValue = Union[str, List[str], np.ndarray, np.generic]

_EXTRA = "extra/"
_HEADER = ("format", "version", "model", "dtype", "units", "activation", "use_bias")
_EXTRA_NAME = re.compile(r"[A-Za-z0-9_.\-]+")  # names that read back unchanged as zip members on every OS
_IN_MEMORY_BYTES = 256 << 20  # files up to this size are built in memory, then written


# ---- save ----------------------------------------------------------------------------------------

def save(model: Model, path: PathLike, *, extra: Optional[Mapping[str, Any]] = None) -> None:
    """Write ``model``'s architecture, dtype and weights to ``path``, exactly that name.

    ``model`` is a built :class:`fastgrad.Sequential` or :class:`fastgrad.Dense` (:func:`load`
    gives back the same kind).  ``path`` is a str or ``os.PathLike``; it is written as given (no
    ``.npz`` is added, unlike ``np.savez``) and replaced if it exists.  Non-finite weights are
    kept as they are.

    ``extra`` maps names (letters, digits, ``_ . -``) to metadata kept beside the model and read
    back by :func:`read_extra`: a str, a list of str, or numbers (a scalar or an array of bool,
    int, float or complex).  Nothing is pickled.

    Everything is checked before the file is opened: on error (ValueError/TypeError naming the
    argument) an existing file is left as it was.
    """
    arrays = _model_arrays(model)
    arrays.update(_extra_arrays(extra))
    path = _fspath(path)
    # built in memory, then written: a failed write (a full disk) is then one plain OSError (NumPy
    # before 2.1 leaves its ZipFile open when writing fails, and reports it when collected)
    if sum(a.nbytes for a in arrays.values()) <= _IN_MEMORY_BYTES:
        buf = _stdio.BytesIO()
        np.savez(buf, **arrays)
        with open(path, "wb") as fh:
            fh.write(buf.getbuffer())
        return
    with open(path, "wb") as fh:  # a file object: np.savez adds no '.npz' to the name
        np.savez(fh, **arrays)


def _model_arrays(model: Model) -> Dict[str, np.ndarray]:
    layers = _layers_of(model)
    if not all(layer.built for layer in layers):
        raise ValueError("model: it is not built, so it has no weights to save; build it "
                         "(model.build(input_dim)) or call it once on data first")
    check_params(layers, writeable=False)  # parameters assigned directly are what the kernels take
    _check_chain(layers)
    arrays: Dict[str, np.ndarray] = {
        "format": np.array(FORMAT),
        "version": np.array(VERSION, dtype=np.int64),
        "model": np.array("Sequential" if isinstance(model, Sequential) else "Dense"),
        "dtype": np.array(layers[0].dtype.name),
        "units": np.array([layer.units for layer in layers], dtype=np.int64),
        "activation": np.array([layer.activation for layer in layers]),
        "use_bias": np.array([layer.use_bias for layer in layers], dtype=bool),
    }
    weights = model.get_weights()  # copies: a consistent snapshot even if another thread trains it
    arrays.update((f"weight_{i}", w) for i, w in enumerate(weights))
    return arrays


def _extra_arrays(extra: Optional[Mapping[str, Any]]) -> Dict[str, np.ndarray]:
    if extra is None:
        return {}
    if not isinstance(extra, Mapping):
        raise TypeError(f"extra: expected a dict of name -> str, list of str or numeric array, "
                        f"got {type(extra).__name__}")
    out = {}
    for name, value in extra.items():
        if not isinstance(name, str) or not _EXTRA_NAME.fullmatch(name):
            raise ValueError(f"extra: names are made of letters, digits, '_', '.' and '-'; got {name!r}")
        out[_EXTRA + name] = _extra_array(f"extra[{name!r}]", value)
    return out


def _extra_array(where: str, value: Any) -> np.ndarray:
    if isinstance(value, str):
        return _strings(where, [value]).reshape(())
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return _strings(where, list(value))
    if isinstance(value, np.ndarray) and value.dtype.kind == "U":
        if value.ndim != 1:
            raise ValueError(f"{where}: expected a str or a 1-D list of str, got a string array of shape {value.shape}")
        return _strings(where, value.tolist())
    try:
        a = np.asarray(value)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{where}: expected a str, a list of str or numbers, got {type(value).__name__} ({e})") from None
    if a.dtype.kind not in "biufc" or isinstance(value, (bytes, bytearray)):
        raise TypeError(f"{where}: expected a str, a list of str or numbers, got {type(value).__name__}"
                        + (f" of dtype {a.dtype}" if isinstance(value, (np.ndarray, list, tuple)) else ""))
    return a


def _strings(where: str, values: List[str]) -> np.ndarray:
    # a '<U' array drops trailing NUL characters: refuse what would not come back unchanged
    if any("\0" in v for v in values):
        raise ValueError(f"{where}: strings with NUL characters cannot be stored")
    return np.array(values, dtype=str) if values else np.zeros(0, dtype="<U1")


# ---- load ----------------------------------------------------------------------------------------

def load(path: PathLike) -> Model:
    """The model saved in ``path`` by :func:`save`: the same architecture, dtype and weights, bit
    for bit, so ``load(path)(x)`` equals ``model(x)`` exactly.

    A model saved as a :class:`fastgrad.Sequential` comes back as one, a single
    :class:`fastgrad.Dense` as a Dense.  The layers have no seed (they are built already).

    The file is read without unpickling anything.  A file that is not a fastgrad model (not an
    ``.npz``, or one without the format entry), a corrupt one (truncated, entries missing or of
    the wrong shape or dtype, an unknown activation) or one written in a newer format is a
    ValueError naming the path and what is wrong; a missing file is FileNotFoundError.
    """
    return _read(path)[0]


def read_extra(path: PathLike) -> Dict[str, ExtraValue]:
    """The ``extra`` entries saved with the model in ``path`` (see :func:`save`).

    A str comes back as a str; a list of str (or a 1-D string array) as a list of str; numbers as
    a NumPy array of the dtype and shape given, a scalar as a NumPy scalar (``np.float64`` is a
    float).  The whole file is checked as :func:`load` checks it.
    """
    return _read(path)[1]


class _Corrupt(Exception):
    """What is wrong with the file; :func:`_read` adds the path."""


def _read(path: PathLike) -> Tuple[Model, Dict[str, ExtraValue]]:
    path = _fspath(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
            # only a zip goes to np.load: it would take anything else for an .npy or a pickle
            if head not in (b"PK\x03\x04", b"PK\x05\x06"):
                raise _Corrupt("not a fastgrad model file (" + ("it is empty" if not head else "not an .npz archive")
                               + ")")
            fh.seek(0)
            try:
                data = np.load(fh, allow_pickle=False)
            except (ValueError, EOFError, OSError, zipfile.BadZipFile) as e:
                raise _Corrupt(f"not a fastgrad model file, or a damaged one ({_reason(e)})") from None
            with data:
                entries = _entries(data)
            return _model_from(entries), _extra_from(entries)
    except _Corrupt as e:
        raise ValueError(f"{os.fsdecode(path)!r}: {e}") from None


def _reason(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def _entries(data: "np.lib.npyio.NpzFile") -> Dict[str, np.ndarray]:
    """Every entry, read and checked: the format and version first, so that a newer file is
    reported as newer even if its other entries are beyond this reader."""
    names = list(data.files)
    if "format" not in names:
        shown = ", ".join(repr(n) for n in names[:8]) + (", ..." if len(names) > 8 else "")
        raise _Corrupt(f"not a fastgrad model file (no 'format' entry; it holds {shown or 'nothing'})")
    fmt = _entry(data, "format")
    if fmt.shape != () or fmt.dtype.kind != "U" or str(fmt) != FORMAT:
        raise _Corrupt(f"not a fastgrad model file (its 'format' entry is {_shown(fmt)}, not {FORMAT!r})")
    version = _entry(data, "version") if "version" in names else None
    if version is None or version.shape != () or version.dtype.kind not in "iu":
        raise _Corrupt(f"the 'version' entry is {'missing' if version is None else _shown(version)}, "
                       "expected an integer")
    if int(version) > VERSION:
        raise _Corrupt(f"written in {FORMAT} format version {int(version)}, newer than this fastgrad "
                       f"reads (up to {VERSION}); upgrade fastgrad to load it")
    if int(version) < 1:
        raise _Corrupt(f"the 'version' entry is {int(version)}, expected 1 to {VERSION}")
    missing = [k for k in _HEADER if k not in names]
    if missing:
        raise _Corrupt(f"entries missing: {', '.join(repr(k) for k in missing)}")
    return {name: _entry(data, name) for name in names}


def _entry(data: "np.lib.npyio.NpzFile", name: str) -> np.ndarray:
    try:
        a = data[name]
    except ValueError as e:
        if "allow_pickle" in str(e):  # NumPy refuses object arrays (pickles) under allow_pickle=False
            raise _Corrupt(f"entry {name!r} holds Python objects (a pickle), which fastgrad never "
                           "writes and will not unpickle") from None
        raise _Corrupt(f"entry {name!r} is damaged ({_reason(e)})") from None
    except (EOFError, OSError, zipfile.BadZipFile, zlib.error, MemoryError) as e:
        raise _Corrupt(f"entry {name!r} is damaged ({_reason(e)})") from None
    if not isinstance(a, np.ndarray):  # a zip member that is not an .npy comes back as bytes
        raise _Corrupt(f"entry {name!r} is not a NumPy array")
    return a


def _shown(a: np.ndarray) -> str:
    if a.size <= 4:
        return f"{a.tolist()!r} ({a.dtype}, shape {a.shape})"
    return f"an array of dtype {a.dtype} and shape {a.shape}"


def _text(entries: Dict[str, np.ndarray], name: str, allowed: Tuple[str, ...]) -> str:
    a = entries[name]
    if a.shape != () or a.dtype.kind != "U" or str(a) not in allowed:
        raise _Corrupt(f"the {name!r} entry is {_shown(a)}, expected one of {list(allowed)}")
    return str(a)


def _model_from(entries: Dict[str, np.ndarray]) -> Model:
    kind = _text(entries, "model", ("Sequential", "Dense"))
    dtype = np.dtype(_text(entries, "dtype", ("float32", "float64")))
    units, acts, biases = entries["units"], entries["activation"], entries["use_bias"]
    if units.ndim != 1 or units.size == 0 or units.dtype.kind not in "iu" or (units <= 0).any():
        raise _Corrupt(f"the 'units' entry is {_shown(units)}, expected one positive int per layer")
    count = units.size
    if kind == "Dense" and count != 1:
        raise _Corrupt(f"a 'Dense' model with {count} layers in 'units'")
    if acts.shape != (count,) or acts.dtype.kind != "U":
        raise _Corrupt(f"the 'activation' entry is {_shown(acts)}, expected {count} string(s), one per layer")
    for i, a in enumerate(acts.tolist()):
        if a not in ACTIVATIONS:
            raise _Corrupt(f"layer {i}: unknown activation {a!r} (expected one of {sorted(ACTIVATIONS)})")
    if biases.shape != (count,) or biases.dtype != np.bool_:
        raise _Corrupt(f"the 'use_bias' entry is {_shown(biases)}, expected {count} bool(s), one per layer")

    # the weights: exactly weight_0 .. weight_{need-1}, shapes chained layer to layer
    need = int(count + biases.sum())
    held = sorted((k for k in entries if k.startswith("weight_")), key=_weight_index)
    if held != [f"weight_{i}" for i in range(need)]:
        raise _Corrupt(f"{count} layer(s) with use_bias {biases.tolist()} need {need} weight entries "
                       f"(weight_0 to weight_{need - 1}), the file holds {len(held)}: {', '.join(held) or 'none'}")
    unknown = [k for k in entries if k not in _HEADER and not k.startswith(("weight_", _EXTRA))]
    if unknown:
        raise _Corrupt(f"unexpected entries: {', '.join(repr(k) for k in unknown)}")
    layers, pos = [], 0
    width = None
    for i in range(count):
        layer = Dense(int(units[i]), str(acts[i]), bool(biases[i]), dtype=dtype.name)
        kernel = _weight(entries, pos, dtype, f"layer {i} kernel")
        if kernel.ndim != 2 or kernel.shape[1] != layer.units or kernel.shape[0] == 0 or (
                width is not None and kernel.shape[0] != width):
            want = f"({'input_dim' if width is None else width}, {layer.units})"
            raise _Corrupt(f"weight_{pos} (layer {i} kernel): expected shape {want}, got {kernel.shape}")
        layer.kernel = kernel
        pos += 1
        if layer.use_bias:
            bias = _weight(entries, pos, dtype, f"layer {i} bias")
            if bias.shape != (layer.units,):
                raise _Corrupt(f"weight_{pos} (layer {i} bias): expected shape ({layer.units},), got {bias.shape}")
            layer.bias = bias
            pos += 1
        width = layer.units
        layers.append(layer)
    # assigned directly, not by set_weights, which refuses non-finite weights: a saved model that
    # diverged comes back as it was saved
    check_params(layers)
    return layers[0] if kind == "Dense" else Sequential(layers)


def _weight_index(name: str) -> int:
    tail = name[len("weight_"):]
    return int(tail) if tail.isdigit() and tail == str(int(tail)) else -1


def _weight(entries: Dict[str, np.ndarray], pos: int, dtype: np.dtype, what: str) -> np.ndarray:
    a = entries[f"weight_{pos}"]
    if a.dtype.kind != "f" or a.dtype.itemsize != dtype.itemsize:
        raise _Corrupt(f"weight_{pos} ({what}): expected {dtype.name} (the file's dtype), got {a.dtype}")
    # native byte order, C order, aligned and writeable: what the kernels take (the same values,
    # so the same bits, whatever order the file stored them in)
    return np.require(a.astype(dtype, copy=False), requirements=["C", "A", "W", "O"])


def _extra_from(entries: Dict[str, np.ndarray]) -> Dict[str, ExtraValue]:
    extra: Dict[str, ExtraValue] = {}
    for key, a in entries.items():
        if not key.startswith(_EXTRA):
            continue
        name = key[len(_EXTRA):]
        if a.dtype.kind == "U":
            if a.ndim > 1:
                raise _Corrupt(f"entry {key!r}: a string array of shape {a.shape}, expected a str or a list of str")
            extra[name] = str(a[()]) if a.ndim == 0 else [str(s) for s in a.tolist()]
        elif a.dtype.kind in "biufc":
            extra[name] = a[()] if a.ndim == 0 else a
        else:
            raise _Corrupt(f"entry {key!r}: dtype {a.dtype}, expected strings or numbers")
    return extra


def _fspath(path: Any) -> Union[str, bytes]:
    try:
        return os.fspath(path)
    except TypeError:
        raise TypeError(f"path: expected a str or os.PathLike, got {type(path).__name__}") from None
