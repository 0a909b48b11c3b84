"""The ``fastgrad`` command (also ``python -m fastgrad``).

    fastgrad demo [E1 ... E8] [--plots DIR]     the walkthrough's experiments, told step by step
    fastgrad train data.csv --target COL ...    train a Dense stack on a CSV file
    fastgrad check [--layers ...]               every gradient against TensorFlow and finite differences

Exit status: 0 on success; 1 when ``check`` finds a gradient outside its tolerance or ``train``
diverges; 2 on bad input, or an output file that cannot be written (a one-line
``fastgrad <command>: error: ...`` on stderr, never a traceback); 130 when interrupted.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import importlib.util
import io
import math
import os
import re
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "main",
    "build_parser",
    "parse_layers",
    "parse_stop",
    "read_csv",
    "REPLAY_STEPS",
    "TF_RTOL",
    "FD_RTOL",
    "FD_EPS",
    "RELU_MARGIN",
]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

TF_INSTALL = "pip install 'fastgrad[tf]'"
PLOT_INSTALL = "pip install 'fastgrad[plot]'"

#: ``demo`` replays at most this many steps of a run in TensorFlow: ``oracle.replay`` runs eager
#: steps of ~5-10 ms each, and the whole demo should take well under half a minute
REPLAY_STEPS = 100
#: ``check``: the relative error (max|ours − ref| / max|ref|) each gradient is held to
TF_RTOL = {"float64": 1e-12, "float32": 1e-6}
FD_RTOL = 1e-7
#: ``check``: the step of the central differences, and how far from 0 every ReLU input is kept
FD_EPS = 1e-6
RELU_MARGIN = 1e-3
#: ``train``: at most about this many weight rows are recorded for ``--plot``, in at most this
#: many bytes (a wide model records fewer rows; one too wide for three rows records none).  The
#: figure needs a few times the recording while it is drawn (copies, each tensor's norm in float64)
PLOT_WEIGHT_ROWS = 2000
PLOT_RECORD_BYTES = 32 * 2**20
#: ``train`` and ``check``: at most this many units in a layer and parameters in a model
MAX_UNITS = 1_000_000
MAX_PARAMS = 2**31

ACTIVATIONS = ("linear", "relu")


class CliError(Exception):
    """Bad input: reported as one line ``fastgrad <command>: error: <message>``, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr (no usage block), exit status 2."""

    def error(self, message: str):  # type: ignore[override]
        message = " ".join(str(message).split())
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


#: what could not be written to stdout/stderr (other than to a closed pipe): reported by _run
_OUTPUT_ERRORS: List[str] = []


def _out(*parts: Any) -> None:
    """Print a line on stdout (see :func:`_print`)."""
    _print(sys.stdout, *parts)


def _err(*parts: Any) -> None:
    """Print a line on stderr (see :func:`_print`)."""
    _print(sys.stderr, *parts)


def _print(stream, *parts: Any) -> None:
    """Print a line on ``stream`` and flush it; once its reader has gone away, print nothing more.

    ``fastgrad train ... | head -1``: the reader closes the pipe, the next line raises
    BrokenPipeError, and from then on the stream is pointed at os.devnull (so that neither this
    nor the interpreter's final flush complains).  The command goes on: it still writes its
    files and returns its real exit status.
    """
    try:
        print(*parts, file=stream, flush=True)
    except BrokenPipeError:
        _silence(stream)
    except OSError as e:  # a full disk under `> file`: say so at the end, and exit 2
        _OUTPUT_ERRORS.append(f"cannot write to {'stdout' if stream is sys.stdout else 'stderr'}: {e.strerror or e}")
        _silence(stream)


def _silence(stream) -> None:
    """Point ``stream``'s file descriptor at os.devnull."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # pragma: no cover - no real file descriptor
        pass


# ---------------------------------------------------------------------------------------------
# argument types (each raises ArgumentTypeError with the problem, which argparse reports in one
# line naming the option)


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return v


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def _nonneg_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return v


def parse_layers(text: str) -> List[Tuple[int, str]]:
    """``"10:relu,4:relu,1"`` -> ``[(10, "relu"), (4, "relu"), (1, "linear")]``.

    Each comma-separated item is ``UNITS`` or ``UNITS:ACTIVATION`` (linear or relu; linear
    when left out), with 1 to :data:`MAX_UNITS` units.  Raises ``argparse.ArgumentTypeError``
    naming the bad item.
    """
    items = [s.strip() for s in text.split(",")]
    if not text.strip() or any(not s for s in items):
        raise argparse.ArgumentTypeError(
            f"expected comma-separated UNITS[:ACTIVATION] items such as '10:relu,1', got {text!r}"
        )
    out = []
    for item in items:
        units_s, _, act = item.partition(":")
        act = act.strip().lower() or "linear"
        try:
            units = int(units_s)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{item!r}: the number of units must be a positive integer, got {units_s.strip()!r}"
            ) from None
        if units <= 0:
            raise argparse.ArgumentTypeError(f"{item!r}: the number of units must be a positive integer")
        if units > MAX_UNITS:
            raise argparse.ArgumentTypeError(f"{item!r}: at most {MAX_UNITS:,} units in a layer")
        if act not in ACTIVATIONS:
            raise argparse.ArgumentTypeError(f"{item!r}: the activation must be one of {', '.join(ACTIVATIONS)}")
        out.append((units, act))
    return out


def _describe_layers(spec: Sequence[Tuple[int, str]]) -> str:
    return " -> ".join(f"Dense({u}, {a})" if a != "linear" else f"Dense({u})" for u, a in spec)


_STOP_FORMS = "loss-delta=TOL, weight-delta=TOL, loss-below=TOL, plateau=TOL:PATIENCE, max-steps=N"


def parse_stop(text: str):
    """``"loss-delta=0.01"`` -> ``fastgrad.stop.LossDelta(0.01)``, and so on.

    Forms: loss-delta=TOL, weight-delta=TOL, loss-below=TOL (TOL >= 0), plateau=TOL:PATIENCE,
    max-steps=N (N and PATIENCE from 1 to ``fastgrad.stop.MAX_COUNT``).  Raises
    ``argparse.ArgumentTypeError`` naming the problem, also for a value the rule itself refuses.
    """
    try:
        return _stop_rule(text)
    except (ValueError, TypeError) as e:  # the rule's own check of its arguments
        raise argparse.ArgumentTypeError(f"{text!r}: {e}") from None


def _stop_rule(text: str):
    """:func:`parse_stop` without the translation of the rules' own errors."""
    from . import stop

    name, eq, value = text.partition("=")
    name = name.strip().lower().replace("_", "-")
    value = value.strip()
    if not eq or not value:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, one of {_STOP_FORMS}; got {text!r}")

    def tol(s: str) -> float:
        try:
            v = float(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: the tolerance must be a number >= 0, got {s!r}") from None
        if not (math.isfinite(v) and v >= 0):
            raise argparse.ArgumentTypeError(f"{text!r}: the tolerance must be a finite number >= 0, got {s!r}")
        return v

    def count(s: str, what: str) -> int:
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: {what} must be a positive integer, got {s!r}") from None
        if v <= 0:
            raise argparse.ArgumentTypeError(f"{text!r}: {what} must be a positive integer, got {s!r}")
        return v

    if name == "loss-delta":
        return stop.LossDelta(tol(value))
    if name == "weight-delta":
        return stop.WeightDelta(tol(value))
    if name == "loss-below":
        return stop.LossBelow(tol(value))
    if name == "max-steps":
        return stop.MaxSteps(count(value, "the number of steps"))
    if name == "plateau":
        t, colon, p = value.partition(":")
        if not colon:
            raise argparse.ArgumentTypeError(f"{text!r}: expected plateau=TOL:PATIENCE, e.g. plateau=1e-6:100")
        return stop.Plateau(tol(t.strip()), patience=count(p.strip(), "the patience"))
    raise argparse.ArgumentTypeError(f"unknown rule {name!r} in {text!r}; expected one of {_STOP_FORMS}")


def _need_matplotlib(option: str) -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise CliError(f"{option} needs matplotlib, which is not installed: {PLOT_INSTALL}") from None


# ---------------------------------------------------------------------------------------------
# the parser


def build_parser() -> argparse.ArgumentParser:
    """The ``fastgrad`` argument parser, with the subcommands demo, train and check."""
    from . import __version__
    from .plotting import MAX_WEIGHT_LINES

    parser = _Parser(
        prog="fastgrad",
        description="fastgrad: hand-derived Dense/MSE kernels in C++, training loops that record every "
        "step, and TensorFlow as the oracle.",
        epilog="Run 'fastgrad COMMAND --help' for a command's options.  Start with 'fastgrad demo'.",
    )
    parser.add_argument("--version", action="version", version=f"fastgrad {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="run the walkthrough's experiments E1-E8 and tell what happened in each",
        description=textwrap.fill(
            "Run the walkthrough's experiments (all of E1-E8 by default) on fastgrad and tell what happened in "
            "each.  Where TensorFlow is installed, every run is replayed in it (the same batches through "
            "tf.GradientTape) and the largest deviation is printed.", 78),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Experiments:\n"
        "  E1  one weight, gradient descent by hand: the exact trajectory\n"
        "  E2  E1 replayed in TensorFlow (needs the tf extra)\n"
        "  E3  E1 with a model object, Dense(1, use_bias=False)\n"
        "  E4  SGD on raw data 1..1999: the gradients explode\n"
        "  E5  E4 after min-max scaling: it converges; LossBelow vs LossDelta\n"
        "  E6  a Dense layer recovers y = 3x1 + 2x2 - 7x3 + 5 by SGD\n"
        "  E7  the same with minibatches; why LossDelta stops too early, and Plateau\n"
        "  E8  two layers, Dense(10, relu) -> Dense(1): predictions beside targets",
    )
    demo.add_argument("experiments", nargs="*", metavar="E", help="experiments to run, e.g. E1 E4 (default: all)")
    demo.add_argument("--plots", metavar="DIR", help="write one PNG figure per experiment into DIR (needs matplotlib)")
    demo.add_argument("--no-replay", action="store_true", help="do not replay the runs in TensorFlow")
    demo.add_argument(
        "--replay-steps", type=_nonneg_int, default=REPLAY_STEPS, metavar="N",
        help=f"replay at most the first N steps of each run in TensorFlow; 0 replays all (default {REPLAY_STEPS})",
    )
    demo.set_defaults(func=cmd_demo)

    train = sub.add_parser(
        "train",
        help="train a Dense stack on a CSV file",
        description=textwrap.fill(
            "Train a stack of Dense layers on a CSV file with a header row, under MSE, with SGD.  The target "
            "column is predicted from all the other columns.  The input file is only read.", 78),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Stopping rules (--stop, repeatable; the first that fires stops the run; max-steps=10000 "
        "applies when none is given):\n"
        "  loss-delta=TOL          |L_t - L_(t-1)| <= TOL\n"
        "  loss-below=TOL          L_t <= TOL\n"
        "  weight-delta=TOL        max |w_t - w_(t-1)| <= TOL\n"
        "  plateau=TOL:PATIENCE    the best loss has not improved by more than TOL for PATIENCE steps\n"
        "  max-steps=N             N updates\n"
        "Example:\n"
        "  fastgrad train data.csv --target y --layers 10:relu,1 --lr 0.01 --batch-size 8 \\\n"
        "      --stop plateau=1e-6:200 --stop max-steps=5000 --normalize minmax --save weights.npz\n"
        "Exit status: 0 trained, 1 diverged, 2 bad input (or an output file that could not be written).",
    )
    train.add_argument("data", help="CSV file with a header row; every cell numeric")
    train.add_argument("--target", required=True, metavar="COL", help="the column to predict")
    train.add_argument(
        "--layers", type=parse_layers, default=parse_layers("1"), metavar="SPEC",
        help="comma-separated UNITS[:ACTIVATION] (linear or relu), the last layer with 1 unit; "
        "default '1' (linear regression); e.g. '10:relu,1'",
    )
    train.add_argument("--lr", type=_positive_float, default=0.01, help="learning rate (default 0.01)")
    train.add_argument("--batch-size", type=_positive_int, default=None, metavar="K",
                       help="K samples a step (default: all rows, full-batch gradient descent)")
    train.add_argument("--sampling", choices=("random", "shuffle"), default="random",
                       help="random: each step draws its batch anew; shuffle: epochs of a fresh permutation")
    train.add_argument("--stop", type=parse_stop, action="append", default=[], metavar="RULE",
                       help="a stopping rule (repeatable), see below")
    train.add_argument("--normalize", choices=("none", "minmax"), default="none",
                       help="minmax: scale every column, target included, to [0, 1] first (default none)")
    train.add_argument("--seed", type=_nonneg_int, default=0,
                       help="seeds the initial weights and the batches (default 0)")
    train.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="(default float32)")
    train.add_argument("--save", metavar="FILE.npz", help="save the trained weights (NumPy .npz)")
    train.add_argument("--plot", metavar="FILE.png",
                       help="save a figure of the loss, the gradient norm and the weights against the step, "
                       "in the format of the extension (.png when there is none; .pdf, .svg, ...).  The weights "
                       f"panel draws each weight when the model has at most {MAX_WEIGHT_LINES}, else each "
                       f"tensor's L2 norm, at up to {PLOT_WEIGHT_ROWS} recorded steps (fewer for a wide model, "
                       f"to keep the recording under {PLOT_RECORD_BYTES // 2**20} MiB).  Needs matplotlib")
    train.add_argument("--history", metavar="FILE.csv", help="save the loss and gradient norm of every step as CSV")
    train.add_argument("--no-progress", action="store_true",
                       help="no progress bar.  The bar (shown only on a terminal, with tqdm) runs the training "
                       "in the Python loop, which calls it after every step; without it the native (C++) "
                       "loop runs, faster")
    train.set_defaults(func=cmd_train)

    check = sub.add_parser(
        "check",
        help="check every gradient against TensorFlow and finite differences",
        description="On random data, compare every gradient of fastgrad.value_and_grad with TensorFlow's "
        "(the same weights and batch) and with central finite differences on a float64 copy of the model.  "
        "One line per tensor: the max absolute error, the relative error max|ours - ref| / max|ref|, and the "
        f"tolerance it is held to (TensorFlow: {TF_RTOL['float64']:g} in float64, {TF_RTOL['float32']:g} in "
        f"float32; finite differences: {FD_RTOL:g}, eps {FD_EPS:g}).  Exit status 1 if any is outside.",
    )
    check.add_argument("--layers", type=parse_layers, default=parse_layers("8:relu,4:relu,1"), metavar="SPEC",
                       help="comma-separated UNITS[:ACTIVATION] (default '8:relu,4:relu,1')")
    check.add_argument("--features", type=_positive_int, default=5, metavar="N", help="input width (default 5)")
    check.add_argument("--batch", type=_positive_int, default=16, metavar="N", help="batch size (default 16)")
    check.add_argument("--dtype", choices=("float32", "float64"), default="float64", help="(default float64)")
    check.add_argument("--seed", type=_nonneg_int, default=0, help="seeds the weights and the data (default 0)")
    check.add_argument("--no-tf", action="store_true", help="skip the TensorFlow comparison")
    check.set_defaults(func=cmd_check)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``fastgrad`` command with ``argv``; returns the exit status.

    Called as the program (``argv`` None: the command line), a run that imported TensorFlow
    ends with ``os._exit`` once its output is flushed: TensorFlow's interpreter teardown takes
    seconds and a finished command has nothing left to clean up.
    """
    status = _run(argv)
    if argv is None and "tensorflow" in sys.modules:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except OSError:  # e.g. the reader of a pipe went away
            pass
        os._exit(status)
    return status


def _run(argv: Optional[Sequence[str]]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_OK
    _OUTPUT_ERRORS.clear()
    try:
        status = args.func(args)
    except CliError as e:
        _err(f"fastgrad {args.command}: error: {e}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        _err(f"fastgrad {args.command}: interrupted")
        return EXIT_INTERRUPTED
    if _OUTPUT_ERRORS:  # the output is incomplete: not a success
        _err(f"fastgrad {args.command}: error: {_OUTPUT_ERRORS[0]}")
        return EXIT_USAGE
    return status


# ---------------------------------------------------------------------------------------------
# demo


def _g(v: float, digits: int = 4) -> str:
    """A short number: 0, 1.5, 2.6e-04, 6.959e+04."""
    v = float(v)
    if v == 0:
        return "0"
    if not math.isfinite(v):
        return str(v)
    return f"{v:.{digits}g}"


def _history_head(h, steps: int):
    """The first ``steps`` steps of History ``h`` (weights: the rows taken at step <= ``steps``)."""
    from .training import History

    weights = weight_steps = None
    if h.weights is not None:
        keep = np.asarray(h.weight_steps) <= steps
        weights = [w[keep] for w in h.weights]
        weight_steps = np.asarray(h.weight_steps)[keep]
    return History(
        loss=h.loss[:steps],
        grad_norm=h.grad_norm[:steps],
        batches=None if h.batches is None else h.batches[:steps],
        weights=weights,
        weight_steps=weight_steps,
    )


def _truncated(result, steps: int):
    """A copy of ``result`` holding only its first ``steps`` steps (for a shorter replay)."""
    if steps <= 0 or result.steps <= steps:
        return result
    return dataclasses.replace(result, steps=steps, history=_history_head(result.history, steps),
                               stopped_by="truncated")


class _Oracle:
    """Replays runs in TensorFlow when it is installed.

    TensorFlow takes seconds to import, so the import starts in a background thread as soon as
    the demo starts, while the first experiment runs and draws; the first replay waits for it.
    """

    def __init__(self, enabled: bool, steps: int) -> None:
        self.steps = steps
        self.installed = importlib.util.find_spec("tensorflow") is not None
        self.enabled = enabled and self.installed
        self._ok = False
        self._thread: Optional[threading.Thread] = None
        self.told_missing = False
        if self.enabled:
            self._thread = threading.Thread(target=self._import, name="fastgrad-import-tensorflow", daemon=True)
            self._thread.start()

    def _import(self) -> None:
        from . import oracle

        try:
            self._ok = oracle.available()
        except Exception:  # a broken TensorFlow install: no replays, as if it were missing
            self._ok = False

    @property
    def available(self) -> bool:
        """Whether the replays run (waits for the background import)."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        return self.enabled and self._ok

    def replay(self, result, x, y):
        """(TF's History, the replayed copy of ``result``) for the first ``steps`` steps."""
        from . import oracle

        short = _truncated(result, self.steps)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return oracle.replay(short, x, y), short

    def lines(self, ex, runs: Optional[Sequence[str]] = None) -> List[str]:
        """One line per run of experiment ``ex``: the largest deviation of its TF replay.

        The figures are :func:`fastgrad.walkthrough.max_deviation`'s.  A run that diverged is
        compared up to its last finite step, and the line says whether TensorFlow diverged at
        the same step.
        """
        if not self.enabled:
            return []
        if not self.available:
            if self.told_missing:
                return []
            self.told_missing = True
            return [f"TensorFlow could not be imported, so the runs are not replayed in it: {TF_INSTALL}"]
        from .walkthrough import max_deviation

        out = []
        for name in runs or list(ex.results):
            r = ex.results[name]
            h, short = self.replay(r, ex.data["x"], ex.data["y"])
            finite = np.isfinite(short.history.loss) & np.isfinite(h.loss)
            k = int(np.argmin(finite)) if not finite.all() else len(finite)
            note = ""
            if k < short.steps:
                same = not np.isfinite(short.history.loss[k]) and not np.isfinite(h.loss[k])
                note = (f"; TensorFlow diverges at the same step {k + 1} (loss {h.loss[k]})" if same
                        else f"; at step {k + 1} the losses part: fastgrad {short.history.loss[k]}, "
                        f"TensorFlow {h.loss[k]}")
                short = dataclasses.replace(short, steps=k, history=_history_head(short.history, k))
                h = _history_head(h, k)
            with np.errstate(all="ignore"):
                dev = max_deviation(short, h, ex.data["y"])
            part = f"{r.steps} steps" if self.steps <= 0 or r.steps <= self.steps else \
                f"first {self.steps} of {r.steps} steps"
            if note:
                part += f", compared over the {k} finite ones"
            label = "" if len(ex.results) == 1 else f" of {name!r}"
            # a diverging loss is far from 0 at every step: there the step-by-step ratio is the
            # meaningful one (the RMS-residual figure is relative to y, which it outgrows)
            loss = f"loss (step by step) {_g(dev['loss_strict'], 2)}" if note else f"loss {_g(dev['loss'], 2)}"
            weights = (f"weights {_g(dev['weights'], 2)}" if short.history.weights is not None
                       else "weights not recorded")
            out.append(
                f"TensorFlow replay{label} ({part}, {r.dtype}): largest relative deviation "
                f"{loss}, {weights}{note}"
            )
        return out


def _list(values: Sequence[float]) -> str:
    """Exact floats, as Python writes them: [2.0, 1.5, 1.25]."""
    return "[" + ", ".join(repr(float(v)) for v in values) + "]"


def _vec(values: Sequence[float], digits: int = 4) -> str:
    return "[" + ", ".join(f"{float(v):.{digits}f}" for v in values) + "]"


E6_TRUTH = (3.0, 2.0, -7.0, 5.0)


def _tell_e1(ex, tf: _Oracle) -> List[str]:
    f, r = ex.facts, ex.results["run"]
    w, losses = f["weights"], f["losses"]
    lines = [
        "x = [1, 2], y = [1, 2], one weight w0 = 2, no bias, lr 0.1, full batch;",
        "stop when |w_t - w_(t-1)| <= 0.1 (WeightDelta(0.1)).  "
        "MSE L(w) = mean((x w - y)^2), dL/dw = 2 mean(x (x w - y)).",
        "  step   w before   loss L(w)   gradient   w after",
    ]
    for t, loss in enumerate(losses):
        grad = (w[t] - w[t + 1]) / r.learning_rate
        lines.append(f"  {t + 1:>4}   {w[t]:<9}  {loss:<10}  {_g(grad):<9}  {w[t + 1]}")
    lines += [
        f"weights: {_list(w)}",
        f"losses: {_list(losses)}",
        f"final loss: {f['final_loss']!r}  (at w = {w[-1]!r}, on all of x)",
        f"stopped by {f['stopped_by']} after {r.steps} steps: |{w[-1]!r} - {w[-2]!r}| = {abs(w[-1] - w[-2])!r} <= 0.1."
        "  The walkthrough's numbers, exactly: every one of them is a binary fraction.",
    ]
    return lines


def _tell_e2(ex, tf: _Oracle) -> List[str]:
    f = ex.facts
    dev = f["deviation"]  # fastgrad.walkthrough.max_deviation
    return [
        "E1's steps again through tf.GradientTape (the same weights, the same batches):",
        f"TensorFlow weights: {_list(f['tf_weights'])}",
        f"TensorFlow losses: {_list(f['tf_losses'])}",
        f"fastgrad weights:   {_list(f['weights'])}",
        f"largest relative deviation: loss {_g(dev['loss'], 2)}, weights {_g(dev['weights'], 2)}"
        + ("  (identical)" if dev["loss"] == 0 and dev["weights"] == 0 else ""),
    ]


def _tell_e3(ex, tf: _Oracle) -> List[str]:
    f = ex.facts
    return [
        "model = Dense(1, use_bias=False) with kernel [[2.0]]:",
        f"model([[3.0]]) = {f['call_3']}  (the walkthrough: 6.0)",
        f"trained as in E1: weights {_list(f['weights'])}, losses {_list(f['losses'])}, "
        f"final loss {f['final_loss']!r}",
    ]


def _tell_e4(ex, tf: _Oracle) -> List[str]:
    f, r = ex.facts, ex.results["run"]
    x = ex.data["x"][:, 0]
    lr = r.learning_rate
    lines = [
        f"x = y = 1..{len(x)} unscaled, one weight w0 = 2, SGD with one random sample a step, lr {lr:g}.",
        "  step   sample x   loss           gradient norm   w after",
    ]
    batches = r.history.batches
    for t in range(r.steps):
        xi = x[batches[t][0]]
        lines.append(
            f"  {t + 1:>4}   {xi:>8g}   {_g(f['losses'][t], 5):<13}  {_g(f['grad_norms'][t], 5):<14}  "
            f"{_g(f['weights'][t + 1], 5)}"
        )
    losses = np.asarray(f["losses"], dtype=np.float64)
    fin = losses[np.isfinite(losses)]
    growth = float(np.exp(np.mean(np.diff(np.log(fin))))) if fin.size > 1 else math.nan
    first_x = float(x[batches[0][0]])
    stable = int(np.sum(x * x < 1.0 / lr))
    if f["stopped_by"] == "diverged":
        lines.append(
            f"diverged at step {f['steps']}: the loss and the gradient norm grew every step "
            f"(the loss about x{_g(growth, 2)} a step) until they overflowed float32."
        )
    else:  # pragma: no cover - the walkthrough's run always diverges
        lines.append(f"stopped by {f['stopped_by']} after {f['steps']} steps")
    if f["warning"]:
        lines.append(f"fastgrad stopped the run with a DivergenceWarning: {f['warning'][0]}")
    lines.append(
        f"Why: one step on a sample (x, y = x) maps the error w - 1 to (1 - 2 lr x^2)(w - 1).  With lr = {lr:g} "
        f"that factor is larger than 1 in size for every x > {math.sqrt(1 / lr):.1f} ({len(x) - stable} of the "
        f"{len(x)} samples): the first sample here, x = {first_x:g}, multiplied the error by "
        f"{abs(1 - 2 * lr * first_x ** 2):.0f}."
    )
    return lines


def _tell_e5(ex, tf: _Oracle) -> List[str]:
    f, r, r_lb = ex.facts, ex.results["run"], ex.results["loss_below"]
    lr = r.learning_rate
    return [
        f"E4's data after fastgrad.minmax on x and y: both in [0, 1] (still y = x, so w = 1 is exact), lr {lr:g}.",
        f"Now the factor 1 - 2 lr x^2 lies in [{1 - 2 * lr:g}, 1] for every sample: each step shrinks the error.",
        f"after {f['steps']} steps: w = {f['w']:.7f}, final loss {_g(f['final_loss'])} (on all samples); "
        f"stopped by {r.stopped_by}, no divergence.",
        "The walkthrough stopped this loop on tf.abs(L_t, L_(t-1)) <= 1e-4.  TensorFlow reads the second argument "
        "as the op's name, so that tests |L_t| <= 1e-4: fastgrad's LossBelow(1e-4), not LossDelta(1e-4).",
        f"LossBelow(1e-4) on one sample's loss fires at step {f['loss_below_steps']} with w = "
        f"{f['loss_below_w']:.4f} (loss on all samples {_g(f['loss_below_final_loss'])}): one sample with a small "
        f"loss, not a converged model (the walkthrough ended at w = 1.117).  stopped by {r_lb.stopped_by}.",
    ]


def _recovered(kernel: Sequence[float], bias: float) -> str:
    err = max(abs(a - b) for a, b in zip(list(kernel) + [bias], E6_TRUTH))
    return f"kernel = {_vec(kernel)}, bias = {bias:.4f}  (true 3, 2, -7, 5; largest error {_g(err, 2)})"


def _tell_e6(ex, tf: _Oracle) -> List[str]:
    f, r = ex.facts, ex.results["run"]
    return [
        "Dense(1) on 100 samples x ~ N(0, 1)^3 (np.random.seed(42)), y = 3 x1 + 2 x2 - 7 x3 + 5; "
        f"SGD, one sample a step, lr {r.learning_rate:g}.",
        f"after {r.steps} steps ({r.stopped_by}):",
        f"recovered: {_recovered(f['kernel'], f['bias'])}",
        f"final loss {_g(f['final_loss'])} (on all samples)",
        "The walkthrough stopped on tf.abs(L_t, L_(t-1)) <= 0.01, i.e. LossBelow(0.01) on one sample's loss, at "
        "(1.85, 2.22, -7.03, 4.62): one small sample loss is not a small loss on the data.",
    ]


def _tell_e7(ex, tf: _Oracle) -> List[str]:
    from .walkthrough import E7_EARLY_STOP_SEED

    f, r = ex.facts, ex.results["run"]
    r_ld, r_pl = ex.results["loss_delta"], ex.results["plateau"]
    return [
        f"E6 with minibatches of {r.batch_size} samples, lr {r.learning_rate:g}.",
        f"after {r.steps} steps ({r.stopped_by}):",
        f"recovered: {_recovered(f['kernel'], f['bias'])}",
        f"final loss {_g(f['final_loss'])} (on all samples)",
        "LossDelta(0.1) stops when two consecutive batch losses differ by at most 0.1.  A minibatch loss is noisy: "
        "it jumps with the samples drawn, so two batches can land within 0.1 of each other by chance, far "
        "from the minimum.",
        f"  LossDelta(0.1), seed {E7_EARLY_STOP_SEED}: stopped ({r_ld.stopped_by}) at step {f['loss_delta_steps']}, "
        f"batch loss {_g(f['loss_delta_batch_loss'])}, loss on all samples {_g(f['loss_delta_final_loss'])}, "
        f"kernel {_vec(f['loss_delta_kernel'], 2)}, bias {f['loss_delta_bias']:.2f}  (the walkthrough's run "
        "stopped at loss ~40)",
        f"  over 100 seeds, LossDelta(0.1) stopped with a loss above 1 on all samples in "
        f"{100 * f['loss_delta_bad_share']:.0f}% of the runs.",
        f"  Plateau(1e-6, patience=100) waits until the best loss has not improved for 100 steps: stopped "
        f"({r_pl.stopped_by}) at step {f['plateau_steps']}, loss {_g(f['plateau_final_loss'])}, "
        f"kernel {_vec(f['plateau_kernel'], 2)}, bias {f['plateau_bias']:.2f}.",
    ]


def _tell_e8(ex, tf: _Oracle) -> List[str]:
    f, r = ex.facts, ex.results["run"]
    lines = [
        "Dense(10, relu) -> Dense(1) on make_regression(n_samples=10, n_features=10, bias=1, random_state=42); "
        f"SGD, one sample a step, lr {r.learning_rate:g}, {r.steps} steps ({r.stopped_by}).",
        f"the loss fell from {_g(f['first_losses'])} (mean of the first 10 steps) to {_g(f['final_loss'])} "
        f"(on all samples): {f['first_losses'] / max(f['final_loss'], 1e-300):.2g} times smaller.",
        "  sample   prediction    target        error",
    ]
    for i, (p, t) in enumerate(zip(f["predictions"], f["targets"])):
        lines.append(f"  {i:>6}   {p:>11.3f}   {t:>11.3f}   {p - t:>+9.3f}")
    lines.append(f"largest error {_g(f['max_abs_error'], 3)}")
    return lines


_TELL: Dict[str, Callable[[Any, _Oracle], List[str]]] = {
    "E1": _tell_e1, "E2": _tell_e2, "E3": _tell_e3, "E4": _tell_e4,
    "E5": _tell_e5, "E6": _tell_e6, "E7": _tell_e7, "E8": _tell_e8,
}

_RULES_NOTE = [
    "Stopping rules, as the walkthrough uses them:",
    "  LossDelta(tol)   |L_t - L_(t-1)| <= tol   (E7/E8's loops: tf.abs(L_t - L_(t-1)) <= margin)",
    "  LossBelow(tol)   L_t <= tol               (E4-E6's loops: tf.abs(L_t, L_(t-1)) <= margin, which TensorFlow "
    "reads as |L_t|)",
    "  WeightDelta(tol) max |w_t - w_(t-1)| <= tol (E1)",
    "  Plateau(tol, patience) for noisy minibatch losses; MaxSteps(n) always as a cap.",
]


def _tf_history_of_e2(ex):
    """E2's TensorFlow trajectory (from its facts) as a History, to draw beside fastgrad's."""
    from .training import History

    f = ex.facts
    w = np.asarray(f["tf_weights"], dtype=np.float64).reshape(-1, 1, 1)
    n = len(f["tf_losses"])
    return History(loss=np.asarray(f["tf_losses"], dtype=np.float64), grad_norm=np.full(n, np.nan), batches=None,
                   weights=[w], weight_steps=np.arange(len(w)))


def _figure(ex, directory: Path) -> Path:
    from .plotting import DPI, plot_runs

    runs = dict(ex.results)
    kwargs: Dict[str, Any] = {}
    if ex.id in ("E1", "E3", "E5"):
        kwargs["truth"] = {"w = 1 (the minimum)": 1.0}
    elif ex.id == "E2":
        runs = {"fastgrad": ex.results["run"]}
        kwargs["extra"] = {"TensorFlow": _tf_history_of_e2(ex)}
        kwargs["truth"] = {"w = 1 (the minimum)": 1.0}
    elif ex.id in ("E6", "E7"):
        kwargs["truth"] = dict(zip(("3", "2", "-7", "5 (bias)"), E6_TRUTH))
    elif ex.id == "E4":
        kwargs["log"] = True  # the divergence spans 30 decades
    fig = plot_runs(runs, title=f"{ex.id}: {ex.title}", **kwargs)
    path = directory / f"{ex.id.lower()}.png"
    fig.savefig(path, dpi=DPI)
    return path


def cmd_demo(args: argparse.Namespace) -> int:
    """``fastgrad demo``: run the experiments, tell each, replay in TF, draw the figures."""
    from . import walkthrough

    unknown = [e for e in args.experiments if e.upper() not in walkthrough.EXPERIMENTS]
    if unknown:
        raise CliError(f"unknown experiment {unknown[0]!r}; expected some of {', '.join(walkthrough.EXPERIMENTS)} "
                       "(or none, for all of them)")
    ids = [e.upper() for e in args.experiments] or list(walkthrough.EXPERIMENTS)
    plots: Optional[Path] = None
    if args.plots is not None:
        _need_matplotlib("--plots")
        plots = Path(args.plots)
        if plots.exists() and not plots.is_dir():
            raise CliError(f"--plots: {str(plots)!r} exists and is not a directory")
        try:
            plots.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CliError(f"--plots: cannot create directory {str(plots)!r}: {e.strerror}") from None

    start = time.perf_counter()
    if plots is not None:
        import matplotlib.figure  # noqa: F401  (before TensorFlow's import starts in its thread)
    tf = _Oracle(enabled=not args.no_replay, steps=args.replay_steps)
    if args.no_replay:
        _out("TensorFlow replays: off (--no-replay)")
    elif not tf.installed:
        tf.told_missing = True
        _out(f"TensorFlow is not installed, so the runs are not replayed in it: {TF_INSTALL}")
    for eid in ids:
        t0 = time.perf_counter()
        if eid == "E2" and not tf.available:
            why = "used (--no-replay)" if args.no_replay else "installed" if not tf.installed else "importable"
            _out("\n== E2: E1 again, replayed in TensorFlow")
            _out(f"E2 is E1 replayed in TensorFlow, which is not {why}: {TF_INSTALL}")
            continue
        ex = walkthrough.EXPERIMENTS[eid]()
        _out(f"\n== {ex.id}: {ex.title}")
        for line in _TELL[eid](ex, tf):
            _out(line)
        if eid != "E2":
            for line in tf.lines(ex):
                _out(line)
        if plots is not None:
            _out(f"figure: {_figure(ex, plots)}")
        _out(f"({time.perf_counter() - t0:.2f} s)")
    if any(e in ids for e in ("E4", "E5", "E6", "E7", "E8")):
        _out("")
        for line in _RULES_NOTE:
            _out(line)
    _out(f"\ndemo finished in {time.perf_counter() - start:.1f} s")
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# train


def read_csv(path: Path) -> Tuple[List[str], np.ndarray]:
    """Read a numeric CSV with a header row: ``(column names, (rows, columns) float64 array)``.

    Blank lines and lines starting with '#' are skipped.  Raises :class:`CliError` with a
    one-line message naming the file, the line and the column for every problem: a missing or
    unreadable file, no header, no data rows, a row of the wrong length, an empty or
    non-numeric cell, NaN or infinity, duplicate column names, a first row of numbers (no header).
    """
    name = str(path)
    if not path.exists():
        raise CliError(f"{name}: no such file")
    if path.is_dir():
        raise CliError(f"{name}: is a directory, expected a CSV file")
    header: Optional[List[str]] = None
    rows: List[List[float]] = []
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            for cells in reader:
                line = reader.line_num
                if not cells or all(not c.strip() for c in cells) or cells[0].lstrip().startswith("#"):
                    continue
                if header is None:
                    header = _header(f"{name} line {line}", cells)
                    continue
                if len(cells) != len(header):
                    raise CliError(
                        f"{name} line {line}: expected {len(header)} cells (as the header), got {len(cells)}"
                    )
                row = []
                for h, c in zip(header, cells):
                    s = c.strip()
                    if not s:
                        raise CliError(
                            f"{name} line {line}, column {h!r}: empty cell (missing values are not supported)"
                        )
                    try:
                        v = float(s)
                    except ValueError:
                        raise CliError(
                            f"{name} line {line}, column {h!r}: {s!r} is not a number{_separator_hint(header)}"
                        ) from None
                    if math.isnan(v):
                        raise CliError(f"{name} line {line}, column {h!r}: NaN (missing values are not supported)")
                    if math.isinf(v):
                        raise CliError(f"{name} line {line}, column {h!r}: {s!r} is infinite")
                    row.append(v)
                rows.append(row)
    except OSError as e:
        raise CliError(f"{name}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise CliError(f"{name}: not a UTF-8 text file; expected a CSV file") from None
    except csv.Error as e:
        raise CliError(f"{name}: not a readable CSV file: {e}") from None
    if header is None:
        raise CliError(f"{name}: the file is empty; expected a header row and rows of numbers")
    if not rows:
        raise CliError(f"{name}: has a header but no data rows{_no_header_hint(header)}")
    return header, np.asarray(rows, dtype=np.float64)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _header(where: str, cells: Sequence[str]) -> List[str]:
    """The column names of a header row (``where``: 'FILE line N'), or CliError: a name that is
    empty or repeated.  (Names may be numbers: pandas writes 0,1,2,... for unnamed columns.)"""
    header = [c.strip() for c in cells]
    for j, h in enumerate(header):
        if not h:
            raise CliError(f"{where}: column {j + 1} of the header has no name")
    dup = sorted({h for h in header if header.count(h) > 1})
    if dup:
        raise CliError(f"{where}: duplicate column name {dup[0]!r} in the header")
    return header


def _no_header_hint(header: Sequence[str]) -> str:
    """A hint for a file whose first row is data, read as the header: '' unless every name is a number."""
    if not all(_is_number(h) for h in header):
        return ""
    return ("; the first row holds only numbers: does the file have a header row with column names? (lines "
            "starting with '#' are skipped as comments, so np.savetxt's '# x,y' header is not read)")


def _separator_hint(header: Sequence[str]) -> str:
    """A hint for a file separated by ';' or tabs, read as one column: '' when none shows."""
    for sep in (";", "\t"):
        if any(sep in h for h in header):
            return f"; fields must be separated by commas (the header holds {sep!r})"
    return ""


def _same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name one file: the same resolved path, or one file under two names.
    A device (/dev/null) is never one: what is written to it is not kept."""
    try:
        if a.exists() and not a.is_file() and not a.is_dir():
            return False
    except OSError:
        pass
    try:
        if a.exists() and b.exists() and os.path.samefile(a, b):
            return True
    except OSError:
        pass
    return a.resolve() == b.resolve()


def _check_output(option: str, value: str, data: Path) -> Path:
    """An output path, checked before training: not a directory, in a directory that exists and
    can be written (or a file that can be), not the input file."""
    p = Path(value)
    if p.is_dir():
        raise CliError(f"{option}: {value!r} is a directory; expected a file name")
    if not p.parent.exists():
        raise CliError(f"{option}: the directory of {value!r} does not exist")
    if not p.parent.is_dir():
        raise CliError(f"{option}: {str(p.parent)!r} is not a directory, so {value!r} cannot be created")
    writable = os.access(p, os.W_OK) if p.exists() else os.access(p.parent, os.W_OK | os.X_OK)
    if not writable:
        raise CliError(f"{option}: {value!r} cannot be written (permission denied)")
    if _same_file(p, data):
        raise CliError(f"{option}: {value!r} is the input file; fastgrad never overwrites its input")
    return p


def _plot_formats() -> List[str]:
    """The extensions --plot writes: matplotlib's formats, less pgf (LaTeX code, needs a TeX install)."""
    from matplotlib.backend_bases import FigureCanvasBase

    return sorted(set(FigureCanvasBase.get_supported_filetypes()) - {"pgf"})


def _plot_name(value: str) -> str:
    """--plot's file name, '.png' added when it has no extension (as matplotlib would add it);
    CliError for an extension that is not a figure format."""
    if Path(value).is_dir():
        raise CliError(f"--plot: {value!r} is a directory; expected a file name")
    ext = Path(value).suffix[1:].lower()
    if not ext:
        return value + ".png"
    formats = _plot_formats()
    if ext not in formats:
        raise CliError(f"--plot: {value!r}: '.{ext}' is not a figure format; expected one of "
                       f"{', '.join('.' + f for f in formats)}")
    return value


#: ``train``'s output options, each with the label of the line that reports its file
_OUTPUTS = {"--save": "weights:", "--history": "history:", "--plot": "figure:"}


def _train_outputs(args: argparse.Namespace, data: Path) -> Dict[str, Path]:
    """``train``'s output files, checked before anything runs: {option: path} for those given.

    Each must be writable (:func:`_check_output`), --plot's a figure format, and no two the same file.
    """
    values = {option: getattr(args, option[2:]) for option in _OUTPUTS}
    if values["--plot"] is not None:
        _need_matplotlib("--plot")
        values["--plot"] = _plot_name(values["--plot"])
    outputs = {option: _check_output(option, v, data) for option, v in values.items() if v is not None}
    options = list(outputs)
    for i, a in enumerate(options):
        for b in options[:i]:
            if _same_file(outputs[a], outputs[b]):
                raise CliError(f"{a}: {str(outputs[a])!r} is also the file of {b}; each output needs a file "
                               "of its own")
    return outputs


def _n_params(spec: Sequence[Tuple[int, str]], features: int) -> int:
    """The number of parameters (kernels and biases) of the Dense stack ``spec`` on ``features`` inputs."""
    widths = [features] + [u for u, _ in spec]
    return sum((i + 1) * o for i, o in zip(widths, widths[1:]))


def _available_memory() -> Optional[int]:
    """The bytes of memory this process can still take: /proc/meminfo's MemAvailable, or less
    under a cgroup (v2) limit; None where neither can be read."""
    found = []
    try:
        with open("/proc/meminfo") as fh:
            found += [int(line.split()[1]) * 1024 for line in fh if line.startswith("MemAvailable:")]
    except (OSError, ValueError, IndexError):
        pass
    try:
        cgroup = Path("/sys/fs/cgroup")
        limit = (cgroup / "memory.max").read_text().strip()
        if limit != "max":
            used = int((cgroup / "memory.current").read_text())
            for line in (cgroup / "memory.stat").read_text().splitlines():
                if line.startswith("inactive_file "):  # page cache the kernel reclaims on demand
                    used -= int(line.split()[1])
            found.append(int(limit) - used)
    except (OSError, ValueError):
        pass
    return min(found) if found else None


def _size(n: float) -> str:
    """Bytes as '3.2 GiB', or '12 MiB' below a GiB."""
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def _check_model_size(spec: Sequence[Tuple[int, str]], features: int, rows: int, batch: Optional[int], dtype: str,
                      options: str) -> None:
    """Refuse (CliError on ``options``, the ones that set the sizes) a model of more than
    MAX_PARAMS parameters, or one that would not fit in the memory available: 4 copies of the
    parameters (the weights, the gradients, the initial and the final weights), and the larger
    of a step's scratch (every layer's output and gradient on a batch of ``batch`` rows, all
    ``rows`` for full batch) and the final loss's pass over all ``rows`` (two layers' outputs at
    a time)."""
    params = _n_params(spec, features)
    model = f"{_describe_layers(spec)} on {features} inputs"
    if params > MAX_PARAMS:
        raise CliError(f"{options}: {model} has {params:,} parameters; at most {MAX_PARAMS:,} are supported")
    widths = [features] + [u for u, _ in spec]
    step = (rows if batch is None else batch) * (2 * sum(widths[1:]) + widths[0] + widths[-1])
    final = rows * max(a + b for a, b in zip(widths, widths[1:]))
    need = np.dtype(dtype).itemsize * (4 * params + max(step, final))
    free = _available_memory()
    if free is not None and need > free:
        raise CliError(f"{options}: {model} and {rows} rows needs about {_size(need)} of memory ({params:,} "
                       f"parameters, {dtype}), and {_size(free)} is available")


def _record_every(total: int, row_bytes: int) -> int:
    """``record_weights`` for --plot: every k steps of a run of at most ``total`` steps, so that the
    recording (the initial weights, a row every k steps, the last row; ``row_bytes`` each) holds at
    most PLOT_WEIGHT_ROWS rows and PLOT_RECORD_BYTES bytes.  0 (no recording) for a model too wide
    for three rows."""
    rows = min(PLOT_WEIGHT_ROWS, PLOT_RECORD_BYTES // max(1, row_bytes)) - 2
    if rows < 1:
        return 0
    return max(1, -(-total // rows))


def _max_steps(rules) -> int:
    from . import stop
    from .training import DEFAULT_MAX_STEPS

    caps = [r.n for r in rules if isinstance(r, stop.MaxSteps)]
    return min(caps) if caps else DEFAULT_MAX_STEPS


def _progress(total: int, disabled: bool):
    """A tqdm bar and the callback that advances it; (None, None) without tqdm or a terminal."""
    if disabled:
        return None, None
    try:
        from tqdm import tqdm
    except ImportError:
        return None, None
    bar = tqdm(total=total, unit="step", disable=None, leave=False, file=sys.stderr, dynamic_ncols=True)
    if bar.disable:  # not a terminal
        bar.close()
        return None, None

    def advance(state) -> None:
        bar.update(1)
        if state.step % 100 == 0:
            bar.set_postfix(loss=f"{state.loss:.4g}", refresh=False)

    return bar, advance


def _split(header: List[str], table: np.ndarray, target: str, data: Path, dtype: str):
    """(x, y, feature names): the target column and the others; CliError for a missing target, no
    feature, or values too large for ``dtype``."""
    if target not in header:
        raise CliError(f"{str(data)}: no column {target!r}; the columns are: {', '.join(header)}"
                       f"{_separator_hint(header)}{_no_header_hint(header)}")
    ti = header.index(target)
    features = [h for j, h in enumerate(header) if j != ti]
    if not features:
        raise CliError(f"{str(data)}: only the target column {target!r}; need at least one feature column")
    big = np.abs(table).max(axis=0) > np.finfo(np.dtype(dtype)).max
    if big.any():
        col = header[int(np.argmax(big))]
        raise CliError(f"{str(data)}: column {col!r} holds values too large for {dtype}; try --dtype float64")
    return np.delete(table, ti, axis=1), table[:, ti].copy(), features


def _minmax(header: List[str], table: np.ndarray, target: str):
    """--normalize minmax: (x, y, scaling), every column scaled to [0, 1] and ``scaling`` the
    ranges saved with the weights; CliError for a column that is constant or whose range overflows."""
    import fastgrad as fg

    lo, hi = table.min(axis=0), table.max(axis=0)
    with np.errstate(over="ignore"):
        span = hi - lo
    for h, d in zip(header, span):
        if d == 0:
            raise CliError(f"--normalize minmax: column {h!r} is constant; nothing to scale by")
        if not np.isfinite(d):
            raise CliError(f"--normalize minmax: column {h!r}: its range (max - min) overflows float64; "
                           "divide the column by a power of ten first")
    ti = header.index(target)
    x, y = fg.minmax(np.delete(table, ti, axis=1)), fg.minmax(table[:, ti])
    return x, y, {"x_min": np.delete(lo, ti), "x_max": np.delete(hi, ti), "y_min": lo[ti], "y_max": hi[ti]}


def _fit(args: argparse.Namespace, spec, x: np.ndarray, y: np.ndarray, rules, total: int, record: int):
    """Build the model and train it: (model, result, the DivergenceWarnings' messages).

    Bad arguments and running out of memory are CliErrors.
    """
    import fastgrad as fg

    bar, advance = _progress(total, args.no_progress)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", fg.DivergenceWarning)
            model = fg.Sequential([fg.Dense(u, a, dtype=args.dtype) for u, a in spec], seed=args.seed)
            model.build(x.shape[1])  # here, so that --seed seeds the initial weights (fit would build a
            #                          one-layer Sequential without its seed)
            result = fg.fit(
                model, x, y, optimizer=fg.SGD(args.lr), batch_size=args.batch_size, sampling=args.sampling,
                stop=rules, seed=args.seed, record_weights=record or False, callbacks=[advance] if advance else [],
            )
            result.final_loss  # a pass over all rows, computed on first access: here, under the guard
    except (ValueError, TypeError) as e:
        raise CliError(str(e)) from None
    except MemoryError:
        raise CliError(f"out of memory while training {_describe_layers(spec)} on {x.shape[0]} rows x "
                       f"{x.shape[1]} features; try fewer units") from None
    finally:
        if bar is not None:
            bar.close()
    return model, result, [str(w.message) for w in caught if issubclass(w.category, fg.DivergenceWarning)]


def _cli_hint(message: str, scaled: bool) -> str:
    """A DivergenceWarning's message with its closing hint ('Try a smaller learning rate or scaled
    data (fastgrad.minmax).') in the command's terms: its options."""
    head = re.sub(r"\s*Try\b.*$", "", message, flags=re.S)
    return f"{head} Try a smaller --lr" + ("." if scaled else ", or --normalize minmax.")


SAVE_IN_MEMORY_BYTES = 256 << 20  # weights up to this size are built in memory before --save writes them


def _write_weights(path: Path, model, spec, features: List[str], target: str, scaling: Dict[str, Any]) -> None:
    arrays: Dict[str, Any] = {}
    for i, layer in enumerate(model.layers):
        arrays[f"layer{i}_kernel"] = layer.kernel
        arrays[f"layer{i}_bias"] = layer.bias
    arrays.update(
        layers=np.array(",".join(f"{u}:{a}" for u, a in spec)), features=np.array(features),
        target=np.array(target), **scaling,
    )
    # Built in memory, then written: a failed write (a full disk) is then one plain OSError.  Written
    # straight to the file, NumPy before 2.1 leaves its ZipFile open on error, and its later
    # garbage collection prints "Exception ignored ... Traceback".  Very large weights are written
    # straight (a second copy in memory would cost more than that message).
    if sum(a.nbytes for a in arrays.values() if isinstance(a, np.ndarray)) <= SAVE_IN_MEMORY_BYTES:
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        with open(path, "wb") as fh:
            fh.write(buf.getbuffer())
        return
    with open(path, "wb") as fh:  # a file object: np.savez adds no '.npz' to the name
        np.savez(fh, **arrays)


def _write_history(path: Path, result) -> None:
    h = result.history
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["step", "loss", "grad_norm"])
        for t, (loss, gn) in enumerate(zip(h.loss, h.grad_norm), start=1):
            w.writerow([t, repr(float(loss)), repr(float(gn))])


def _write_figure(path: Path, result, spec, data: Path) -> None:
    from .plotting import DPI, plot_runs

    fig = plot_runs({"run": result}, title=f"{_describe_layers(spec)} on {data.name}: {result.steps} steps, "
                    f"{result.stopped_by}, final loss {result.final_loss:.4g}")
    fig.savefig(path, dpi=DPI, format=path.suffix[1:].lower())


def _write_outputs(outputs: Dict[str, Path], write: Dict[str, Callable[[Path], None]]) -> Dict[str, str]:
    """Write every output with its writer in ``write``; {option: message} for those that failed
    (an OSError: a full disk, a path the early checks could not rule out), the others written."""
    failed = {}
    for option, path in outputs.items():
        try:
            write[option](path)
        except OSError as e:
            failed[option] = f"{option}: cannot write {str(path)!r}: {e.strerror or e}"
    return failed


def _report(args: argparse.Namespace, spec, n: int, features: List[str], scaled: bool, rules, total: int,
            result) -> None:
    """The summary of a run on stdout: what was trained, the steps, the stop, the loss, the time."""
    from . import stop

    rate = result.steps / result.seconds if result.seconds > 0 else math.inf
    batch = "full batch" if args.batch_size is None else f"batches of {args.batch_size} ({args.sampling})"
    _out(f"trained {_describe_layers(spec)} on {n} rows x {len(features)} features of {Path(args.data)}, "
         f"target {args.target!r}; {args.dtype}, lr {args.lr:g}, {batch}, seed {args.seed}"
         + ("; columns min-max scaled" if scaled else ""))
    _out(f"steps:       {result.steps}")
    rule_text = ", ".join(repr(r) for r in rules)
    if not any(isinstance(r, stop.MaxSteps) for r in rules):
        rule_text += (", " if rule_text else "") + f"MaxSteps({total}) (the default cap)"
    _out(f"stopped by:  {result.stopped_by}   (rules: {rule_text})")
    _out(f"final loss:  {result.final_loss:.6g}   (MSE on all rows{', scaled units' if scaled else ''})")
    loop = getattr(result, "loop", "python")
    _out(f"time:        {result.seconds:.3f} s ({_g(rate, 3)} steps/s, {loop} loop)")


def cmd_train(args: argparse.Namespace) -> int:
    """``fastgrad train``: check the arguments, read the CSV, train; write the outputs, then report.

    The files are written before the lines that report them, so a reader that stops early
    (``| head -1``) loses no file.  Exit status: 2 when an output could not be written (the
    others are), else 1 when the run diverged, 130 when interrupted, 0.
    """
    data = Path(args.data)
    outputs = _train_outputs(args, data)
    spec = args.layers
    if spec[-1][0] != 1:
        raise CliError(f"--layers: the last layer must have 1 unit (one target column), got {spec[-1][0]}")
    header, table = read_csv(data)
    x, y, features = _split(header, table, args.target, data, args.dtype)
    n = len(y)
    if args.batch_size is not None and args.batch_size > n:
        raise CliError(f"--batch-size: {args.batch_size} is more than the {n} rows of {str(data)}")
    scaling: Dict[str, Any] = {}
    if args.normalize == "minmax":
        x, y, scaling = _minmax(header, table, args.target)
    _check_model_size(spec, x.shape[1], n, args.batch_size, args.dtype, "--layers")

    rules = list(args.stop)
    total = _max_steps(rules)
    row_bytes = _n_params(spec, x.shape[1]) * np.dtype(args.dtype).itemsize
    record = _record_every(total, row_bytes) if "--plot" in outputs else 0
    model, result, warned = _fit(args, spec, x, y, rules, total, record)
    failed = _write_outputs(outputs, {
        "--save": lambda p: _write_weights(p, model, spec, features, args.target, scaling),
        "--history": lambda p: _write_history(p, result),
        "--plot": lambda p: _write_figure(p, result, spec, data),
    })

    for message in warned:
        _err(f"fastgrad train: warning: {_cli_hint(message, bool(scaling))}")
    _report(args, spec, n, features, bool(scaling), rules, total, result)
    for option, path in outputs.items():
        if option not in failed:
            note = "  (weights not drawn: too many to record)" if option == "--plot" and not record else ""
            _out(f"{_OUTPUTS[option]:<13}{path}{note}")
    for message in failed.values():
        _err(f"fastgrad train: error: {message}")
    if failed:
        return EXIT_USAGE
    if result.stopped_by == "diverged":
        return EXIT_FAILED
    if result.stopped_by == "interrupted":
        return EXIT_INTERRUPTED
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# check


def _relative(ours: np.ndarray, ref: np.ndarray) -> Tuple[float, float]:
    """(max|ours - ref|, max|ours - ref| / max|ref|), in float64."""
    a = np.asarray(ours, dtype=np.float64)
    b = np.asarray(ref, dtype=np.float64)
    err = float(np.max(np.abs(a - b))) if a.size else 0.0
    scale = float(np.max(np.abs(b))) if b.size else 0.0
    if scale == 0:
        return err, 0.0 if err == 0 else math.inf
    return err, err / scale


def _pre_activations(weights: List[np.ndarray], spec, x: np.ndarray) -> List[np.ndarray]:
    """Each ReLU layer's input, in float64 NumPy (to keep the finite differences off the kink)."""
    out, a, i = [], x.astype(np.float64), 0
    for _, act in spec:
        z = a @ weights[i].astype(np.float64) + weights[i + 1].astype(np.float64)
        i += 2
        if act == "relu":
            out.append(z)
            a = np.maximum(z, 0)
        else:
            a = z
    return out


def _finite_differences(model64, x: np.ndarray, y: np.ndarray, eps: float) -> List[np.ndarray]:
    """Central differences of the MSE (computed in NumPy) on every parameter of ``model64``."""
    def loss() -> float:
        return float(np.mean((model64(x) - y) ** 2))

    grads = []
    for w in model64._params():  # the live arrays: perturbed in place, restored after
        g = np.empty_like(w)
        for idx in np.ndindex(*w.shape):
            orig = w[idx]
            w[idx] = orig + eps
            up = loss()
            w[idx] = orig - eps
            down = loss()
            w[idx] = orig
            g[idx] = (up - down) / (2 * eps)
        grads.append(g)
    return grads


def cmd_check(args: argparse.Namespace) -> int:
    """``fastgrad check``: gradients against TensorFlow and finite differences, one line per tensor."""
    import fastgrad as fg

    spec = args.layers
    _check_model_size(spec, args.features, args.batch, None, args.dtype, "--layers, --features, --batch")
    rng = np.random.default_rng(args.seed)
    model = fg.Sequential([fg.Dense(u, a, dtype=args.dtype) for u, a in spec], seed=args.seed)
    model.build(args.features)
    weights = model.get_weights()
    # inputs whose ReLU pre-activations are all at least RELU_MARGIN away from the kink at 0
    for _attempt in range(100):
        x = rng.standard_normal((args.batch, args.features)).astype(args.dtype)
        zs = _pre_activations(weights, spec, x)
        if all(np.min(np.abs(z)) >= RELU_MARGIN for z in zs):
            break
    y = rng.standard_normal((args.batch, spec[-1][0])).astype(args.dtype)
    kinked = any(np.min(np.abs(z)) < RELU_MARGIN for z in zs)

    names = []
    for i, (layer, (units, act)) in enumerate(zip(model.layers, spec)):
        names += [f"layer {i} kernel", f"layer {i} bias"]
    shapes = [w.shape for w in weights]
    n_params = sum(w.size for w in weights)
    _out(f"fastgrad check: {_describe_layers(spec)} on {args.features} inputs, batch {args.batch}, "
         f"{args.dtype}, seed {args.seed} ({n_params} parameters)")
    if kinked:
        _out(f"note: some ReLU inputs are within {RELU_MARGIN:g} of 0; finite differences may cross the kink")

    loss, ours = fg.value_and_grad(model, x, y)
    width = max(len(n) for n in names + ["loss"]) + 2
    head = f"  {'tensor':<{width}}{'shape':<10}{'max abs err':>13}{'rel err':>11}{'tol':>9}"
    failures = 0
    total = 0

    def row(name: str, shape, err: float, rel: float, tol: float) -> None:
        nonlocal failures, total
        ok = rel <= tol
        failures += not ok
        total += 1
        _out(f"  {name:<{width}}{str(tuple(shape)):<10}{_g(err, 2):>13}{_g(rel, 2):>11}{tol:>9.0e}  "
             f"{'ok' if ok else 'FAIL'}")

    tf_ok = False
    if args.no_tf:
        _out("TensorFlow comparison: skipped (--no-tf)")
    else:
        from . import oracle

        if oracle.available():
            tf_ok = True
            import tensorflow as tf

            tol = TF_RTOL[args.dtype]
            tf_loss, theirs = oracle.value_and_grad(model, x, y)
            _out(f"against TensorFlow {tf.__version__} ({args.dtype}, the same weights and batch; "
                 f"relative error <= {tol:g}):")
            _out(head)
            row("loss", (), *_relative(np.array(loss), np.array(tf_loss)), tol)
            for name, shape, g, t in zip(names, shapes, ours, theirs):
                row(name, shape, *_relative(g, t), tol)
        else:
            _out(f"TensorFlow comparison: skipped, TensorFlow is not installed: {TF_INSTALL}")

    model64 = fg.Sequential([fg.Dense(u, a, dtype="float64") for u, a in spec])
    model64.set_weights([w.astype(np.float64) for w in weights])
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    _, ours64 = fg.value_and_grad(model64, x64, y64)
    fd = _finite_differences(model64, x64, y64, FD_EPS)
    _out(f"against central finite differences (fastgrad on a float64 copy of the model, eps {FD_EPS:g}; "
         f"relative error <= {FD_RTOL:g}):")
    _out(head)
    for name, shape, g, ref in zip(names, shapes, ours64, fd):
        row(name, shape, *_relative(g, ref), FD_RTOL)

    if failures:
        _out(f"{failures} of {total} comparisons outside tolerance")
        return EXIT_FAILED
    _out(f"all {total} comparisons within tolerance" + ("" if tf_ok else " (finite differences only)"))
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
