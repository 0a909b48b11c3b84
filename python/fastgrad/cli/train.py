"""``fastgrad train``: a Dense stack trained on a CSV file, with a progress bar on a terminal,
the weights, the history and a figure written as asked, and a summary of the run."""

from __future__ import annotations

import argparse
import math
import re
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

import fastgrad as fg

from . import outputs as out_files
from .common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    Spec,
    check_model_size,
    describe_layers,
    err,
    g,
    n_params,
    out,
)
from .csvfile import no_header_hint, read_csv, separator_hint

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    from ..results import FitResult

__all__ = ["cmd_train", "PLOT_WEIGHT_ROWS", "PLOT_RECORD_BYTES"]

#: at most about this many weight rows are recorded for ``--plot``, in at most this many bytes
#: (a wide model records fewer rows; one too wide for three rows records none).  The figure
#: needs a few times the recording while it is drawn (copies, each tensor's norm in float64)
PLOT_WEIGHT_ROWS = 2000
PLOT_RECORD_BYTES = 32 * 2**20


def _record_every(total: int, row_bytes: int) -> int:
    """``record_weights`` for --plot: every k steps of a run of at most ``total`` steps, so that the
    recording (the initial weights, a row every k steps, the last row; ``row_bytes`` each) holds at
    most PLOT_WEIGHT_ROWS rows and PLOT_RECORD_BYTES bytes.  0 (no recording) for a model too wide
    for three rows."""
    rows = min(PLOT_WEIGHT_ROWS, PLOT_RECORD_BYTES // max(1, row_bytes)) - 2
    if rows < 1:
        return 0
    return max(1, -(-total // rows))


def _max_steps(rules: Sequence[Any]) -> int:
    """The run's step limit: the smallest MaxSteps among ``rules``, else fit's default."""
    from ..training import DEFAULT_MAX_STEPS

    caps = [r.n for r in rules if isinstance(r, fg.stop.MaxSteps)]
    return min(caps) if caps else DEFAULT_MAX_STEPS


def _progress(total: int, disabled: bool) -> Tuple[Any, Optional[Callable[[Any], None]]]:
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

    def advance(state: fg.stop.StepState) -> None:
        bar.update(1)
        if state.step % 100 == 0:
            bar.set_postfix(loss=f"{state.loss:.4g}", refresh=False)

    return bar, advance


def _split(header: List[str], table: np.ndarray, target: str, data: Path,
           dtype: str) -> Tuple[np.ndarray, np.ndarray, List[str]]:
    """(x, y, feature names): the target column and the others; CliError for a missing target, no
    feature, or values too large for ``dtype``."""
    if target not in header:
        raise CliError(f"{str(data)}: no column {target!r}; the columns are: {', '.join(header)}"
                       f"{separator_hint(header)}{no_header_hint(header)}")
    ti = header.index(target)
    features = [h for j, h in enumerate(header) if j != ti]
    if not features:
        raise CliError(f"{str(data)}: only the target column {target!r}; need at least one feature column")
    big = np.abs(table).max(axis=0) > np.finfo(np.dtype(dtype)).max
    if big.any():
        col = header[int(np.argmax(big))]
        raise CliError(f"{str(data)}: column {col!r} holds values too large for {dtype}; try --dtype float64")
    return np.delete(table, ti, axis=1), table[:, ti].copy(), features


def _minmax(header: List[str], table: np.ndarray, target: str) -> Tuple[np.ndarray, np.ndarray, Dict[str, Any]]:
    """--normalize minmax: (x, y, scaling), every column scaled to [0, 1] and ``scaling`` the
    ranges saved with the weights; CliError for a column that is constant or whose range overflows."""
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


def _fit(args: argparse.Namespace, spec: Spec, x: np.ndarray, y: np.ndarray, rules: List[Any], total: int,
         record: int) -> Tuple[fg.Sequential, "FitResult", List[str]]:
    """Build the model and train it: (model, result, the DivergenceWarnings' messages).

    Bad arguments and running out of memory are CliErrors.
    """
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
        raise CliError(f"out of memory while training {describe_layers(spec)} on {x.shape[0]} rows x "
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


def _report(args: argparse.Namespace, spec: Spec, n: int, features: List[str], scaled: bool, rules: List[Any],
            total: int, result: "FitResult") -> None:
    """The summary of a run on stdout: what was trained, the steps, the stop, the loss, the time."""
    rate = result.steps / result.seconds if result.seconds > 0 else math.inf
    batch = "full batch" if args.batch_size is None else f"batches of {args.batch_size} ({args.sampling})"
    out(f"trained {describe_layers(spec)} on {n} rows x {len(features)} features of {Path(args.data)}, "
        f"target {args.target!r}; {args.dtype}, lr {args.lr:g}, {batch}, seed {args.seed}"
        + ("; columns min-max scaled" if scaled else ""))
    out(f"steps:       {result.steps}")
    rule_text = ", ".join(repr(r) for r in rules)
    if not any(isinstance(r, fg.stop.MaxSteps) for r in rules):
        rule_text += (", " if rule_text else "") + f"MaxSteps({total}) (the default cap)"
    out(f"stopped by:  {result.stopped_by}   (rules: {rule_text})")
    out(f"final loss:  {result.final_loss:.6g}   (MSE on all rows{', scaled units' if scaled else ''})")
    loop = getattr(result, "loop", "python")
    out(f"time:        {result.seconds:.3f} s ({g(rate, 3)} steps/s, {loop} loop)")


def cmd_train(args: argparse.Namespace) -> int:
    """``fastgrad train``: check the arguments, read the CSV, train; write the outputs, then report.

    The files are written before the lines that report them, so a reader that stops early
    (``| head -1``) loses no file.  Exit status: 2 when an output could not be written (the
    others are), else 1 when the run diverged, 130 when interrupted, 0.
    """
    data = Path(args.data)
    outputs = out_files.train_outputs(args, data)
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
    check_model_size(spec, x.shape[1], n, args.batch_size, args.dtype, "--layers")

    rules = list(args.stop)
    total = _max_steps(rules)
    row_bytes = n_params(spec, x.shape[1]) * np.dtype(args.dtype).itemsize
    record = _record_every(total, row_bytes) if "--plot" in outputs else 0
    model, result, warned = _fit(args, spec, x, y, rules, total, record)
    failed = out_files.write_outputs(outputs, {
        "--save": lambda p: out_files.write_weights(p, model, spec, features, args.target, scaling),
        "--history": lambda p: out_files.write_history(p, result),
        "--plot": lambda p: out_files.write_figure(p, result, spec, data),
    })

    for message in warned:
        err(f"fastgrad train: warning: {_cli_hint(message, bool(scaling))}")
    _report(args, spec, n, features, bool(scaling), rules, total, result)
    for option, path in outputs.items():
        if option not in failed:
            note = "  (weights not drawn: too many to record)" if option == "--plot" and not record else ""
            out(f"{out_files.OUTPUTS[option]:<13}{path}{note}")
    for message in failed.values():
        err(f"fastgrad train: error: {message}")
    if failed:
        return EXIT_USAGE
    if result.stopped_by == "diverged":
        return EXIT_FAILED
    if result.stopped_by == "interrupted":
        return EXIT_INTERRUPTED
    return EXIT_OK
