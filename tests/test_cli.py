"""The ``fastgrad`` command: ``demo``, ``train`` and ``check``, each run as a user runs it
(``predict`` and ``train``'s validation have files of their own).

Every command runs in a subprocess (``python -m fastgrad ...``).  Runs that must not see an
optional library (TensorFlow, matplotlib, tqdm) go through the same ``__main__`` with the
library's entry in ``sys.modules`` set to None, which is what "not installed" looks like to
both ``import`` and ``importlib.util.find_spec``.
"""

from __future__ import annotations

import argparse
import ast
import csv
import errno
import importlib.util
import os
import re
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pytest

import fastgrad as fg
from fastgrad import cli, plotting, walkthrough
from fastgrad import io as fgio
from fastgrad.cli import common as cli_common
from fastgrad.cli import train as cli_train
from fastgrad.data import e6_data

# ---- what the output must show, and how close ------------------------------------------------
E1_WEIGHTS = [2.0, 1.5, 1.25, 1.125, 1.0625]  # the walkthrough's printed trajectory, exactly
E1_LOSSES = [2.5, 0.625, 0.15625, 0.0390625]
E1_FINAL = 0.009765625
E6_TRUTH = (3.0, 2.0, -7.0, 5.0)
NORM_RTOL = 1e-12  # a norm of the recorded weights, float64 sums in another order
RECOVERY_TOL = 0.05  # E6/E7 (and train on E6's data): each weight within 0.05 of the truth
E4_MAX_STEPS = 30  # E4 must diverge within this many steps
E5_W_TOL = 1e-3  # E5 converges to w = 1
E8_PRED_TOL = 1.0  # E8: every prediction within 1.0 of its target (targets span -472..220)
REPLAY_RTOL_F32 = 1e-5  # demo: fastgrad vs its TensorFlow replay, float32, <= 100 steps
DEMO_WALL_LIMIT_S = 60.0  # the issue: the whole demo in under a minute
TRAIN_E6_LOSS = 1e-6  # train on E6's noise-free data: the final MSE
PNG_SIZE = (round(plotting.FIGSIZE[0] * plotting.DPI), round(plotting.FIGSIZE[1] * plotting.DPI))

TIMEOUT_S = 300
HAVE_TF = importlib.util.find_spec("tensorflow") is not None
HAVE_MPL = importlib.util.find_spec("matplotlib") is not None
if os.environ.get("FASTGRAD_REQUIRE_TF") == "1" and not HAVE_TF:  # pragma: no cover - CI guard
    raise RuntimeError("FASTGRAD_REQUIRE_TF=1 but TensorFlow is not installed")
needs_mpl = pytest.mark.skipif(not HAVE_MPL, reason="needs matplotlib (the plot extra)")

# runs ``python -m fastgrad`` with the named modules made unimportable
_BLOCKED_MAIN = (
    "import runpy, sys\n"
    "for name in sys.argv[1].split(','):\n"
    "    sys.modules[name] = None\n"
    "del sys.argv[1]\n"
    "runpy.run_module('fastgrad', run_name='__main__', alter_sys=True)\n"
)


def run_cli(*args: str, block: Sequence[str] = (), cwd: Optional[Path] = None) -> subprocess.CompletedProcess:
    """``python -m fastgrad *args`` (with ``block`` unimportable); returns the finished process."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", COLUMNS="100")
    if block:
        cmd = [sys.executable, "-c", _BLOCKED_MAIN, ",".join(block), *args]
    else:
        cmd = [sys.executable, "-m", "fastgrad", *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env, timeout=TIMEOUT_S)


def sections(stdout: str) -> Dict[str, str]:
    """The demo's output cut at its '== E<k>: ...' headers: {'E1': text, ...}."""
    parts = re.split(r"^== (E\d\w*): .*$", stdout, flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def field(text: str, label: str) -> str:
    """The rest of the first line starting with ``label``."""
    m = re.search(rf"^{re.escape(label)}\s*(.*)$", text, flags=re.M)
    assert m, f"no line starting with {label!r} in:\n{text}"
    return m.group(1)


def recovered(text: str) -> List[float]:
    """(k1, k2, k3, bias) from a 'recovered: kernel = [..], bias = ..' line."""
    m = re.search(r"^recovered: kernel = \[([^\]]*)\], bias = (\S+)", text, flags=re.M)
    assert m, text
    return [float(v) for v in m.group(1).split(",")] + [float(m.group(2))]


def png_size(path: Path) -> Tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk; fails unless the file is a PNG."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def assert_one_line_error(proc: subprocess.CompletedProcess, command: str, *needles: str) -> str:
    """Exit status 2, one line 'fastgrad <command>: error: ...' on stderr, no traceback."""
    err = proc.stderr
    assert proc.returncode == 2, (proc.returncode, proc.stdout, err)
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"fastgrad {command}: error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


# ---- help --------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [[], ["demo"], ["train"], ["predict"], ["check"]])
def test_help(command):
    proc = run_cli(*command, "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: fastgrad" + "".join(" " + c for c in command))
    assert proc.stderr == ""


def test_no_command_prints_help():
    proc = run_cli()
    assert proc.returncode == 0
    for command in ("demo", "train", "predict", "check"):
        assert command in proc.stdout


def test_unknown_command_is_one_line():
    proc = run_cli("frobnicate")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith("fastgrad: error: ") and "'frobnicate'" in proc.stderr


# ---- demo --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The whole demo, with figures (and TensorFlow replays where TF is installed), run once."""
    plots = tmp_path_factory.mktemp("plots")
    args = ["demo"] + (["--plots", str(plots)] if HAVE_MPL else [])
    start = time.perf_counter()
    proc = run_cli(*args)
    wall = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr
    return proc, sections(proc.stdout), plots, wall


def test_demo_runs_everything_in_time_without_noise(demo):
    proc, secs, _, wall = demo
    assert list(secs) == ["E1", "E2", "E3", "E4", "E4C", "E5", "E6", "E7", "E8"]
    assert "Traceback" not in proc.stderr and "Warning" not in proc.stderr
    assert wall < DEMO_WALL_LIMIT_S


def test_demo_e1_exact_trajectory(demo):
    e1 = demo[1]["E1"]
    assert ast.literal_eval(field(e1, "weights:")) == E1_WEIGHTS
    assert ast.literal_eval(field(e1, "losses:")) == E1_LOSSES
    assert float(field(e1, "final loss:").split()[0]) == E1_FINAL
    # the step table: w before, loss, gradient, w after, for each of the 4 steps
    rows = re.findall(r"^\s+(\d+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)$", e1, flags=re.M)
    assert [int(r[0]) for r in rows] == [1, 2, 3, 4]
    for t, row in enumerate(rows):
        assert float(row[1]) == E1_WEIGHTS[t] and float(row[4]) == E1_WEIGHTS[t + 1]
        assert float(row[2]) == E1_LOSSES[t]
    assert "stopped by weight_delta after 4 steps" in e1


def test_demo_e2_and_e3(demo):
    e2, e3 = demo[1]["E2"], demo[1]["E3"]
    if HAVE_TF:
        assert ast.literal_eval(field(e2, "TensorFlow weights:")) == E1_WEIGHTS
        assert ast.literal_eval(field(e2, "TensorFlow losses:")) == E1_LOSSES
        assert "(identical)" in e2
    else:
        assert "pip install 'fastgrad[tf]'" in e2
    assert "model([[3.0]]) = [[6.0]]" in e3
    assert str(E1_WEIGHTS) in e3


def test_demo_e4_explodes(demo):
    e4 = demo[1]["E4"]
    m = re.search(r"^diverged at step (\d+)", e4, flags=re.M)
    assert m and int(m.group(1)) <= E4_MAX_STEPS
    rows = re.findall(r"^\s+(\d+)\s+(\d+)\s+(\S+)\s+(\S+)\s+(\S+)$", e4, flags=re.M)
    assert len(rows) == int(m.group(1))
    loss = [float(r[2]) for r in rows]
    gnorm = [float(r[3]) for r in rows]
    assert all(b > a for a, b in zip(loss, loss[1:]))  # the last one is inf
    assert loss[-1] == float("inf")
    assert all(b > a for a, b in zip(gnorm, gnorm[1:]))
    assert "DivergenceWarning" in e4


def test_demo_e5_cures_it_and_names_the_rules(demo):
    e5 = demo[1]["E5"]
    m = re.search(r"w = (\S+), final loss", e5)
    assert m and abs(float(m.group(1)) - 1.0) < E5_W_TOL
    assert "no divergence" in e5
    assert "LossBelow(1e-4), not LossDelta(1e-4)" in e5
    assert "|L_t| <= 1e-4" in e5


@pytest.mark.parametrize("eid", ["E6", "E7"])
def test_demo_recovers_the_weights(demo, eid):
    got = recovered(demo[1][eid])
    assert np.allclose(got, E6_TRUTH, rtol=0, atol=RECOVERY_TOL), got


def test_demo_e7_loss_delta_stops_early_plateau_well(demo):
    e7 = demo[1]["E7"]
    m = re.search(r"LossDelta\(0\.1\), seed \d+: stopped \(loss_delta\) at step (\d+), batch loss \S+, "
                  r"loss on all samples (\S+),", e7)
    assert m and int(m.group(1)) <= 5 and float(m.group(2)) > 1.0
    m = re.search(r"stopped \(plateau\) at step (\d+), loss (\S+), kernel \[([^\]]*)\], bias (\S+)\.", e7)
    assert m
    got = [float(v) for v in m.group(3).split(",")] + [float(m.group(4))]
    assert np.allclose(got, E6_TRUTH, rtol=0, atol=RECOVERY_TOL)


def test_demo_e8_predictions_beside_targets(demo):
    e8 = demo[1]["E8"]
    rows = re.findall(r"^\s+(\d+)\s+(-?\d+\.\d+)\s+(-?\d+\.\d+)\s+([+-]\d+\.\d+)$", e8, flags=re.M)
    assert [int(r[0]) for r in rows] == list(range(10))
    for _, pred, target, err in rows:
        assert abs(float(pred) - float(target)) < E8_PRED_TOL
        assert abs(float(pred) - float(target) - float(err)) < 2e-3  # the error column is pred - target


def test_demo_replays_in_tensorflow(demo):
    proc, secs = demo[0], demo[1]
    lines = re.findall(r"^TensorFlow replay.*$", proc.stdout, flags=re.M)
    if not HAVE_TF:
        assert not lines and "pip install 'fastgrad[tf]'" in proc.stdout
        return
    # every experiment but E2 (which is itself a replay) says how far TF and fastgrad are apart
    for eid in ("E1", "E3", "E4", "E4C", "E5", "E6", "E7", "E8"):
        assert "TensorFlow replay" in secs[eid], eid
    assert len(lines) == 12  # E4C and E5 have 2 runs, E7 3
    for line in lines:
        m = re.search(r"loss(?: \(step by step\))? ([^\s,]+), weights (not recorded|[^\s;]+)", line)
        assert m, line
        assert float(m.group(1)) <= REPLAY_RTOL_F32, line
        if m.group(2) != "not recorded":
            assert float(m.group(2)) <= REPLAY_RTOL_F32, line
    assert "TensorFlow diverges at the same step" in secs["E4"]


@needs_mpl
def test_demo_figures_are_pngs_of_the_expected_size(demo):
    plots = demo[2]
    names = sorted(p.name for p in plots.iterdir())
    assert names == [f"e{k}.png" for k in ("1", "2", "3", "4", "4c", "5", "6", "7", "8") if k != "2" or HAVE_TF]  # E2: TF
    for name in names:
        assert png_size(plots / name) == PNG_SIZE
        assert (plots / name).stat().st_size > 10_000  # something was drawn


@needs_mpl
def test_demo_figure_e4_is_on_a_log_scale():
    ex = walkthrough.e4()
    fig = plotting.plot_runs(dict(ex.results), title="E4", log=True)
    ax_loss, ax_norm, ax_w = fig.axes
    assert ax_loss.get_yscale() == "log" and ax_norm.get_yscale() == "log"
    assert ax_w.get_yscale() == "symlog"
    assert ax_w.get_xlabel() == "step" and "loss" in ax_loss.get_ylabel()
    assert "gradient norm" in ax_norm.get_ylabel() and "weight" in ax_w.get_ylabel()


def test_demo_one_experiment_without_replay():
    proc = run_cli("demo", "e4", "--no-replay")
    assert proc.returncode == 0, proc.stderr
    assert list(sections(proc.stdout)) == ["E4"]
    assert "TensorFlow replays: off (--no-replay)" in proc.stdout
    assert "largest relative deviation" not in proc.stdout


def test_demo_without_tensorflow_says_how_to_get_it():
    proc = run_cli("demo", "E1", "E2", block=["tensorflow"])
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    secs = sections(proc.stdout)
    assert list(secs) == ["E1", "E2"]
    assert ast.literal_eval(field(secs["E1"], "weights:")) == E1_WEIGHTS
    assert "pip install 'fastgrad[tf]'" in secs["E2"]
    assert proc.stdout.count("pip install 'fastgrad[tf]'") == 2  # once at the top, once for E2
    assert "TensorFlow replay" not in proc.stdout


def test_demo_plots_without_matplotlib(tmp_path):
    target = tmp_path / "figs"
    proc = run_cli("demo", "E1", "--plots", str(target), block=["matplotlib"])
    assert_one_line_error(proc, "demo", "matplotlib", "pip install 'fastgrad[plot]'")
    assert not target.exists()
    assert proc.stdout == ""


def test_demo_bad_arguments(tmp_path):
    assert_one_line_error(run_cli("demo", "E9"), "demo", "'E9'")
    assert_one_line_error(run_cli("demo", "E1", "all"), "demo", "'all'", "E1, E2, E3, E4, E4C, E5, E6, E7, E8")
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert_one_line_error(run_cli("demo", "E1", "--plots", str(a_file)), "demo", "not a directory")
    assert_one_line_error(run_cli("demo", "--replay-steps", "-3"), "demo", "--replay-steps")


# ---- train -------------------------------------------------------------------------------------


def write_e6_csv(path: Path) -> Path:
    x, y = e6_data()
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["x1", "x2", "x3", "y"])
        for row, t in zip(x, y):
            w.writerow([repr(float(v)) for v in row] + [repr(float(t))])
    return path


def snapshot(path: Path) -> Tuple[bytes, int]:
    st = path.stat()
    return path.read_bytes(), st.st_mtime_ns


def summary(stdout: str) -> Dict[str, str]:
    return {m.group(1): m.group(2) for m in re.finditer(r"^([a-z ]+):\s+(.*)$", stdout, flags=re.M)}


@needs_mpl
def test_train_on_e6_data_recovers_the_weights(tmp_path):
    data = write_e6_csv(tmp_path / "e6.csv")
    before = snapshot(data)
    proc = run_cli(
        "train", str(data), "--target", "y", "--lr", "0.1", "--batch-size", "1", "--stop", "max-steps=1000",
        "--save", "w.npz", "--history", "h.csv", "--plot", "loss.png", "--seed", "3", cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    s = summary(proc.stdout)
    assert s["steps"] == "1000"
    assert s["stopped by"].split()[0] == "max_steps"
    assert float(s["final loss"].split()[0]) < TRAIN_E6_LOSS
    assert s["time"].endswith("loop)")
    saved = fgio.load(tmp_path / "w.npz")  # a model file the API reads, with the command's column names
    got = list(saved.layers[0].kernel.ravel()) + list(saved.layers[0].bias)
    assert np.allclose(got, E6_TRUTH, rtol=0, atol=RECOVERY_TOL)
    extra = fgio.read_extra(tmp_path / "w.npz")
    assert extra["features"] == ["x1", "x2", "x3"] and extra["targets"] == ["y"] and extra["normalize"] == "none"
    with open(tmp_path / "h.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["step", "loss", "grad_norm"] and len(rows) == 1001
    assert [int(r[0]) for r in rows[1:]] == list(range(1, 1001))
    assert png_size(tmp_path / "loss.png") == PNG_SIZE
    assert snapshot(data) == before


def test_train_two_layers_with_scaling_and_rules(tmp_path):
    data = write_e6_csv(tmp_path / "e6.csv")
    before = snapshot(data)
    proc = run_cli(
        "train", str(data), "--target", "y", "--layers", "10:relu,1", "--lr", "0.05", "--batch-size", "8",
        "--sampling", "shuffle", "--normalize", "minmax", "--stop", "plateau=1e-7:300",
        "--stop", "max-steps=3000", "--dtype", "float64",
        block=["tqdm"],  # no progress bar library: still trains
    )
    assert proc.returncode == 0, proc.stderr
    s = summary(proc.stdout)
    assert s["stopped by"].split()[0] in ("plateau", "max_steps")
    assert "Plateau(1e-07, patience=300), MaxSteps(3000)" in s["stopped by"]
    # in y's units: 1e-3 in the scaled units, where y spans [0, 1], is 1e-3 * span**2
    span = np.ptp(e6_data()[1])
    assert float(s["final loss"].split()[0]) < 1e-3 * span**2
    assert "in the units of 'y'" in s["final loss"]
    assert "min-max scaled" in proc.stdout and "Dense(10, relu) -> Dense(1)" in proc.stdout
    assert snapshot(data) == before


def test_train_progress_bar_on_a_terminal(tmp_path, monkeypatch, capsys):
    pytest.importorskip("tqdm")
    import io

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    data = write_e6_csv(tmp_path / "e6.csv")
    term = Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    assert cli.main(["train", str(data), "--target", "y", "--stop", "max-steps=500"]) == 0
    assert "/500" in term.getvalue()  # tqdm drew the bar
    assert "native loop" in capsys.readouterr().out  # fit feeds the bar between the native loop's chunks
    term2 = Terminal()
    monkeypatch.setattr(sys, "stderr", term2)
    assert cli.main(["train", str(data), "--target", "y", "--stop", "max-steps=500", "--no-progress"]) == 0
    assert term2.getvalue() == ""
    assert "native loop" in capsys.readouterr().out  # as --help says


def test_train_divergence_exits_1_with_a_warning(tmp_path):
    data = write_e6_csv(tmp_path / "e6.csv")
    proc = run_cli("train", str(data), "--target", "y", "--lr", "10")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert re.search(r"^fastgrad train: warning: training diverged at step \d+", proc.stderr, flags=re.M)
    assert summary(proc.stdout)["stopped by"].startswith("diverged")
    # the hint names the command's options, not the library's functions
    assert "Try a smaller --lr, or --normalize minmax." in proc.stderr and "fastgrad.minmax" not in proc.stderr
    scaled = run_cli("train", str(data), "--target", "y", "--lr", "1000", "--normalize", "minmax")
    assert scaled.returncode == 1
    assert "Try a smaller --lr." in scaled.stderr and "--normalize" not in scaled.stderr


def test_train_is_reproducible(tmp_path):
    data = write_e6_csv(tmp_path / "e6.csv")
    args = ("train", str(data), "--target", "y", "--batch-size", "4", "--stop", "max-steps=200", "--seed", "7")
    a, b = run_cli(*args), run_cli(*args)
    assert a.returncode == b.returncode == 0
    assert summary(a.stdout)["final loss"] == summary(b.stdout)["final loss"]


# every bad input: (file name, file bytes or None for no file, extra args, what the message names)
_GOOD = b"a,b,y\n1,2,3\n4,5,6\n7,8,10\n"
_MAX_COUNT = "at most 2**62"  # fastgrad.stop.MAX_COUNT, the largest number of steps or patience
BAD_INPUTS = [
    ("missing file", "nope.csv", None, [], ["nope.csv", "no such file"]),
    ("empty file", "d.csv", b"", [], ["empty"]),
    ("blank lines only", "d.csv", b"\n\n  \n", [], ["empty"]),
    ("header only", "d.csv", b"a,b,y\n", [], ["no data rows"]),
    ("missing target", "d.csv", _GOOD, ["--target", "z"], ["'z'", "a, b, y"]),
    ("non-numeric cell", "d.csv", b"a,b,y\n1,2,3\n4,five,6\n", [], ["line 3", "'b'", "'five'", "not a number"]),
    ("NaN", "d.csv", b"a,b,y\n1,2,3\n4,nan,6\n", [], ["line 3", "'b'", "NaN"]),
    ("NaN in the target", "d.csv", b"a,b,y\n1,2,NaN\n", [], ["'y'", "NaN"]),
    ("infinite", "d.csv", b"a,b,y\n1,-inf,3\n", [], ["'b'", "infinite"]),
    ("empty cell", "d.csv", b"a,b,y\n1,,3\n", [], ["line 2", "'b'", "empty cell"]),
    ("short row", "d.csv", b"a,b,y\n1,2,3\n4,5\n", [], ["line 3", "expected 3", "got 2"]),
    ("duplicate column", "d.csv", b"a,a,y\n1,2,3\n", [], ["duplicate", "'a'"]),
    ("only the target", "d.csv", b"y\n1\n2\n", [], ["feature"]),
    ("not text", "d.csv", b"\xff\xfe\x00\x01\x02", [], ["UTF-8"]),
    ("too large for float32", "d.csv", b"a,y\n1e39,1\n2,2\n", [], ["'a'", "float32"]),
    ("a directory", ".", None, [], ["directory"]),
    ("no --target", "d.csv", _GOOD, ["--no-target"], ["--target"]),
    ("bad activation", "d.csv", _GOOD, ["--layers", "10:tanh,1"], ["--layers", "tanh"]),
    ("bad units", "d.csv", _GOOD, ["--layers", "ten,1"], ["--layers", "'ten'"]),
    ("zero units", "d.csv", _GOOD, ["--layers", "0"], ["--layers", "'0'"]),
    ("empty layer item", "d.csv", _GOOD, ["--layers", "10:relu,,1"], ["--layers"]),
    ("last layer not 1 unit", "d.csv", _GOOD, ["--layers", "4:relu,3"], ["--layers", "1 unit"]),
    ("unknown rule", "d.csv", _GOOD, ["--stop", "loss-drop=0.1"], ["--stop", "'loss-drop'"]),
    ("rule without value", "d.csv", _GOOD, ["--stop", "loss-delta"], ["--stop", "NAME=VALUE"]),
    ("negative tolerance", "d.csv", _GOOD, ["--stop", "loss-delta=-0.1"], ["--stop", "'-0.1'"]),
    ("non-numeric tolerance", "d.csv", _GOOD, ["--stop", "weight-delta=small"], ["--stop", "'small'"]),
    ("plateau without patience", "d.csv", _GOOD, ["--stop", "plateau=1e-6"], ["--stop", "TOL:PATIENCE"]),
    ("plateau zero patience", "d.csv", _GOOD, ["--stop", "plateau=1e-6:0"], ["--stop", "patience"]),
    ("fractional max-steps", "d.csv", _GOOD, ["--stop", "max-steps=2.5"], ["--stop", "'2.5'"]),
    ("negative lr", "d.csv", _GOOD, ["--lr", "-0.1"], ["--lr", "'-0.1'"]),
    ("non-numeric lr", "d.csv", _GOOD, ["--lr", "fast"], ["--lr", "'fast'"]),
    ("infinite lr", "d.csv", _GOOD, ["--lr", "inf"], ["--lr", "'inf'"]),
    ("zero batch size", "d.csv", _GOOD, ["--batch-size", "0"], ["--batch-size", "'0'"]),
    ("batch larger than data", "d.csv", _GOOD, ["--batch-size", "4"], ["--batch-size", "3 rows"]),
    ("negative seed", "d.csv", _GOOD, ["--seed", "-1"], ["--seed", "'-1'"]),
    ("bad dtype", "d.csv", _GOOD, ["--dtype", "float16"], ["--dtype", "'float16'"]),
    ("bad sampling", "d.csv", _GOOD, ["--sampling", "sorted"], ["--sampling", "'sorted'"]),
    ("constant column with minmax", "d.csv", b"a,b,y\n1,2,3\n1,5,6\n", ["--normalize", "minmax"], ["'a'", "constant"]),
    ("save over the input", "d.csv", _GOOD, ["--save", "d.csv"], ["--save", "input file"]),
    ("history over the input", "d.csv", _GOOD, ["--history", "./d.csv"], ["--history", "input file"]),
    ("save into a missing folder", "d.csv", _GOOD, ["--save", "no/such/dir/w.npz"], ["--save", "does not exist"]),
    ("plot onto a folder", "d.csv", _GOOD, ["--plot", "."], ["--plot", "directory"]),
    ("save under a file", "d.csv", _GOOD, ["--save", "d.csv/w.npz"], ["--save", "'d.csv' is not a directory"]),
    ("history under a file", "d.csv", _GOOD, ["--history", "d.csv/h.csv"], ["--history", "not a directory"]),
    ("save and history one file", "d.csv", _GOOD, ["--save", "same.npz", "--history", "./same.npz"],
     ["--history", "--save", "same.npz"]),
    ("no header, the first row is data", "d.csv", b"1,2,3\n4,5,6\n7,8,9\n", [],
     ["no column 'y'", "only numbers", "header row with column names"]),
    ("np.savetxt's commented header", "d.csv",
     b"# a,b,y\n1.000000000000000000e+00,2.000000000000000000e+00,3.000000000000000000e+00\n"
     b"4.000000000000000000e+00,5.000000000000000000e+00,6.000000000000000000e+00\n", [],
     ["no column 'y'", "header row with column names", "'#'", "comments"]),
    ("one row of numbers", "d.csv", b"1,2,3\n", [], ["no data rows", "only numbers", "header row"]),
    ("separated by semicolons", "d.csv", b"a;b;y\n1;2;3\n", [], ["'1;2;3' is not a number", "commas", "';'"]),
    ("separated by tabs", "d.csv", b"a\tb\ty\n1\t2\t3\n", [], ["not a number", "commas", "'\\t'"]),
    ("too many units", "d.csv", _GOOD, ["--layers", "1000000000000,1"], ["--layers", f"{cli.MAX_UNITS:,} units"]),
    ("units past int64", "d.csv", _GOOD, ["--layers", "99999999999999999999999,1"], ["--layers", "units"]),
    ("too many parameters", "d.csv", _GOOD, ["--layers", "1000000:relu,1000000:relu,1"],
     ["--layers", "parameters", f"{cli.MAX_PARAMS:,}"]),
    ("max-steps past int64", "d.csv", _GOOD, ["--stop", "max-steps=99999999999999999999999"],
     ["--stop", "max-steps=", _MAX_COUNT]),
    ("max-steps at int64's max", "d.csv", _GOOD, ["--stop", "max-steps=9223372036854775807"],
     ["--stop", "max-steps=", _MAX_COUNT]),
    ("patience past the cap", "d.csv", _GOOD, ["--stop", f"plateau=0:{fg.stop.MAX_COUNT + 1}"],
     ["--stop", "patience: ", _MAX_COUNT]),
    ("range overflows float64", "d.csv", b"x,y\n1e308,1\n-1e308,3\n", ["--normalize", "minmax", "--dtype", "float64"],
     ["column 'x'", "range (max - min) overflows float64"]),
]

# bad --plot arguments, which are checked once matplotlib is known to be there
PLOT_BAD_INPUTS = [
    ("unknown figure format", "d.csv", _GOOD, ["--plot", "fig.xyz"], ["--plot", "'.xyz'", ".png", ".pdf"]),
    ("plot and save one file", "d.csv", _GOOD, ["--save", "same.png", "--plot", "same"], ["--plot", "--save"]),
    ("plot and history one file", "d.csv", _GOOD, ["--history", "f.pdf", "--plot", "./f.pdf"],
     ["--plot", "--history"]),
]


@pytest.mark.parametrize("name, filename, content, extra, needles", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_train_bad_input(tmp_path, name, filename, content, extra, needles):
    check_bad_input(tmp_path, filename, content, extra, needles)


@needs_mpl
@pytest.mark.parametrize("name, filename, content, extra, needles", PLOT_BAD_INPUTS,
                         ids=[b[0] for b in PLOT_BAD_INPUTS])
def test_train_bad_plot_input(tmp_path, name, filename, content, extra, needles):
    check_bad_input(tmp_path, filename, content, extra, needles)


def check_bad_input(tmp_path: Path, filename: str, content: Optional[bytes], extra: List[str],
                    needles: List[str]) -> None:
    """``train`` on ``filename`` (holding ``content``) with ``extra`` fails at once: the one-line
    error names ``needles``, nothing is printed on stdout, and no file is written or changed."""
    path = tmp_path / filename
    if content is not None:
        path.write_bytes(content)
    before = snapshot(path) if path.is_file() else None
    args = ["train", filename]
    if "--no-target" in extra:
        extra = [a for a in extra if a != "--no-target"]
    else:
        args += ["--target", "y"]
    proc = run_cli(*args, *extra, cwd=tmp_path)
    assert_one_line_error(proc, "train", *needles)
    assert proc.stdout == ""
    if before is not None:
        assert snapshot(path) == before  # the input is never modified
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({filename} - {"."} if content is not None else [])


def test_model_size_counts_a_batch_not_every_row(monkeypatch):
    spec = [(1000, "relu"), (1000, "relu"), (1, "linear")]
    monkeypatch.setattr(cli_common, "available_memory", lambda: 12 * 2**30)
    # 10**6 rows x 100 features: the final loss's pass holds two layers' outputs at a time,
    # 10**6 x 2,000 float32 = 7.5 GiB; a step on batches of 32 needs little
    cli_common.check_model_size(spec, 100, 10**6, 32, "float32", "--layers")
    with pytest.raises(cli.CliError, match=r"--layers: .* needs about 14\.9 GiB .* 12\.0 GiB is available"):
        cli_common.check_model_size(spec, 100, 2 * 10**6, 32, "float32", "--layers")


def test_train_may_write_two_outputs_to_dev_null(tmp_path):
    (tmp_path / "d.csv").write_bytes(_GOOD)
    proc = run_cli("train", "d.csv", "--target", "y", "--stop", "max-steps=3", "--no-progress",
                   "--save", os.devnull, "--history", os.devnull, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr


def test_train_takes_column_names_that_are_numbers(tmp_path):
    # pandas writes 0,1,2,... for unnamed columns; years and wavelengths are numbers too
    (tmp_path / "d.csv").write_bytes(b"0,1,2\n1,2,3\n4,5,6\n7,8,10\n")
    proc = run_cli("train", "d.csv", "--target", "2", "--stop", "max-steps=5", "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "on 3 rows x 2 features" in proc.stdout and "target '2'" in proc.stdout


def test_train_plot_without_matplotlib(tmp_path):
    (tmp_path / "d.csv").write_bytes(_GOOD)
    proc = run_cli("train", "d.csv", "--target", "y", "--plot", "p.png", cwd=tmp_path, block=["matplotlib"])
    assert_one_line_error(proc, "train", "matplotlib", "pip install 'fastgrad[plot]'")
    assert not (tmp_path / "p.png").exists()


def run_into_closed_pipe(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m fastgrad *args`` with stdout a pipe whose reader has already gone away (as
    ``| head -1`` after its line): the first line printed meets a broken pipe."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", COLUMNS="100")
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run([sys.executable, "-m", "fastgrad", *args], stdout=write_end, stderr=subprocess.PIPE,
                              text=True, cwd=cwd, env=env, timeout=TIMEOUT_S)
    finally:
        os.close(write_end)


def test_train_into_a_closed_pipe_writes_its_files(tmp_path):
    data = write_e6_csv(tmp_path / "e6.csv")
    files = ["w.npz", "h.csv"] + (["p.png"] if HAVE_MPL else [])
    options = [o for pair in zip(["--save", "--history", "--plot"], files) for o in pair]
    proc = run_into_closed_pipe("train", str(data), "--target", "y", "--no-progress", "--stop", "max-steps=50",
                                *options, cwd=tmp_path)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(files + ["e6.csv"])
    assert fgio.load(tmp_path / "w.npz").input_dim == 3
    assert len((tmp_path / "h.csv").read_text().splitlines()) == 51  # the header and 50 steps


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_train_into_a_full_disk_is_an_error(tmp_path):
    data = write_e6_csv(tmp_path / "e6.csv")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "fastgrad", "train", str(data), "--target", "y", "--no-progress",
                               "--stop", "max-steps=5"], stdout=full, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                              env=env, timeout=TIMEOUT_S)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["fastgrad train: error: cannot write to stdout: No space left on device"]


def test_train_diverging_into_a_closed_pipe_exits_1(tmp_path):
    data = write_e6_csv(tmp_path / "e6.csv")
    proc = run_into_closed_pipe("train", str(data), "--target", "y", "--lr", "10", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith("fastgrad train: warning: training diverged")
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("option", ["--save", "--history", pytest.param("--plot", marks=needs_mpl)])
def test_train_output_that_cannot_be_written(tmp_path, option):
    """A write that fails (a full disk: /dev/full) is one line naming the option, exit status 2; the
    other outputs are written and reported."""
    names = {"--save": "w.npz", "--history": "h.csv", "--plot": "p.png"}
    if not HAVE_MPL:
        del names["--plot"]
    (tmp_path / names[option]).symlink_to("/dev/full")
    data = write_e6_csv(tmp_path / "e6.csv")
    options = [o for item in names.items() for o in item]
    proc = run_cli("train", str(data), "--target", "y", "--stop", "max-steps=20", *options, cwd=tmp_path)
    line = assert_one_line_error(proc, "train", option, names[option], os.strerror(errno.ENOSPC))
    assert line.startswith(f"fastgrad train: error: {option}: ")
    reported = summary(proc.stdout)
    assert reported["steps"] == "20"
    for other, name in names.items():
        if other != option:
            assert (tmp_path / name).stat().st_size > 0
            assert name in proc.stdout
    assert len([label for label in ("model", "history", "figure") if label in reported]) == len(names) - 1


@needs_mpl
def test_train_plot_without_an_extension_writes_a_png_and_says_so(tmp_path):
    (tmp_path / "d.csv").write_bytes(_GOOD)
    proc = run_cli("train", "d.csv", "--target", "y", "--stop", "max-steps=5", "--plot", "fig", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert summary(proc.stdout)["figure"] == "fig.png"
    assert png_size(tmp_path / "fig.png") == PNG_SIZE
    assert not (tmp_path / "fig").exists()


def recorded_for_plot(monkeypatch, tmp_path: Path, *args: str) -> fg.FitResult:
    """The run ``train --plot`` hands to plotting.plot_runs (``args``: more options)."""
    seen = {}
    real = plotting.plot_runs

    def spy(runs, **kwargs):
        seen.update(runs)
        return real(runs, **kwargs)

    monkeypatch.setattr(plotting, "plot_runs", spy)
    data = write_e6_csv(tmp_path / "e6.csv")
    assert cli.main(["train", str(data), "--target", "y", "--no-progress", "--plot", str(tmp_path / "p.png"),
                     *args]) == 0
    return seen["run"]


@needs_mpl
def test_train_plot_recording_of_a_wide_model_is_bounded(tmp_path, monkeypatch, capsys):
    # 10,001 float32 parameters: 2000 rows of them would be 80 MB
    result = recorded_for_plot(monkeypatch, tmp_path, "--layers", "2000:relu,1", "--stop", "max-steps=2000")
    weights = result.history.weights
    row_bytes = sum(w[0].nbytes for w in weights)
    assert row_bytes * cli_train.PLOT_WEIGHT_ROWS > cli_train.PLOT_RECORD_BYTES  # so the budget is what bounds it
    assert sum(w.nbytes for w in weights) <= cli_train.PLOT_RECORD_BYTES
    assert len(result.history.weight_steps) >= cli_train.PLOT_RECORD_BYTES // row_bytes // 2  # and it is used
    assert result.history.weight_steps[-1] == result.steps


@needs_mpl
def test_train_plot_of_a_model_too_wide_to_record(tmp_path, monkeypatch, capsys):
    # room for two rows of 10:relu,1 on 3 inputs (51 float32 parameters, 204 bytes), not for three
    monkeypatch.setattr(cli_train, "PLOT_RECORD_BYTES", 500)
    result = recorded_for_plot(monkeypatch, tmp_path, "--layers", "10:relu,1", "--stop", "max-steps=20")
    assert result.history.weights is None
    assert "weights not drawn" in summary(capsys.readouterr().out)["figure"]
    assert png_size(tmp_path / "p.png") == PNG_SIZE


def test_record_every_bounds_rows_and_bytes():
    for total in (1, 7, 1999, 10_000, fg.stop.MAX_COUNT):
        for row_bytes in (4, 80_004, cli_train.PLOT_RECORD_BYTES // 3):
            k = cli_train._record_every(total, row_bytes)
            assert k >= 1
            rows = 2 + total // k  # the initial weights, every k-th step, the last
            assert rows <= cli_train.PLOT_WEIGHT_ROWS and rows * row_bytes <= cli_train.PLOT_RECORD_BYTES
    assert cli_train._record_every(10_000, cli_train.PLOT_RECORD_BYTES // 3 + 1) == 0


def test_train_out_of_memory_is_one_line(tmp_path, monkeypatch, capsys):
    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(fg, "fit", no_memory)
    data = write_e6_csv(tmp_path / "e6.csv")
    assert cli.main(["train", str(data), "--target", "y"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastgrad train: error: out of memory") and err.count("\n") == 1


def test_train_model_larger_than_the_memory_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli_common, "available_memory", lambda: 2**20)
    monkeypatch.setattr(fg, "fit", pytest.fail)  # refused before training
    data = write_e6_csv(tmp_path / "e6.csv")
    assert cli.main(["train", str(data), "--target", "y", "--layers", "100000:relu,1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastgrad train: error: --layers: ") and err.count("\n") == 1
    assert "of memory" in err and "1 MiB is available" in err


def test_parse_stop_reports_the_rules_own_errors(monkeypatch):
    def refuse(n):
        raise ValueError(f"n: expected at most 2**62, got {n}")

    monkeypatch.setattr(fg.stop, "MaxSteps", refuse)
    with pytest.raises(argparse.ArgumentTypeError, match=r"'max-steps=5': n: expected at most 2\*\*62, got 5"):
        cli.parse_stop("max-steps=5")


def test_train_help_says_which_loop_runs():
    text = " ".join(run_cli("train", "--help").stdout.split())
    assert "--no-progress no progress bar" in text
    assert "either way the native (C++) loop runs" in text and "Python loop" not in text
    assert "L2 norm" in text  # what --plot draws


# ---- check -------------------------------------------------------------------------------------

_CHECK_ROW = re.compile(r"^  (layer \d+ (?:kernel|bias)|loss)\s+(\(.*?\))\s+(\S+)\s+(\S+)\s+(\S+)\s+(ok|FAIL)$", re.M)


def check_rows(stdout: str) -> List[Tuple[str, float, float, float, str]]:
    return [(m.group(1), float(m.group(3)), float(m.group(4)), float(m.group(5)), m.group(6))
            for m in _CHECK_ROW.finditer(stdout)]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_check_passes(dtype):
    proc = run_cli("check", "--dtype", dtype)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = check_rows(proc.stdout)
    n_tensors = 6  # 3 layers, kernel and bias
    fd = rows[-n_tensors:]
    assert [r[0] for r in fd] == [f"layer {i} {p}" for i in range(3) for p in ("kernel", "bias")]
    for _, abs_err, rel, tol, verdict in fd:
        assert tol == cli.FD_RTOL and rel <= tol and verdict == "ok"
    if HAVE_TF:
        tf_rows = rows[:-n_tensors]
        assert len(tf_rows) == n_tensors + 1  # and the loss
        for _, abs_err, rel, tol, verdict in tf_rows:
            assert tol == cli.TF_RTOL[dtype] and rel <= tol and verdict == "ok"
        assert f"all {2 * n_tensors + 1} comparisons within tolerance" in proc.stdout
    else:
        assert "pip install 'fastgrad[tf]'" in proc.stdout


def test_check_without_tensorflow_runs_finite_differences():
    proc = run_cli("check", "--layers", "3:relu,2", "--batch", "5", "--features", "2", block=["tensorflow"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    rows = check_rows(proc.stdout)
    assert [r[0] for r in rows] == ["layer 0 kernel", "layer 0 bias", "layer 1 kernel", "layer 1 bias"]
    assert len(re.findall(r"pip install 'fastgrad\[tf\]'", proc.stdout)) == 1
    assert "finite differences only" in proc.stdout


def test_check_fails_with_exit_1_when_a_gradient_is_wrong(monkeypatch, capsys):
    real = fg.value_and_grad

    def off_by_a_little(model, x, y):
        loss, grads = real(model, x, y)
        grads[0] = grads[0] * (1 + 1e-5)  # 100x the finite-difference tolerance
        return loss, grads

    monkeypatch.setattr(fg, "value_and_grad", off_by_a_little)
    assert cli.main(["check", "--no-tf"]) == 1
    out = capsys.readouterr().out
    verdicts = {r[0]: r[4] for r in check_rows(out)}
    assert verdicts["layer 0 kernel"] == "FAIL"
    assert all(v == "ok" for k, v in verdicts.items() if k != "layer 0 kernel")
    assert "1 of 6 comparisons outside tolerance" in out


def test_check_bad_arguments():
    assert_one_line_error(run_cli("check", "--layers", "8:sigmoid,1"), "check", "--layers", "sigmoid")
    assert_one_line_error(run_cli("check", "--batch", "0"), "check", "--batch")
    assert_one_line_error(run_cli("check", "--features", str(10**12)), "check", "--features", "parameters")


# ---- the Python side: FitResult.plot and History.to_dataframe -----------------------------------


@needs_mpl
def test_plot_result_draws_three_labelled_panels():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ex = walkthrough.e6(steps=200)
    fig = plotting.plot_result(ex.results["run"])
    try:
        ax_loss, ax_norm, ax_w = fig.axes
        assert ax_loss.get_yscale() == "log"  # the loss falls by many decades
        assert len(ax_w.get_lines()) == 4  # 3 kernel elements and the bias
        assert [ax.get_ylabel() != "" for ax in fig.axes] == [True] * 3
        assert tuple(fig.get_size_inches()) == plotting.FIGSIZE
    finally:
        plt.close(fig)
    fig2, ax = plt.subplots()
    try:
        assert plotting.plot_result(ex.results["run"], ax=ax) is fig2
        assert len(ax.get_lines()) == 1 and ax.get_xlabel() == "step"
    finally:
        plt.close(fig2)
    with pytest.raises(TypeError, match="FitResult"):
        plotting.plot_result(ex)


@needs_mpl
def test_plot_weights_panel_draws_each_tensors_norm_for_a_wide_model():
    x = np.random.default_rng(0).random((40, 5)).astype(np.float32)
    model = fg.Sequential([fg.Dense(6, "relu"), fg.Dense(1)], seed=0)  # 43 parameters: norms
    r = fg.fit(model, x, x.sum(1), optimizer=fg.SGD(0.05), stop=fg.stop.MaxSteps(600), record_weights=1)
    fig = plotting.plot_result(r)
    try:
        drawn = fig.axes[2].get_lines()
        assert len(drawn) == 4  # one line per tensor
        for line, w in zip(drawn, r.history.weights):
            want = np.sqrt((w.reshape(len(w), -1).astype(np.float64) ** 2).sum(axis=1))
            np.testing.assert_allclose(line.get_ydata(), want, rtol=NORM_RTOL)
            np.testing.assert_array_equal(line.get_xdata(), r.history.weight_steps)
    finally:
        fig.clf()


def test_plot_result_without_matplotlib(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=re.escape("pip install 'fastgrad[plot]'")):
        plotting.plot_result(walkthrough.e1().results["run"])


def test_to_dataframe_without_pandas(monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match="pip install pandas"):
        plotting.history_to_dataframe(walkthrough.e1().results["run"].history)


def test_to_dataframe():
    pytest.importorskip("pandas")
    df = plotting.history_to_dataframe(walkthrough.e1().results["run"].history)
    assert list(df.index) == [1, 2, 3, 4] and df.index.name == "step"
    assert list(df["loss"]) == E1_LOSSES
    assert list(df["w0[0, 0]"]) == E1_WEIGHTS[1:]  # the weights after each step
    h = walkthrough.e7(steps=50).results["run"].history
    df = plotting.history_to_dataframe(h)
    assert len(df) == 50 and df["batch"].iloc[0] == tuple(int(i) for i in h.batches[0])
