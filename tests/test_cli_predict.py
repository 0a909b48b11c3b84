"""``fastgrad predict``: a model saved by ``train --save`` applied to a CSV file, against the API
doing the same by hand (fastgrad.io.load, the scaling applied and undone with NumPy).

Every command runs in-process through ``fastgrad.cli.main``, as the program runs it.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import List, Tuple

import numpy as np
import pytest

import fastgrad as fg
from fastgrad import cli
from fastgrad import io as fgio
from fastgrad.data import e6_data

TRAIN = ["--layers", "8:relu,1", "--lr", "0.05", "--batch-size", "4", "--stop", "max-steps=300", "--no-progress"]


def write_csv(path: Path, header: List[str], rows: np.ndarray) -> Path:
    """Numbers as Python writes them (repr), so the file holds them exactly."""
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for row in rows:
            w.writerow([repr(float(v)) for v in row])
    return path


def read_back(text: str) -> Tuple[List[str], List[List[str]]]:
    rows = list(csv.reader(io.StringIO(text)))
    return rows[0], rows[1:]


def e6_csv(tmp_path: Path) -> Path:
    x, y = e6_data()
    return write_csv(tmp_path / "e6.csv", ["x1", "x2", "x3", "y"], np.column_stack([x, y]))


def one_line_error(capsys, status: int, *needles: str) -> str:
    """Exit status 2 and one line 'fastgrad predict: error: ...' on stderr naming ``needles``; no stdout."""
    captured = capsys.readouterr()
    assert status == 2, captured
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastgrad predict: error: "), captured.err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert captured.out == ""
    return lines[0]


@pytest.mark.parametrize("normalize, dtype", [("minmax", "float32"), ("none", "float32"), ("minmax", "float64")])
def test_predict_on_the_training_csv_reproduces_the_api_in_y_units(tmp_path, capsys, normalize, dtype):
    data = e6_csv(tmp_path)
    model_file = tmp_path / "m.npz"
    assert cli.main(["train", str(data), "--target", "y", *TRAIN, "--normalize", normalize, "--dtype", dtype,
                     "--save", str(model_file)]) == 0
    capsys.readouterr()
    assert cli.main(["predict", str(model_file), str(data)]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    header, rows = read_back(captured.out)
    assert header == ["x1", "x2", "x3", "y", "y_predicted"]
    with open(data, newline="") as fh:
        assert [r[:4] for r in rows] == list(csv.reader(fh))[1:]  # the rows as the file has them

    # the same by hand: the model file through the API, the ranges from the data itself
    model = fgio.load(model_file)
    assert isinstance(model, fg.Sequential) and model.dtype == np.dtype(dtype)
    table = np.loadtxt(data, delimiter=",", skiprows=1)
    x, y = table[:, :3], table[:, 3]
    got = np.array([float(r[4]) for r in rows])
    if normalize == "minmax":
        lo, hi = x.min(0), x.max(0)
        pred = model((x - lo) / (hi - lo))[:, 0].astype(np.float64) * (y.max() - y.min()) + y.min()
        np.testing.assert_array_equal(got, pred)  # the same arithmetic, the same bits
    else:
        pred = model(x)[:, 0]
        np.testing.assert_array_equal(got.astype(pred.dtype), pred)  # each the shortest text of its float32
        assert all(float(r[4]) == float(str(p)) for r, p in zip(rows, pred))
    assert abs(got - y).max() < 0.5 * (y.max() - y.min())  # in y's units, not [0, 1]

    extra = fgio.read_extra(model_file)
    assert extra["features"] == ["x1", "x2", "x3"] and extra["targets"] == ["y"]
    assert extra["normalize"] == normalize
    if normalize == "minmax":
        np.testing.assert_array_equal(extra["x_min"], x.min(0))
        np.testing.assert_array_equal(extra["y_max"], [y.max()])


def test_predict_takes_the_features_by_name_and_keeps_other_columns(tmp_path, capsys):
    data = e6_csv(tmp_path)
    model_file = tmp_path / "m.npz"
    assert cli.main(["train", str(data), "--target", "y", *TRAIN, "--normalize", "minmax",
                     "--save", str(model_file)]) == 0
    capsys.readouterr()
    assert cli.main(["predict", str(model_file), str(data)]) == 0
    _, rows = read_back(capsys.readouterr().out)
    want = [r[4] for r in rows]
    # new data: the features in another order, an id column, no target, integers written as such
    table = np.loadtxt(data, delimiter=",", skiprows=1)
    other = tmp_path / "new.csv"
    with open(other, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "x3", "x1", "x2"])
        for i, r in enumerate(table):
            w.writerow([str(1000 + i)] + [repr(float(r[j])) for j in (2, 0, 1)])
    out_file = tmp_path / "out.csv"
    assert cli.main(["predict", str(model_file), str(other), "--out", str(out_file)]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out.strip() == f"wrote {len(table)} rows with 'y_predicted' to {out_file}"
    header, rows = read_back(out_file.read_text())
    assert header == ["id", "x3", "x1", "x2", "y_predicted"]
    assert [r[0] for r in rows] == [str(1000 + i) for i in range(len(table))]
    assert [r[4] for r in rows] == want


def test_predict_a_missing_feature_is_one_line(tmp_path, capsys):
    data = e6_csv(tmp_path)
    model_file = tmp_path / "m.npz"
    assert cli.main(["train", str(data), "--target", "y", *TRAIN, "--save", str(model_file)]) == 0
    capsys.readouterr()
    table = np.loadtxt(data, delimiter=",", skiprows=1)
    partial = write_csv(tmp_path / "partial.csv", ["x1", "x3", "y"], table[:, [0, 2, 3]])
    out_file = tmp_path / "out.csv"
    status = cli.main(["predict", str(model_file), str(partial), "--out", str(out_file)])
    one_line_error(capsys, status, "partial.csv", "no column 'x2'", "x1, x2, x3")
    assert not out_file.exists()


def test_predict_bad_input_is_one_line(tmp_path, capsys):
    data = e6_csv(tmp_path)
    model_file = tmp_path / "m.npz"
    assert cli.main(["train", str(data), "--target", "y", *TRAIN, "--save", str(model_file)]) == 0
    capsys.readouterr()
    one_line_error(capsys, cli.main(["predict", str(tmp_path / "none.npz"), str(data)]), "none.npz", "no such file")
    one_line_error(capsys, cli.main(["predict", str(data), str(data)]), "e6.csv", "not a fastgrad model file")
    bare = tmp_path / "bare.npz"  # the API's save, without the command's column names
    fgio.save(fgio.load(model_file), bare)
    one_line_error(capsys, cli.main(["predict", str(bare), str(data)]), "bare.npz", "train --save")
    for target in (data, model_file):
        one_line_error(capsys, cli.main(["predict", str(model_file), str(data), "--out", str(target)]),
                       "--out", "input file")
    one_line_error(capsys, cli.main(["predict", str(model_file), str(tmp_path / "no.csv")]), "no such file")
    taken = write_csv(tmp_path / "taken.csv", ["x1", "x2", "x3", "y_predicted"], np.ones((2, 4)))
    one_line_error(capsys, cli.main(["predict", str(model_file), str(taken)]), "'y_predicted'", "already")
    assert model_file.stat().st_size > 0 and data.stat().st_size > 0


def test_predict_value_too_large_for_the_model_dtype(tmp_path, capsys):
    data = e6_csv(tmp_path)
    model_file = tmp_path / "m.npz"
    assert cli.main(["train", str(data), "--target", "y", *TRAIN, "--save", str(model_file)]) == 0
    capsys.readouterr()
    huge = write_csv(tmp_path / "huge.csv", ["x1", "x2", "x3"], np.array([[1.0, 1e39, 0.0]]))
    one_line_error(capsys, cli.main(["predict", str(model_file), str(huge)]), "'x2'", "float32")


def test_predict_help_names_the_column(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["predict", "--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert re.search(r"usage: fastgrad predict .*MODEL\.npz DATA\.csv", text)
    assert "TARGET_predicted" in text and "target's own units" in text
