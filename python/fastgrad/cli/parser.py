"""The ``fastgrad`` argument parser, and the argument types that check each option's value.

Each type raises ``argparse.ArgumentTypeError`` with the problem, which argparse reports in one
line naming the option (exit status 2).
"""

from __future__ import annotations

import argparse
import math
import textwrap
from typing import List, NoReturn, Tuple

import fastgrad as fg

from .. import checks, walkthrough
from ..plotting import MAX_WEIGHT_LINES
from . import check, demo, judge, predict, train
from .common import ACTIVATIONS, EXIT_USAGE, MAX_UNITS

__all__ = ["build_parser", "parse_layers", "parse_stop"]


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr (no usage block), exit status 2."""

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        message = " ".join(str(message).split())
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


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


def _fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1 (exclusive), got {text!r}") from None
    if not 0 < v < 1:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1 (exclusive), got {text!r}")
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


_STOP_FORMS = "loss-delta=TOL, weight-delta=TOL, loss-below=TOL, plateau=TOL:PATIENCE, max-steps=N"


def parse_stop(text: str) -> fg.stop.Rule:
    """``"loss-delta=0.01"`` -> ``fastgrad.stop.LossDelta(0.01)``, and so on.

    Forms: loss-delta=TOL, weight-delta=TOL, loss-below=TOL (TOL >= 0), plateau=TOL:PATIENCE,
    max-steps=N (N and PATIENCE from 1 to ``fastgrad.stop.MAX_COUNT``).  Raises
    ``argparse.ArgumentTypeError`` naming the problem, also for a value the rule itself refuses.
    """
    try:
        return _stop_rule(text)
    except (ValueError, TypeError) as e:  # the rule's own check of its arguments
        raise argparse.ArgumentTypeError(f"{text!r}: {e}") from None


def _stop_rule(text: str) -> fg.stop.Rule:
    """:func:`parse_stop` without the translation of the rules' own errors."""
    stop = fg.stop
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


def build_parser() -> argparse.ArgumentParser:
    """The ``fastgrad`` argument parser, with the subcommands demo, train, predict and check."""
    parser = _Parser(
        prog="fastgrad",
        description="fastgrad: hand-derived Dense/MSE kernels in C++, training loops that record every "
        "step, and TensorFlow as the oracle.",
        epilog="Run 'fastgrad COMMAND --help' for a command's options.  Start with 'fastgrad demo'.",
    )
    parser.add_argument("--version", action="version", version=f"fastgrad {fg.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_demo(sub)
    _add_train(sub)
    _add_predict(sub)
    _add_check(sub)
    return parser


def _add_demo(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser(
        "demo",
        help="run the walkthrough's experiments E1-E8 and tell what happened in each",
        description=textwrap.fill(
            "Run the walkthrough's experiments (all of E1-E8 by default) on fastgrad and tell what happened in "
            "each.  Where TensorFlow is installed, every run is replayed in it (the same batches through "
            "tf.GradientTape) and the largest deviation is printed.", 78),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Experiments:\n" + "\n".join(f"  {m.ID}  {m.SUMMARY}" for m in walkthrough.MODULES.values()),
    )
    p.add_argument("experiments", nargs="*", metavar="E", help="experiments to run, e.g. E1 E4 (default: all)")
    p.add_argument("--plots", metavar="DIR", help="write one PNG figure per experiment into DIR (needs matplotlib)")
    p.add_argument("--no-replay", action="store_true", help="do not replay the runs in TensorFlow")
    p.add_argument(
        "--replay-steps", type=_nonneg_int, default=demo.REPLAY_STEPS, metavar="N",
        help=f"replay at most the first N steps of each run in TensorFlow; 0 replays all (default {demo.REPLAY_STEPS})",
    )
    p.set_defaults(func=demo.cmd_demo)


def _add_train(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser(
        "train",
        help="train a Dense stack on a CSV file",
        description=textwrap.fill(
            "Train a stack of Dense layers on a CSV file with a header row, under MSE, with SGD.  The target "
            "column is predicted from all the other columns.  The input file is only read.  The summary gives "
            "the loss (MSE) and R2 on the training rows and on the validation rows, in the target's own units, "
            f"and says when the model is no better than predicting the mean (R2 below {judge.MEAN_R2:g}) or when "
            f"the loss ended more than {judge.BLOWUP_FACTOR:g}x above where it started.", 78),
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
        "      --stop plateau=1e-6:200 --stop max-steps=5000 --normalize minmax --validation-split 0.2 \\\n"
        "      --save model.npz\n"
        "  fastgrad predict model.npz new.csv --out predicted.csv\n"
        "Exit status: 0 trained, 1 diverged, 2 bad input (or an output file that could not be written).",
    )
    p.add_argument("data", help="CSV file with a header row; every cell numeric")
    p.add_argument("--target", required=True, metavar="COL", help="the column to predict")
    p.add_argument(
        "--layers", type=parse_layers, default=parse_layers("1"), metavar="SPEC",
        help="comma-separated UNITS[:ACTIVATION] (linear or relu), the last layer with 1 unit; "
        "default '1' (linear regression); e.g. '10:relu,1'",
    )
    p.add_argument("--lr", type=_positive_float, default=0.01, help="learning rate (default 0.01)")
    p.add_argument("--batch-size", type=_positive_int, default=None, metavar="K",
                   help="K samples a step (default: all rows, full-batch gradient descent)")
    p.add_argument("--sampling", choices=("random", "shuffle"), default="random",
                   help="random: each step draws its batch anew; shuffle: epochs of a fresh permutation")
    p.add_argument("--stop", type=parse_stop, action="append", default=[], metavar="RULE",
                   help="a stopping rule (repeatable), see below")
    p.add_argument("--normalize", choices=("none", "minmax"), default="none",
                   help="minmax: scale every column, target included, to [0, 1] by its range on the training "
                   "rows (validation rows are scaled by the same ranges; --save keeps them for predict); "
                   "default none")
    held = p.add_mutually_exclusive_group()
    held.add_argument("--validation-split", type=_fraction, metavar="F",
                      help="hold out ceil(F x rows) rows (0 < F < 1) for validation: the first of "
                      "numpy.random.default_rng(SEED).permutation(rows), SEED being --seed, so the same --seed "
                      "holds out the same rows.  Not the last rows, as Keras's validation_split: in a file sorted "
                      "by any column those are unlike the rest")
    held.add_argument("--validation", metavar="FILE",
                      help="validate on the rows of this CSV file, which holds the feature and target columns "
                      "(by name; other columns are ignored)")
    p.add_argument("--seed", type=_nonneg_int, default=0,
                   help="seeds the initial weights, the batches and --validation-split's rows (default 0)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="(default float32)")
    p.add_argument("--save", metavar="FILE.npz",
                   help="save the trained model, with its column names and --normalize's ranges: "
                   "'fastgrad predict' applies it to new data, fastgrad.load(FILE) reads the model")
    p.add_argument("--plot", metavar="FILE.png",
                   help="save a figure of the loss, the gradient norm and the weights against the step, "
                   "in the format of the extension (.png when there is none; .pdf, .svg, ...).  The weights "
                   f"panel draws each weight when the model has at most {MAX_WEIGHT_LINES}, else each "
                   f"tensor's L2 norm, at up to {train.PLOT_WEIGHT_ROWS} recorded steps (fewer for a wide model, "
                   f"to keep the recording under {train.PLOT_RECORD_BYTES // 2**20} MiB).  Needs matplotlib")
    p.add_argument("--history", metavar="FILE.csv", help="save the loss and gradient norm of every step as CSV")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar.  The bar is shown only on a terminal, with tqdm; either way the "
                   "native (C++) loop runs, the bar fed between its chunks of steps")
    p.set_defaults(func=train.cmd_train)


def _add_predict(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser(
        "predict",
        help="apply a model saved by 'train --save' to the rows of a CSV file",
        description=textwrap.fill(
            "Apply a model saved by 'fastgrad train --save' to the rows of a CSV file with a header row.  The "
            "feature columns are taken by name, in the order the model was trained on (other columns are "
            "kept, and a missing feature is an error); the scaling saved at training (--normalize minmax) "
            "is applied to them, and undone on the predictions, which are in the target's own units.  The "
            "output is the file's rows as they were, with one more column per target, named after it: "
            f"TARGET{predict.SUFFIX}.", 78),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Example:\n"
        "  fastgrad train data.csv --target y --layers 10:relu,1 --normalize minmax --save model.npz\n"
        "  fastgrad predict model.npz new.csv --out predicted.csv\n"
        "Exit status: 0 done, 2 bad input (or an output file that could not be written).",
    )
    p.add_argument("model", metavar="MODEL.npz", help="a model file written by 'fastgrad train --save'")
    p.add_argument("data", metavar="DATA.csv", help="CSV file with a header row; every cell numeric")
    p.add_argument("--out", metavar="FILE", help="write the CSV to FILE (default: stdout)")
    p.set_defaults(func=predict.cmd_predict)


def _add_check(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser(
        "check",
        help="check every gradient against TensorFlow and finite differences",
        description="On random data, compare every gradient of fastgrad.value_and_grad with TensorFlow's "
        "(the same weights and batch) and with central finite differences on a float64 copy of the model.  "
        "One line per tensor: the max absolute error, the relative error max|ours - ref| / max|ref|, and the "
        f"tolerance it is held to (TensorFlow: {checks.TF_RTOL['float64']:g} in float64, "
        f"{checks.TF_RTOL['float32']:g} in float32; finite differences: {checks.FD_RTOL:g}, eps "
        f"{checks.FD_EPS:g}).  Exit status 1 if any is outside.",
    )
    p.add_argument("--layers", type=parse_layers, default=parse_layers("8:relu,4:relu,1"), metavar="SPEC",
                   help="comma-separated UNITS[:ACTIVATION] (default '8:relu,4:relu,1')")
    p.add_argument("--features", type=_positive_int, default=5, metavar="N", help="input width (default 5)")
    p.add_argument("--batch", type=_positive_int, default=16, metavar="N", help="batch size (default 16)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float64", help="(default float64)")
    p.add_argument("--seed", type=_nonneg_int, default=0, help="seeds the weights and the data (default 0)")
    p.add_argument("--no-tf", action="store_true", help="skip the TensorFlow comparison")
    p.set_defaults(func=check.cmd_check)
