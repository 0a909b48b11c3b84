"""The ``fastgrad`` command (also ``python -m fastgrad``).

    fastgrad demo [E1 ... E8] [--plots DIR]     the walkthrough's experiments, told step by step
    fastgrad train data.csv --target COL ...    train a Dense stack on a CSV file
    fastgrad check [--layers ...]               every gradient against TensorFlow and finite differences

Exit status: 0 on success; 1 when ``check`` finds a gradient outside its tolerance or ``train``
diverges; 2 on bad input (a one-line ``fastgrad <command>: error: ...`` on stderr, never a
traceback); 130 when interrupted.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import importlib.util
import math
import os
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
#: ``train``: at most about this many weight rows are recorded for ``--plot``
PLOT_WEIGHT_ROWS = 2000

ACTIVATIONS = ("linear", "relu")


class CliError(Exception):
    """Bad input: reported as one line ``fastgrad <command>: error: <message>``, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr (no usage block), exit status 2."""

    def error(self, message: str):  # type: ignore[override]
        message = " ".join(str(message).split())
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _out(*parts: Any) -> None:
    print(*parts, flush=True)


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
    when left out).  Raises ``argparse.ArgumentTypeError`` naming the bad item.
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
    max-steps=N.  Raises ``argparse.ArgumentTypeError`` naming the problem.
    """
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
        "Exit status: 0 trained, 1 diverged, 2 bad input.",
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
                       help="save a figure of loss, gradient norm and weights (needs matplotlib)")
    train.add_argument("--history", metavar="FILE.csv", help="save the loss and gradient norm of every step as CSV")
    train.add_argument("--no-progress", action="store_true",
                       help="no progress bar (it shows only on a terminal, with tqdm)")
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
    try:
        return args.func(args)
    except CliError as e:
        print(f"fastgrad {args.command}: error: {e}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"fastgrad {args.command}: interrupted", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader went away (fastgrad demo | head): stop quietly; point stdout at devnull so
        # that the interpreter's final flush does not complain again
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):  # pragma: no cover - no real file descriptor
            pass
        return EXIT_OK


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

    ids = [e.upper() for e in args.experiments] or list(walkthrough.EXPERIMENTS)
    unknown = [e for e in ids if e not in walkthrough.EXPERIMENTS]
    if unknown:
        raise CliError(f"unknown experiment {unknown[0]!r}; expected some of {', '.join(walkthrough.EXPERIMENTS)}")
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
    non-numeric cell, NaN or infinity, duplicate column names.
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
                    header = [c.strip() for c in cells]
                    for j, h in enumerate(header):
                        if not h:
                            raise CliError(f"{name} line {line}: column {j + 1} of the header has no name")
                    dup = sorted({h for h in header if header.count(h) > 1})
                    if dup:
                        raise CliError(f"{name} line {line}: duplicate column name {dup[0]!r} in the header")
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
                        raise CliError(f"{name} line {line}, column {h!r}: {s!r} is not a number") from None
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
        raise CliError(f"{name}: has a header but no data rows")
    return header, np.asarray(rows, dtype=np.float64)


def _check_output(option: str, value: Optional[str], data: Path) -> Optional[Path]:
    """An output path: its folder must exist, it must not be a folder or the input file."""
    if value is None:
        return None
    p = Path(value)
    if p.is_dir():
        raise CliError(f"{option}: {value!r} is a directory; expected a file name")
    if not p.parent.exists():
        raise CliError(f"{option}: the directory of {value!r} does not exist")
    try:
        same = p.exists() and data.exists() and os.path.samefile(p, data)
    except OSError:
        same = False
    if same or p.resolve() == data.resolve():
        raise CliError(f"{option}: {value!r} is the input file; fastgrad never overwrites its input")
    return p


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


def _write_history(path: Path, result) -> None:
    h = result.history
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["step", "loss", "grad_norm"])
        for t, (loss, gn) in enumerate(zip(h.loss, h.grad_norm), start=1):
            w.writerow([t, repr(float(loss)), repr(float(gn))])


def cmd_train(args: argparse.Namespace) -> int:
    """``fastgrad train``: read the CSV, train, report; write the optional outputs."""
    import fastgrad as fg

    data = Path(args.data)
    outputs = {
        "--save": _check_output("--save", args.save, data),
        "--plot": _check_output("--plot", args.plot, data),
        "--history": _check_output("--history", args.history, data),
    }
    if args.plot is not None:
        _need_matplotlib("--plot")
    spec = args.layers
    if spec[-1][0] != 1:
        raise CliError(f"--layers: the last layer must have 1 unit (one target column), got {spec[-1][0]}")

    header, table = read_csv(data)
    if args.target not in header:
        raise CliError(f"{str(data)}: no column {args.target!r}; the columns are: {', '.join(header)}")
    ti = header.index(args.target)
    features = [h for j, h in enumerate(header) if j != ti]
    if not features:
        raise CliError(f"{str(data)}: only the target column {args.target!r}; need at least one feature column")
    big = np.abs(table).max(axis=0) > np.finfo(np.dtype(args.dtype)).max
    if big.any():
        col = header[int(np.argmax(big))]
        raise CliError(f"{str(data)}: column {col!r} holds values too large for {args.dtype}; try --dtype float64")
    x = np.delete(table, ti, axis=1)
    y = table[:, ti].copy()
    n = len(y)
    if args.batch_size is not None and args.batch_size > n:
        raise CliError(f"--batch-size: {args.batch_size} is more than the {n} rows of {str(data)}")

    scaling: Dict[str, np.ndarray] = {}
    if args.normalize == "minmax":
        lo, hi = table.min(axis=0), table.max(axis=0)
        const = [h for h, a, b in zip(header, lo, hi) if a == b]
        if const:
            raise CliError(f"--normalize minmax: column {const[0]!r} is constant; nothing to scale by")
        x, y = fg.minmax(x), fg.minmax(y)
        scaling = {"x_min": np.delete(lo, ti), "x_max": np.delete(hi, ti), "y_min": lo[ti], "y_max": hi[ti]}

    rules = list(args.stop)
    total = _max_steps(rules)
    model = fg.Sequential([fg.Dense(u, a, dtype=args.dtype) for u, a in spec], seed=args.seed)
    model.build(x.shape[1])  # here, so that --seed seeds the initial weights (fit would build a
    #                          one-layer Sequential without its seed)
    record = False
    if outputs["--plot"] is not None:
        record = max(1, -(-total // PLOT_WEIGHT_ROWS))
    bar, advance = _progress(total, args.no_progress)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", fg.DivergenceWarning)
        try:
            result = fg.fit(
                model, x, y, optimizer=fg.SGD(args.lr), batch_size=args.batch_size, sampling=args.sampling,
                stop=rules, seed=args.seed, record_weights=record, callbacks=[advance] if advance else [],
            )
        except (ValueError, TypeError) as e:
            raise CliError(str(e)) from None
        finally:
            if bar is not None:
                bar.close()
    for w in caught:
        if issubclass(w.category, fg.DivergenceWarning):
            print(f"fastgrad train: warning: {w.message}", file=sys.stderr, flush=True)

    rate = result.steps / result.seconds if result.seconds > 0 else math.inf
    batch = "full batch" if args.batch_size is None else f"batches of {args.batch_size} ({args.sampling})"
    _out(f"trained {_describe_layers(spec)} on {n} rows x {len(features)} features of {str(data)}, "
         f"target {args.target!r}; {args.dtype}, lr {args.lr:g}, {batch}, seed {args.seed}"
         + ("; columns min-max scaled" if scaling else ""))
    _out(f"steps:       {result.steps}")
    rule_text = ", ".join(repr(r) for r in rules)
    if not any(isinstance(r, fg.stop.MaxSteps) for r in rules):
        rule_text += (", " if rule_text else "") + f"MaxSteps({total}) (the default cap)"
    _out(f"stopped by:  {result.stopped_by}   (rules: {rule_text})")
    _out(f"final loss:  {result.final_loss:.6g}   (MSE on all rows{', scaled units' if scaling else ''})")
    loop = getattr(result, "loop", "python")
    _out(f"time:        {result.seconds:.3f} s ({_g(rate, 3)} steps/s, {loop} loop)")

    if outputs["--save"] is not None:
        arrays: Dict[str, Any] = {}
        for i, layer in enumerate(model.layers):
            arrays[f"layer{i}_kernel"] = layer.kernel
            arrays[f"layer{i}_bias"] = layer.bias
        arrays.update(
            layers=np.array(",".join(f"{u}:{a}" for u, a in spec)), features=np.array(features),
            target=np.array(args.target), **scaling,
        )
        with open(outputs["--save"], "wb") as fh:  # a file object: np.savez adds no '.npz' to the name
            np.savez(fh, **arrays)
        _out(f"weights:     {outputs['--save']}")
    if outputs["--history"] is not None:
        _write_history(outputs["--history"], result)
        _out(f"history:     {outputs['--history']}")
    if outputs["--plot"] is not None:
        from .plotting import DPI, plot_runs

        fig = plot_runs({"run": result}, title=f"{_describe_layers(spec)} on {data.name}: {result.steps} steps, "
                        f"{result.stopped_by}, final loss {result.final_loss:.4g}")
        fig.savefig(outputs["--plot"], dpi=DPI)
        _out(f"figure:      {outputs['--plot']}")
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
