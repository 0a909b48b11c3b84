"""fastgrad.io: save and load give the same bits back; foreign, corrupt, newer and malicious
files are refused with a ValueError naming the path, and nothing in them is unpickled."""

from __future__ import annotations

import io
import os
import pathlib
import zipfile

import numpy as np
import pytest

import fastgrad as fg
from fastgrad import io as fio

# ---- helpers -------------------------------------------------------------------------------------


def _build(spec, dtype: str, inputs: int = 3, single: bool = False, seed: int = 0):
    """spec: [(units, activation, use_bias), ...]; biases made non-zero so they are tested too."""
    layers = [fg.Dense(u, a, use_bias=b, dtype=dtype) for u, a, b in spec]
    model = layers[0] if single else fg.Sequential(layers, seed=seed)
    model.build(inputs)
    rng = np.random.default_rng(seed + 1)
    model.set_weights([w if w.ndim == 2 else rng.normal(size=w.shape) for w in model.get_weights()])
    return model


def _layers(model):
    return model.layers if isinstance(model, fg.Sequential) else [model]


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _entries(path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _write(path, entries: dict) -> None:
    with open(path, "wb") as fh:  # exactly this name (np.savez would add .npz to a str)
        np.savez(fh, **entries)


def _saved(tmp_path, name="m.npz", **kw):
    model = _build([(4, "relu", True), (2, "linear", True)], "float32")
    path = tmp_path / name
    fio.save(model, path, **kw)
    return model, path


def _rewritten(tmp_path, change: dict, drop=()) -> pathlib.Path:
    """A valid file with some entries changed or dropped."""
    _, path = _saved(tmp_path)
    entries = _entries(path)
    entries.update(change)
    for k in drop:
        del entries[k]
    bad = tmp_path / "bad.npz"
    _write(bad, entries)
    return bad


class _MakesMarker:
    """Unpickling this creates the directory ``marker``: proof that code from the file ran."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


# ---- round trips ---------------------------------------------------------------------------------

SPECS = {
    "1 linear": [(1, "linear", True)],
    "1 relu, no bias": [(3, "relu", False)],
    "2 relu-linear": [(5, "relu", True), (1, "linear", True)],
    "2 no bias last": [(4, "relu", True), (2, "linear", False)],
    "3 mixed": [(6, "relu", False), (4, "relu", True), (3, "linear", True)],
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", list(SPECS))
def test_round_trip_gives_the_same_bits(tmp_path, name, dtype):
    model = _build(SPECS[name], dtype)
    path = tmp_path / "m.npz"
    fio.save(model, path)
    back = fio.load(path)
    assert type(back) is fg.Sequential and back.dtype == model.dtype
    assert [(la.units, la.activation, la.use_bias, la.input_dim, la.dtype) for la in _layers(back)] == \
           [(la.units, la.activation, la.use_bias, la.input_dim, la.dtype) for la in _layers(model)]
    assert all(_same_bits(a, b) for a, b in zip(back.get_weights(), model.get_weights()))
    assert len(back.get_weights()) == len(model.get_weights())
    x = np.random.default_rng(9).normal(size=(11, 3))
    assert _same_bits(back(x), model(x))
    assert fio.read_extra(path) == {}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("use_bias", [True, False])
def test_a_dense_comes_back_as_a_dense(tmp_path, dtype, use_bias):
    layer = _build([(2, "relu", use_bias)], dtype, single=True)
    fio.save(layer, tmp_path / "d.npz")
    back = fio.load(tmp_path / "d.npz")
    assert type(back) is fg.Dense
    assert (back.units, back.activation, back.use_bias, back.dtype) == (2, "relu", use_bias, layer.dtype)
    assert all(_same_bits(a, b) for a, b in zip(back.get_weights(), layer.get_weights()))
    assert (back.bias is None) == (not use_bias)


def test_non_finite_and_special_weights_are_kept_bit_for_bit(tmp_path):
    model = _build([(3, "linear", True), (2, "linear", True)], "float64")
    k = model.layers[0].kernel  # assigned in place: set_weights refuses non-finite values
    k[0, 0], k[0, 1], k[0, 2] = np.inf, -np.inf, -0.0
    k[1, 0] = np.frombuffer(np.uint64(0x7FF8_0000_DEAD_BEEF).tobytes(), np.float64)[0]  # a NaN with a payload
    k[1, 1] = 5e-324  # the smallest subnormal
    fio.save(model, tmp_path / "m.npz")
    back = fio.load(tmp_path / "m.npz")
    assert all(_same_bits(a, b) for a, b in zip(back.get_weights(), model.get_weights()))


def test_a_loaded_model_trains_as_the_original_does(tmp_path):
    model = _build([(5, "relu", True), (1, "linear", True)], "float32")
    fio.save(model, tmp_path / "m.npz")
    back = fio.load(tmp_path / "m.npz")
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(30, 3)), rng.normal(size=30)
    kw = dict(optimizer=fg.SGD(0.05), batch_size=4, stop=[fg.stop.MaxSteps(20)], seed=3)
    a, b = fg.fit(model, x, y, **kw), fg.fit(back, x, y, **kw)
    assert _same_bits(a.history.loss, b.history.loss)
    assert all(_same_bits(u, v) for u, v in zip(model.get_weights(), back.get_weights()))


def test_saved_to_exactly_the_path_given(tmp_path):
    model = _build([(1, "linear", True)], "float32")
    fio.save(model, str(tmp_path / "model.bin"))  # a str: np.savez alone would write model.bin.npz
    fio.save(model, tmp_path / "model")  # a pathlib.Path, no suffix
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "model.bin"]
    assert type(fio.load(str(tmp_path / "model.bin"))) is fg.Sequential


def test_saving_again_replaces_the_file(tmp_path):
    path = tmp_path / "m.npz"
    fio.save(_build([(4, "relu", True), (2, "linear", True)], "float64"), path)
    small = _build([(1, "linear", False)], "float32")
    fio.save(small, path)
    back = fio.load(path)
    assert len(back.layers) == 1 and back.dtype == np.float32


def test_the_file_is_plain_numpy_without_pickles(tmp_path):
    _, path = _saved(tmp_path, extra={"features": ["a", "b", "c"], "target": "y"})
    entries = _entries(path)  # allow_pickle=False: would raise on any object array
    assert str(entries["format"]) == "fastgrad-model" and int(entries["version"]) == 1
    assert entries["units"].tolist() == [4, 2] and entries["activation"].tolist() == ["relu", "linear"]
    assert str(entries["dtype"]) == "float32" and str(entries["model"]) == "Sequential"
    assert sorted(k for k in entries if k.startswith("weight_")) == ["weight_0", "weight_1", "weight_2", "weight_3"]
    assert all(a.dtype.kind != "O" for a in entries.values())


# ---- what cannot be saved ------------------------------------------------------------------------

@pytest.mark.parametrize("model", [
    fg.Dense(2),
    fg.Sequential([fg.Dense(3, "relu"), fg.Dense(1)]),
])
def test_an_unbuilt_model_cannot_be_saved(tmp_path, model):
    with pytest.raises(ValueError, match=r"^model: it is not built.*build it.*or call it once"):
        fio.save(model, tmp_path / "m.npz")
    assert not (tmp_path / "m.npz").exists()


def test_not_a_model_is_a_type_error(tmp_path):
    with pytest.raises(TypeError, match=r"^model: expected a fastgrad.Sequential or fastgrad.Dense"):
        fio.save([np.ones((2, 2))], tmp_path / "m.npz")
    with pytest.raises(TypeError, match=r"^path: expected a str or os.PathLike"):
        fio.save(_build([(1, "linear", True)], "float32"), 3)


# ---- extra: the CLI's metadata -------------------------------------------------------------------

def test_cli_metadata_round_trips(tmp_path):
    extra = {
        "features": ["age", "sex", "bmi", "blood pressure", "é ü 名"],
        "target": "disease progression",
        "x_min": np.array([19.0, 1.0, 18.0, 62.0, 0.5]),
        "x_max": np.array([79.0, 2.0, 42.2, 133.0, 1.5]),
        "y_min": np.float64(25.0),  # a NumPy scalar, as the CLI's scaling holds it
        "y_max": 346.0,  # a Python float
        "counts": np.arange(6, dtype=np.int32).reshape(2, 3),
        "flags": np.array([True, False]),
        "none": [],
        "layers.spec-v1": "16:relu,1",
    }
    model, path = _saved(tmp_path, extra=extra)
    back = fio.read_extra(path)
    assert set(back) == set(extra)
    assert back["features"] == extra["features"] and type(back["features"]) is list
    assert back["target"] == extra["target"] and type(back["target"]) is str
    assert back["layers.spec-v1"] == "16:relu,1" and back["none"] == []
    for k in ("x_min", "x_max", "counts", "flags"):
        assert _same_bits(back[k], extra[k])
    assert back["y_min"] == 25.0 and back["y_min"].dtype == np.float64 and isinstance(back["y_min"], float)
    assert back["y_max"] == 346.0 and isinstance(back["y_max"], float)
    # the model beside it is untouched by the extra entries
    assert all(_same_bits(a, b) for a, b in zip(fio.load(path).get_weights(), model.get_weights()))


@pytest.mark.parametrize("extra, error, match", [
    ({"ok": object()}, TypeError, r"^extra\['ok'\]: expected a str, a list of str or numbers"),
    ({"ok": [1, "a"]}, TypeError, r"^extra\['ok'\]: expected a str"),
    ({"ok": b"bytes"}, TypeError, r"^extra\['ok'\]: expected a str"),
    ({"ok": np.array([["a", "b"]])}, ValueError, r"^extra\['ok'\]: expected a str or a 1-D list of str"),
    ({"ok": "a\0b"}, ValueError, r"^extra\['ok'\]: strings with NUL characters"),
    ({"a/b": "x"}, ValueError, r"^extra: names are made of letters"),
    ({"": "x"}, ValueError, r"^extra: names are made of letters"),
    ({1: "x"}, ValueError, r"^extra: names are made of letters"),
    (["features"], TypeError, r"^extra: expected a dict"),
])
def test_bad_extra_is_refused_and_the_file_left_as_it_was(tmp_path, extra, error, match):
    model, path = _saved(tmp_path)
    before = path.read_bytes()
    with pytest.raises(error, match=match):
        fio.save(model, path, extra=extra)
    assert path.read_bytes() == before


# ---- files that are not ours, or damaged, or newer -----------------------------------------------

def _refused(path, match: str) -> None:
    """load and read_extra both refuse ``path`` with a ValueError naming it."""
    for read in (fio.load, fio.read_extra):
        with pytest.raises(ValueError, match=r"^'[^']*" + str(pathlib.Path(path).name) + "': .*" + match):
            read(path)


def test_an_object_array_is_refused_without_being_unpickled(tmp_path):
    # the control: this payload runs when NumPy is allowed to unpickle it
    control = tmp_path / "control-marker"
    np.savez(tmp_path / "control.npz", weights=np.array([_MakesMarker(control)], dtype=object))
    with np.load(tmp_path / "control.npz", allow_pickle=True) as z:
        z["weights"]
    assert control.exists()

    marker = tmp_path / "marker"
    trap = np.array([_MakesMarker(marker)], dtype=object)
    # a foreign file of nothing but the object array
    np.savez(tmp_path / "foreign.npz", weights=trap)
    _refused(tmp_path / "foreign.npz", r"not a fastgrad model file \(no 'format' entry")
    # a fastgrad file with a weight, an extra entry or an entry of its own as the object array
    for key in ("weight_0", "extra/features", "weights"):
        _refused(_rewritten(tmp_path, {key: trap}), rf"entry '{key}' holds Python objects \(a pickle\)")
    # the object array as the format entry itself
    _refused(_rewritten(tmp_path, {"format": trap}), r"entry 'format' holds Python objects")
    assert not marker.exists()


def test_a_pickle_file_is_refused_without_being_unpickled(tmp_path):
    import pickle

    marker = tmp_path / "marker"
    (tmp_path / "m.pkl").write_bytes(pickle.dumps(_MakesMarker(marker)))
    _refused(tmp_path / "m.pkl", r"not a fastgrad model file \(not an .npz archive\)")
    assert not marker.exists()


@pytest.mark.parametrize("cut", [1, 4, 30, 200, "half", "last byte"])
def test_a_truncated_file_is_refused(tmp_path, cut):
    _, path = _saved(tmp_path)
    data = path.read_bytes()
    keep = {"half": len(data) // 2, "last byte": len(data) - 1}.get(cut, cut)
    short = tmp_path / "short.npz"
    short.write_bytes(data[:keep])
    _refused(short, r"not a fastgrad model file")


def test_a_damaged_weight_is_refused(tmp_path):
    model, path = _saved(tmp_path)
    data = bytearray(path.read_bytes())
    at = bytes(data).index(model.layers[0].kernel.tobytes())  # stored uncompressed
    data[at + 5] ^= 0xFF
    bad = tmp_path / "flipped.npz"
    bad.write_bytes(bytes(data))
    _refused(bad, r"entry 'weight_0' is damaged \(BadZipFile: Bad CRC-32")


@pytest.mark.parametrize("content", [
    b"",
    np.random.default_rng(0).bytes(1000),
    b"PK\x03\x04" + np.random.default_rng(1).bytes(1000),  # a zip's magic, then noise
    b"age,bmi,y\n1,2,3\n",
    b"\x93NUMPY",  # an .npy's magic
], ids=["empty", "random", "zip magic then noise", "csv", "npy magic"])
def test_a_file_that_is_not_a_model_is_refused(tmp_path, content):
    path = tmp_path / "not-a-model"
    path.write_bytes(content)
    _refused(path, r"not a fastgrad model file")


def test_an_npy_file_is_refused(tmp_path):
    with open(tmp_path / "w.npy", "wb") as fh:
        np.save(fh, np.ones(3))
    _refused(tmp_path / "w.npy", r"not a fastgrad model file \(not an .npz archive\)")


def test_a_zip_of_other_things_is_refused(tmp_path):
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as z:
        z.writestr("readme.txt", "hello")
    _refused(tmp_path / "other.zip", r"not a fastgrad model file \(no 'format' entry; it holds 'readme.txt'\)")
    with zipfile.ZipFile(tmp_path / "fake.zip", "w") as z:
        z.writestr("format", "fastgrad-model")  # not an .npy member
    _refused(tmp_path / "fake.zip", r"entry 'format' is not a NumPy array")


def test_a_newer_format_version_is_refused(tmp_path):
    bad = _rewritten(tmp_path, {"version": np.array(2, dtype=np.int64), "weight_0": np.array(["new"])})
    _refused(bad, r"written in fastgrad-model format version 2, newer than this fastgrad reads \(up to 1\)")


@pytest.mark.parametrize("change, match", [
    ({"format": np.array("keras-model")}, r"not a fastgrad model file \(its 'format' entry is 'keras-model'"),
    ({"version": np.array(0)}, r"the 'version' entry is 0, expected 1 to 1"),
    ({"version": np.array("1")}, r"the 'version' entry is '1' .*expected an integer"),
    ({"version": np.array([1])}, r"the 'version' entry is \[1\] .*expected an integer"),
    ({"model": np.array("Functional")}, r"the 'model' entry is 'Functional'"),
    ({"model": np.array("Dense")}, r"a 'Dense' model with 2 layers"),
    ({"dtype": np.array("float16")}, r"the 'dtype' entry is 'float16'"),
    ({"units": np.array([4, 0])}, r"the 'units' entry is \[4, 0\]"),
    ({"units": np.array([4.0, 2.0])}, r"the 'units' entry is \[4.0, 2.0\]"),
    ({"activation": np.array(["relu", "tanh"])}, r"layer 1: unknown activation 'tanh'"),
    ({"activation": np.array(["relu"])}, r"the 'activation' entry is \['relu'\].*expected 2 string"),
    ({"use_bias": np.array([1, 1])}, r"the 'use_bias' entry is \[1, 1\]"),
    # the layer count disagrees with the weights
    ({"units": np.array([4, 2, 1]), "activation": np.array(["relu"] * 3), "use_bias": np.array([True] * 3)},
     r"3 layer\(s\) with use_bias \[True, True, True\] need 6 weight entries .* holds 4"),
    ({"use_bias": np.array([True, False])}, r"need 3 weight entries \(weight_0 to weight_2\), the file holds 4"),
    ({"weight_4": np.ones(2, np.float32)}, r"need 4 weight entries .* holds 5"),
    # shapes and dtypes
    ({"weight_0": np.ones((3, 5), np.float32)}, r"weight_0 \(layer 0 kernel\): expected shape \(input_dim, 4\), got \(3, 5\)"),
    ({"weight_0": np.ones(4, np.float32)}, r"weight_0 \(layer 0 kernel\): expected shape \(input_dim, 4\), got \(4,\)"),
    ({"weight_0": np.ones((0, 4), np.float32)}, r"weight_0 \(layer 0 kernel\): expected shape"),
    ({"weight_1": np.ones(3, np.float32)}, r"weight_1 \(layer 0 bias\): expected shape \(4,\), got \(3,\)"),
    ({"weight_2": np.ones((3, 2), np.float32)}, r"weight_2 \(layer 1 kernel\): expected shape \(4, 2\), got \(3, 2\)"),
    ({"weight_2": np.ones((4, 2), np.float64)}, r"weight_2 \(layer 1 kernel\): expected float32 \(the file's dtype\), got float64"),
    ({"weight_3": np.ones(2, np.int32)}, r"weight_3 \(layer 1 bias\): expected float32 .*got int32"),
    ({"surprise": np.ones(1)}, r"unexpected entries: 'surprise'"),
    ({"extra/bad": np.array([[b"x"]])}, r"entry 'extra/bad': dtype \|S1, expected strings or numbers"),
    ({"extra/bad": np.array([["a"]])}, r"entry 'extra/bad': a string array of shape \(1, 1\)"),
])
def test_a_corrupt_file_is_refused_saying_what_is_wrong(tmp_path, change, match):
    _refused(_rewritten(tmp_path, change), match)


@pytest.mark.parametrize("key", ["format", "version", "model", "dtype", "units", "activation", "use_bias",
                                 "weight_0", "weight_3"])
def test_a_missing_entry_is_refused(tmp_path, key):
    bad = _rewritten(tmp_path, {}, drop=[key])
    match = {"format": r"not a fastgrad model file \(no 'format' entry",
             "version": r"the 'version' entry is missing",
             "weight_0": r"need 4 weight entries .* holds 3: weight_1, weight_2, weight_3",
             "weight_3": r"need 4 weight entries .* holds 3: weight_0, weight_1, weight_2"}.get(key, f"entries missing: '{key}'")
    _refused(bad, match)


def test_weights_in_another_byte_order_or_layout_load_as_the_same_values(tmp_path):
    model, path = _saved(tmp_path)
    k = model.layers[0].kernel
    bad = _rewritten(tmp_path, {"weight_0": np.asfortranarray(k).astype(">f4")})
    back = fio.load(bad)
    got = back.layers[0].kernel
    assert got.dtype == np.float32 and got.flags.c_contiguous and np.array_equal(got, k)
    x = np.ones((2, 3))
    assert _same_bits(back(x), model(x))


def test_a_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        fio.load(tmp_path / "nowhere.npz")
    with pytest.raises(TypeError, match=r"^path: expected a str or os.PathLike"):
        fio.load(io.BytesIO())
