"""The command at the edges of its input: path names the system refuses, a data file without
line breaks, TensorFlow's start-up log lines, and what ``train --plot`` labels its axes.

Each runs ``python -m fastgrad`` in a subprocess, as a user does, except where a test needs to
see inside the run.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, Optional

import pytest

from fastgrad import cli, plotting
from fastgrad.cli import common as cli_common
from fastgrad.cli import csvfile

TIMEOUT_S = 300
HAVE_TF = importlib.util.find_spec("tensorflow") is not None
HAVE_MPL = importlib.util.find_spec("matplotlib") is not None
GOOD_CSV = b"a,b,y\n1,2,3\n4,5,6\n7,8,10\n"
NAME_MAX = 255  # the longest file name (one path component) Linux and macOS file systems take
PATH_MAX = 4096  # the longest path Linux takes
EXTRA_MEMORY = 1 << 30  # /dev/zero: the run may take at most this much more than an idle command
# what TensorFlow's C++ logging writes before it reads TF_CPP_MIN_LOG_LEVEL
ABSL_NOISE = re.compile(r"absl::InitializeLog|^[IW]\d{4} \d\d:\d\d:\d\d|oneDNN custom operations", re.M)


def run_cli(*args: str, cwd: Optional[Path] = None, env: Optional[Dict[str, str]] = None,
            preexec_fn=None) -> subprocess.CompletedProcess:
    """``python -m fastgrad *args``; returns the finished process."""
    env = dict(os.environ, COLUMNS="100") if env is None else env
    return subprocess.run([sys.executable, "-m", "fastgrad", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=TIMEOUT_S, preexec_fn=preexec_fn)


def assert_one_line_error(proc: subprocess.CompletedProcess, command: str, *needles: str) -> str:
    """Exit status 2, one line 'fastgrad <command>: error: ...' on stderr, no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"fastgrad {command}: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert len(lines[0]) < 400  # the path is shortened in the message
    return lines[0]


# ---- path names longer than the system takes ------------------------------------------------

LONG_NAMES = {
    "a name longer than NAME_MAX": "x" * (NAME_MAX + 45),
    "a path longer than PATH_MAX": "d/" * (PATH_MAX // 2 + 10) + "f",
}


@pytest.mark.parametrize("kind", list(LONG_NAMES))
@pytest.mark.parametrize("option, suffix", [("--save", ".npz"), ("--history", ".csv"),
                                            pytest.param("--plot", ".png", marks=pytest.mark.skipif(
                                                not HAVE_MPL, reason="needs matplotlib"))])
def test_train_output_path_too_long_is_a_usage_error(tmp_path, kind, option, suffix):
    (tmp_path / "d.csv").write_bytes(GOOD_CSV)
    proc = run_cli("train", "d.csv", "--target", "y", option, LONG_NAMES[kind] + suffix, cwd=tmp_path)
    assert_one_line_error(proc, "train", option, "too long")
    assert proc.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.csv"]


@pytest.mark.parametrize("kind", list(LONG_NAMES))
def test_predict_out_path_too_long_is_a_usage_error(tmp_path, monkeypatch, capsys, kind):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d.csv").write_bytes(GOOD_CSV)
    assert cli.main(["train", "d.csv", "--target", "y", "--stop", "max-steps=3", "--no-progress",
                     "--save", "m.npz"]) == 0
    capsys.readouterr()
    assert cli.main(["predict", "m.npz", "d.csv", "--out", LONG_NAMES[kind] + ".csv"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastgrad predict: error: --out: "), captured.err
    assert "too long" in lines[0] and len(lines[0]) < 400 and captured.out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.csv", "m.npz"]


@pytest.mark.parametrize("kind", list(LONG_NAMES))
def test_train_data_path_too_long_is_a_usage_error(tmp_path, kind):
    proc = run_cli("train", LONG_NAMES[kind] + ".csv", "--target", "y", cwd=tmp_path)
    assert_one_line_error(proc, "train", "too long")


@pytest.mark.skipif(not HAVE_MPL, reason="needs matplotlib")
@pytest.mark.parametrize("kind", list(LONG_NAMES))
def test_demo_plots_path_too_long_is_a_usage_error(tmp_path, kind):
    proc = run_cli("demo", "E1", "--no-replay", "--plots", LONG_NAMES[kind], cwd=tmp_path)
    assert_one_line_error(proc, "demo", "--plots", "too long")
    assert list(tmp_path.iterdir()) == []


def test_a_nul_character_in_a_path_is_a_usage_error(tmp_path):
    # argv cannot hold a NUL: the check is called as the command calls it
    with pytest.raises(cli.CliError, match="--save: 'w\\\\x00.npz': a file name cannot hold a NUL character"):
        cli_common.checked_name("w\0.npz", "--save")


# ---- a data file without line breaks --------------------------------------------------------


def test_a_line_longer_than_the_limit_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(csvfile, "MAX_LINE_CHARS", 100)
    data = tmp_path / "wide.csv"
    data.write_text("a,y\n1,2\n" + "3," * 60 + "4\n")
    with pytest.raises(cli.CliError, match=r"wide\.csv' line 3: longer than 100 characters"):
        csvfile.read_csv(data)
    data.write_text("a,y\n1,2\n" + "3," * 40 + "4\n")  # 83 characters and the line break: read
    with pytest.raises(cli.CliError, match=r"line 3: expected 2 cells \(as the header\), got 41"):
        csvfile.read_csv(data)


def _idle_peak_bytes() -> int:
    """The peak address space of ``python -m fastgrad --version``: the imports and their thread pools."""
    code = ("import runpy, sys\nsys.argv = ['fastgrad', '--version']\ntry:\n"
            "    runpy.run_module('fastgrad', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "print(open('/proc/self/status').read().split('VmPeak:')[1].split()[0])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr
    return int(proc.stdout.split()[-1]) * 1024


@pytest.mark.skipif(not (os.path.exists("/dev/zero") and os.path.exists("/proc/self/status")),
                    reason="needs /dev/zero and /proc (Linux)")
def test_dev_zero_as_the_data_file_fails_in_bounded_memory():
    import resource

    limit = _idle_peak_bytes() + EXTRA_MEMORY

    def cap_memory() -> None:  # a run that reads /dev/zero whole fails here, not the machine
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    proc = run_cli("train", "/dev/zero", "--target", "y", preexec_fn=cap_memory)
    assert_one_line_error(proc, "train", "/dev/zero", f"longer than {csvfile.MAX_LINE_CHARS:,} characters")


# ---- TensorFlow's start-up log lines --------------------------------------------------------


def _env_without_tf_settings() -> Dict[str, str]:
    """The environment without the variables a user might set to quiet TensorFlow: the command
    must be quiet by itself."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "ABSL_", "GLOG_"))}


@pytest.mark.skipif(not HAVE_TF, reason="needs TensorFlow (the tf extra)")
@pytest.mark.parametrize("args", [["demo", "E1", "E2"], ["check", "--layers", "3:relu,1", "--features", "2"]],
                         ids=["demo", "check"])
def test_tensorflow_start_up_lines_stay_out_of_the_output(args):
    proc = run_cli(*args, env=_env_without_tf_settings())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not ABSL_NOISE.search(proc.stdout), proc.stdout
    assert proc.stderr == ""
    if args[0] == "demo":
        assert "2.0, 1.5, 1.25, 1.125, 1.0625" in proc.stdout  # what CI greps for
        assert "TensorFlow replay" in proc.stdout  # TensorFlow was imported and used


@pytest.mark.skipif(not HAVE_MPL, reason="needs matplotlib")
def test_demo_figure_that_cannot_be_written_is_one_line(tmp_path):
    (tmp_path / "e1.png").mkdir()  # the figure's name is taken by a directory
    proc = run_cli("demo", "E1", "--plots", str(tmp_path))
    assert_one_line_error(proc, "demo", "--plots", "e1.png")
    assert "2.0, 1.5, 1.25, 1.125, 1.0625" in proc.stdout


INTERRUPTED_DEMO = (
    "import sys, time\n"
    "from fastgrad import cli, walkthrough\n"
    "def interrupted(*args, **kwargs):\n"
    "    time.sleep(0.2)  # TensorFlow's import has started in the background, holding stderr aside\n"
    "    raise KeyboardInterrupt\n"
    "walkthrough.MODULES['E1'].run = interrupted\n"
    "sys.argv = ['fastgrad', 'demo', 'E1']\n"
    "cli.main()\n"
)


@pytest.mark.skipif(not HAVE_TF, reason="needs TensorFlow (the tf extra)")
def test_demo_interrupted_while_tensorflow_imports_still_says_so():
    proc = subprocess.run([sys.executable, "-c", INTERRUPTED_DEMO], capture_output=True, text=True,
                          env=_env_without_tf_settings(), timeout=TIMEOUT_S)
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr == "fastgrad demo: interrupted\n"


FAKE_TENSORFLOW = (
    "import os\n"
    "os.write(2, b'WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\\n'\n"
    "         b'I0000 00:00:1796405968.543658    6172 port.cc:153] oneDNN custom operations are on.\\n'\n"
    "         b'W0000 00:00:1796405968.543658    6172 x.cc:1] a warning\\n'\n"
    "         b'E0000 00:00:1796405968.543658    6172 x.cc:2] an error\\n'\n"
    "         b'something else\\n')\n"
)


@pytest.mark.parametrize("level, kept", [(None, ["E0000", "something else"]),
                                         ("0", ["WARNING: All log", "I0000", "W0000", "E0000", "something else"]),
                                         ("3", ["something else"])])
def test_oracle_drops_only_the_log_lines_below_the_level(tmp_path, level, kept):
    # a stand-in TensorFlow that writes absl's start-up lines and others to stderr when imported
    (tmp_path / "tensorflow").mkdir()
    (tmp_path / "tensorflow" / "__init__.py").write_text(FAKE_TENSORFLOW)
    env = _env_without_tf_settings()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(tmp_path), env.get("PYTHONPATH")) if p)
    if level is not None:
        env["TF_CPP_MIN_LOG_LEVEL"] = level
    code = "import os, fastgrad as fg\nassert fg.oracle.available()\nprint(os.environ['TF_CPP_MIN_LOG_LEVEL'])"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == (level or "2")  # the default is set only where the user set none
    assert [line[: len(k)] for line, k in zip(proc.stderr.splitlines(), kept)] == kept
    assert len(proc.stderr.splitlines()) == len(kept)


# ---- train --plot's weights axis ------------------------------------------------------------


@pytest.mark.skipif(not HAVE_MPL, reason="needs matplotlib")
@pytest.mark.parametrize("layers, label", [("10:relu,1", "L2 norm of each weight tensor"), ("1", "weight value")])
def test_train_plot_labels_the_weights_axis_by_what_it_draws(tmp_path, monkeypatch, layers, label):
    figures = []
    real = plotting.plot_runs

    def spy(*args, **kwargs):
        figures.append(real(*args, **kwargs))
        return figures[-1]

    monkeypatch.setattr(plotting, "plot_runs", spy)
    (tmp_path / "d.csv").write_bytes(GOOD_CSV)
    assert cli.main(["train", str(tmp_path / "d.csv"), "--target", "y", "--no-progress", "--layers", layers,
                     "--stop", "max-steps=20", "--plot", str(tmp_path / "p.png")]) == 0
    ax_w = figures[0].axes[2]
    assert ax_w.get_ylabel() == label
    norms = [line for line in ax_w.get_lines() if line.get_label().startswith("‖")]
    assert bool(norms) == ("norm" in label)
