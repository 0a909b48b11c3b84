"""``fastgrad train`` judges its run: validation rows (--validation-split, --validation), the loss
and R2 in the target's own units, the notes for a model no better than the mean and for a loss
that ended far above its start, and the native loop under the progress bar.

Every command runs in-process through ``fastgrad.cli.main``, as the program runs it.
"""

from __future__ import annotations

import csv
import io
import math
import re
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest

import fastgrad as fg
from fastgrad import cli
from fastgrad import io as fgio
from fastgrad.cli import judge
from fastgrad.data import e6_data

PRINT_RTOL = 5e-6  # the summary prints 6 significant digits
# a loss in the target's units against one computed by hand from unscaled predictions: the
# printing, and the target rounded to float32 in [0, 1] (half an ulp, 3e-8) before the squares
UNITS_RTOL = 1e-5
ISSUE_VARIANCE = 5929.88  # the variance of the diabetes target, as the issue quotes it
ISSUE_CMD = ["--target", "target", "--layers", "16:relu,1", "--lr", ".01", "--batch-size", "32"]


def write_csv(path: Path, header: List[str], rows: np.ndarray) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for row in rows:
            w.writerow([repr(float(v)) for v in row])
    return path


@pytest.fixture
def diabetes(tmp_path) -> Path:
    """scikit-learn's diabetes data as a user writes it: its feature names and 'target'."""
    datasets = pytest.importorskip("sklearn.datasets")
    d = datasets.load_diabetes()
    return write_csv(tmp_path / "diabetes.csv", list(d.feature_names) + ["target"],
                     np.column_stack([d.data, d.target]))


def e6_csv(tmp_path: Path) -> Path:
    x, y = e6_data()
    return write_csv(tmp_path / "e6.csv", ["x1", "x2", "x3", "y"], np.column_stack([x, y]))


def summary(stdout: str) -> Dict[str, str]:
    """The summary's 'label: value' lines (the first of each label)."""
    found: Dict[str, str] = {}
    for m in re.finditer(r"^([A-Za-z0-9 ]+):\s+(.*)$", stdout, flags=re.M):
        found.setdefault(m.group(1), m.group(2))
    return found


def number(text: str) -> float:
    return float(text.split()[0])


def notes(stdout: str) -> List[str]:
    return re.findall(r"^note: (.*)$", stdout, flags=re.M)


def train(capsys, *args: str, status: int = 0) -> str:
    got = cli.main(["train", *args, "--no-progress"])
    captured = capsys.readouterr()
    assert got == status, captured
    return captured.out


# ---- the notes -----------------------------------------------------------------------------------


def test_diabetes_is_no_better_than_the_mean_and_says_so(diabetes, capsys):
    out = train(capsys, str(diabetes), *ISSUE_CMD)
    s = summary(out)
    loss = number(s["final loss"])
    assert loss == pytest.approx(ISSUE_VARIANCE, rel=1e-3)  # the net learned the mean
    assert "in the units of 'target'" in s["final loss"]
    assert number(s["R2"]) < judge.MEAN_R2
    [note] = notes(out)
    assert note.startswith("the model is no better than predicting the mean: R2 ")
    assert f"(below {judge.MEAN_R2:g})" in note and "--normalize minmax" in note and "--lr" in note
    assert "predicting the mean of 'target' everywhere scores a loss of 5929.88" in note

    # the advice works: scaled, the same net fits, and the loss is still in the target's units
    scaled = train(capsys, str(diabetes), *ISSUE_CMD, "--normalize", "minmax")
    assert notes(scaled) == []
    assert number(summary(scaled)["R2"]) > 0.3
    assert 1000 < number(summary(scaled)["final loss"]) < ISSUE_VARIANCE


def test_a_loss_that_ends_far_above_its_start_says_so(diabetes, capsys):
    out = train(capsys, str(diabetes), "--target", "target", "--layers", "16:relu,1", "--lr", "1",
                "--batch-size", "32", "--stop", "max-steps=300")
    s = summary(out)
    assert s["stopped by"].startswith("max_steps")  # no divergence, no warning: only the note says it
    final = number(s["final loss"])
    start = float(re.search(r"; (\S+) at the initial weights", s["final loss"]).group(1))
    assert math.isfinite(final) and final > judge.BLOWUP_FACTOR * start
    [note] = notes(out)
    assert note.startswith("the loss ended far above where it started: ")
    assert "a smaller --lr" in note and "--normalize minmax" in note


def test_no_note_for_a_good_fit(tmp_path, capsys):
    out = train(capsys, str(e6_csv(tmp_path)), "--target", "y", "--lr", "0.1", "--stop", "max-steps=500")
    assert number(summary(out)["R2"]) > 0.999
    assert notes(out) == []


# ---- validation ---------------------------------------------------------------------------------


def held_out(n: int, fraction: float, seed: int):
    """The rows --help says --validation-split holds out, and the others, each in file order."""
    order = np.random.default_rng(seed).permutation(n)
    k = math.ceil(fraction * n)
    return np.sort(order[k:]), np.sort(order[:k])


def test_validation_split_reports_evaluate_on_the_held_out_rows(diabetes, tmp_path, capsys):
    model_file = tmp_path / "m.npz"
    out = train(capsys, str(diabetes), *ISSUE_CMD, "--normalize", "minmax", "--validation-split", "0.2",
                "--seed", "3", "--stop", "max-steps=2000", "--save", str(model_file))
    s = summary(out)
    table = np.loadtxt(diabetes, delimiter=",", skiprows=1)
    rows, val_rows = held_out(len(table), 0.2, 3)
    assert f"{len(val_rows)} of the rows held out for validation" in out
    assert f"on {len(rows)} rows x 10 features" in out
    # by hand: the saved model on the held-out rows, scaled by the training rows' ranges, its
    # predictions put back in the target's units
    model = fgio.load(model_file)
    x, y = table[rows, :10], table[rows, 10]
    lo, hi, ylo, yhi = x.min(0), x.max(0), y.min(), y.max()
    for label, r2_label, idx in (("val loss", "val R2", val_rows), ("final loss", "R2", rows)):
        pred = model((table[idx, :10] - lo) / (hi - lo))[:, 0] * (yhi - ylo) + ylo
        mse = float(np.mean((pred - table[idx, 10]) ** 2))
        assert number(s[label]) == pytest.approx(mse, rel=UNITS_RTOL), label
        r2 = 1 - mse / np.var(table[idx, 10])
        assert number(s[r2_label]) == pytest.approx(r2, abs=1e-4), r2_label


def test_validation_split_equals_fg_evaluate_unscaled(diabetes, tmp_path, capsys):
    model_file = tmp_path / "m.npz"
    out = train(capsys, str(diabetes), *ISSUE_CMD, "--validation-split", "0.1", "--save", str(model_file))
    table = np.loadtxt(diabetes, delimiter=",", skiprows=1)
    rows, val_rows = held_out(len(table), 0.1, 0)
    model = fgio.load(model_file)
    want = fg.evaluate(model, table[val_rows, :10], table[val_rows, 10])
    s = summary(out)
    assert number(s["val loss"]) == pytest.approx(want["mse"], rel=PRINT_RTOL)
    assert s["val R2"] == f"{want['r2']:.4f}"
    again = train(capsys, str(diabetes), *ISSUE_CMD, "--validation-split", "0.1")
    assert summary(again)["val loss"] == s["val loss"]  # the same --seed, the same rows


def test_validation_file_is_the_split_by_hand(diabetes, tmp_path, capsys):
    table = np.loadtxt(diabetes, delimiter=",", skiprows=1)
    with open(diabetes) as fh:
        header = next(csv.reader(fh))
    rows, val_rows = held_out(len(table), 0.25, 5)
    train_file = write_csv(tmp_path / "train.csv", header, table[rows])
    # the validation file's columns in another order, and one more: taken by name
    val_file = write_csv(tmp_path / "val.csv", ["id"] + header[::-1],
                         np.column_stack([val_rows, table[val_rows][:, ::-1]]))
    args = [*ISSUE_CMD, "--normalize", "minmax", "--seed", "5", "--stop", "max-steps=500"]
    split = summary(train(capsys, str(diabetes), *args, "--validation-split", "0.25"))
    by_file = summary(train(capsys, str(train_file), *args, "--validation", str(val_file)))
    for label in ("final loss", "R2", "val loss", "val R2"):
        assert by_file[label] == split[label], label


def test_validation_bad_input_is_one_line(diabetes, tmp_path, capsys):
    def refused(*args: str, needles=()) -> None:
        got = cli.main(["train", str(diabetes), "--target", "target", "--no-progress", *args])
        captured = capsys.readouterr()
        assert got == 2 and captured.out == "", captured
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("fastgrad train: error: "), captured.err
        for needle in needles:
            assert needle in lines[0], (needle, lines[0])

    table = np.loadtxt(diabetes, delimiter=",", skiprows=1)
    with open(diabetes) as fh:
        header = next(csv.reader(fh))
    partial = write_csv(tmp_path / "partial.csv", header[1:], table[:5, 1:])
    refused("--validation", str(partial), needles=["--validation", "partial.csv", "no column 'age'"])
    refused("--validation", str(tmp_path / "none.csv"), needles=["none.csv", "no such file"])
    with pytest.raises(SystemExit) as e:  # argparse's own errors leave main by SystemExit(2)
        cli.main(["train", str(diabetes), "--target", "target", "--validation", str(partial),
                  "--validation-split", "0.1"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "not allowed with" in err, err
    refused("--validation-split", "0.999", needles=["--validation-split", "none to train on"])
    refused("--validation-split", "0.5", "--batch-size", "300", needles=["--batch-size", "221 training rows"])
    refused("--validation", str(diabetes), "--save", str(diabetes), needles=["--save", "input file"])


def test_argparse_errors_are_one_line(capsys):
    for bad in ("0", "1", "-0.1", "half", "nan"):
        with pytest.raises(SystemExit) as e:
            cli.main(["train", "d.csv", "--target", "y", "--validation-split", bad])
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.count("\n") == 1 and "--validation-split" in err, err


# ---- the progress bar keeps the native loop -----------------------------------------------------


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("terminal, flag", [(True, []), (True, ["--no-progress"]), (False, [])])
def test_train_runs_the_native_loop_with_or_without_the_bar(tmp_path, monkeypatch, capsys, terminal, flag):
    seen = []
    real = fg.fit

    def spy(*args, **kwargs):
        seen.append(kwargs)
        result = real(*args, **kwargs)
        seen.append(result)
        return result

    monkeypatch.setattr(fg, "fit", spy)
    if terminal:
        monkeypatch.setattr(sys, "stderr", Terminal())
    data = e6_csv(tmp_path)
    assert cli.main(["train", str(data), "--target", "y", "--stop", "max-steps=500", "--validation-split", "0.2",
                     *flag]) == 0
    kwargs, result = seen
    assert kwargs["progress"] is (terminal and not flag)
    assert "callbacks" not in kwargs and kwargs.get("loop", "auto") == "auto"
    assert result.loop == "native"
    assert "native loop" in capsys.readouterr().out
    assert result.history.val_loss is not None and result.history.val_steps[-1] == result.steps
