"""``fastgrad train``: a Dense stack trained on a CSV file (validated on held-out rows or another
file when asked), with a progress bar on a terminal, the model, the history and a figure written
as asked, and a summary of the run that judges it (:mod:`.judge`)."""

from __future__ import annotations

import argparse
import importlib.util
import math
import re
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, List, Optional, Sequence, Tuple

import numpy as np

import fastgrad as fg

from . import judge
from . import outputs as out_files
from .common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    Spec,
    check_model_size,
    checked_name,
    describe_layers,
    err,
    g,
    n_params,
    out,
)
from .csvfile import no_header_hint, read_csv, separator_hint
from .modelfile import Scaling, write_model

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    from ..results import FitResult

__all__ = ["cmd_train", "split_rows", "PLOT_WEIGHT_ROWS", "PLOT_RECORD_BYTES"]

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


def _show_progress(disabled: bool) -> bool:
    """fit's ``progress``: a bar unless --no-progress, on a terminal only (a log or a pipe gets no
    bar's redraws), and only where tqdm is installed (it is optional)."""
    if disabled:
        return False
    try:
        terminal = sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced, or closed
        return False
    return terminal and importlib.util.find_spec("tqdm") is not None


def _columns(header: List[str], table: np.ndarray, names: Sequence[str], path: Path, dtype: str,
             where: str = "") -> np.ndarray:
    """The columns ``names`` of ``table`` (read from ``path``); CliError naming a missing one, or one
    holding values too large for ``dtype``.  ``where``: the option that named the file, if any."""
    at = f"{where}: {str(path)}" if where else str(path)
    for name in names:
        if name not in header:
            raise CliError(f"{at}: no column {name!r}; the columns are: {', '.join(header)}"
                           f"{separator_hint(header)}{no_header_hint(header)}")
    cols = table[:, [header.index(name) for name in names]]
    big = np.abs(cols).max(axis=0) > np.finfo(np.dtype(dtype)).max
    if big.any():
        raise CliError(f"{at}: column {names[int(np.argmax(big))]!r} holds values too large for {dtype}; "
                       "try --dtype float64")
    return cols


def _training_data(args: argparse.Namespace, data: Path) -> Tuple[np.ndarray, np.ndarray, List[str]]:
    """(x, y, feature names): the target column of ``data`` and all the others."""
    header, table = read_csv(data)
    if args.target not in header:
        raise CliError(f"{str(data)}: no column {args.target!r}; the columns are: {', '.join(header)}"
                       f"{separator_hint(header)}{no_header_hint(header)}")
    features = [h for h in header if h != args.target]
    if not features:
        raise CliError(f"{str(data)}: only the target column {args.target!r}; need at least one feature column")
    cols = _columns(header, table, header, data, args.dtype)
    ti = header.index(args.target)
    return np.delete(cols, ti, axis=1), cols[:, ti].copy(), features


def split_rows(n: int, fraction: float, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """--validation-split: (training rows, validation rows), each in file order.  The first
    ceil(fraction * n) rows of numpy.random.default_rng(seed).permutation(n) are held out (as
    scikit-learn's train_test_split counts them); CliError when no row would be left to train on."""
    held = math.ceil(fraction * n)
    if held >= n:
        raise CliError(f"--validation-split: {fraction:g} of {n} rows holds out {held}, which leaves none to train on")
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[held:]), np.sort(order[:held])


def _minmax(features: List[str], target: str, x: np.ndarray, y: np.ndarray, split: bool) -> Scaling:
    """--normalize minmax: the range of every column on the training rows (``split``: some rows are
    held out); CliError for a column that is constant there or whose range overflows."""
    lo = np.append(x.min(axis=0), y.min())
    hi = np.append(x.max(axis=0), y.max())
    with np.errstate(over="ignore"):
        span = hi - lo
    for name, d in zip(features + [target], span):
        if d == 0:
            where = " on the training rows" if split else ""
            raise CliError(f"--normalize minmax: column {name!r} is constant{where}; nothing to scale by")
        if not np.isfinite(d):
            raise CliError(f"--normalize minmax: column {name!r}: its range (max - min) overflows float64; "
                           "divide the column by a power of ten first")
    return Scaling(x_min=lo[:-1], x_max=hi[:-1], y_min=lo[-1:], y_max=hi[-1:])


def _fit(args: argparse.Namespace, spec: Spec, x: np.ndarray, y: np.ndarray, rules: List[Any], record: int,
         validation: Optional[Tuple[np.ndarray, np.ndarray]]) -> Tuple[fg.Sequential, "FitResult", List[str]]:
    """Build the model and train it: (model, result, the DivergenceWarnings' messages).

    Bad arguments and running out of memory are CliErrors.
    """
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", fg.DivergenceWarning)
            model = fg.Sequential([fg.Dense(u, a, dtype=args.dtype) for u, a in spec], seed=args.seed)
            model.build(x.shape[1])  # here, so that --seed seeds the initial weights (fit would build a
            #                          one-layer Sequential without its seed)
            result = fg.fit(
                model, x, y, optimizer=fg.SGD(args.lr), batch_size=args.batch_size, sampling=args.sampling,
                stop=rules, seed=args.seed, record_weights=record or False, validation_data=validation,
                progress=_show_progress(args.no_progress),
            )
            result.final_loss  # a pass over all rows, computed on first access: here, under the guard
    except (ValueError, TypeError) as e:
        raise CliError(str(e)) from None
    except MemoryError:
        raise CliError(f"out of memory while training {describe_layers(spec)} on {x.shape[0]} rows x "
                       f"{x.shape[1]} features; try fewer units") from None
    return model, result, [str(w.message) for w in caught if issubclass(w.category, fg.DivergenceWarning)]


def _cli_hint(message: str, scaled: bool) -> str:
    """A DivergenceWarning's message with its closing hint ('Try a smaller learning rate or scaled
    data (fastgrad.minmax).') in the command's terms: its options."""
    head = re.sub(r"\s*Try\b.*$", "", message, flags=re.S)
    return f"{head} Try a smaller --lr" + ("." if scaled else ", or --normalize minmax.")


def _report(args: argparse.Namespace, spec: Spec, n: int, features: List[str], scaled: bool, rules: List[Any],
            total: int, result: "FitResult", held: str, verdict: judge.Verdict) -> None:
    """The summary of a run on stdout: what was trained, the steps, the stop, the losses and R2 in
    the target's units, the time, and what the numbers say."""
    rate = result.steps / result.seconds if result.seconds > 0 else math.inf
    batch = "full batch" if args.batch_size is None else f"batches of {args.batch_size} ({args.sampling})"
    out(f"trained {describe_layers(spec)} on {n} rows x {len(features)} features of {Path(args.data)}, "
        f"target {args.target!r}; {args.dtype}, lr {args.lr:g}, {batch}, seed {args.seed}"
        + ("; columns min-max scaled" if scaled else "") + held)
    out(f"steps:       {result.steps}")
    rule_text = ", ".join(repr(r) for r in rules)
    if not any(isinstance(r, fg.stop.MaxSteps) for r in rules):
        rule_text += (", " if rule_text else "") + f"MaxSteps({total}) (the default cap)"
    out(f"stopped by:  {result.stopped_by}   (rules: {rule_text})")
    for line in verdict.lines(args.target):
        out(line)
    loop = getattr(result, "loop", "python")
    out(f"time:        {result.seconds:.3f} s ({g(rate, 3)} steps/s, {loop} loop)")
    for note in verdict.notes(args.target, scaled, result.stopped_by):
        out(f"note: {note}")


def cmd_train(args: argparse.Namespace) -> int:
    """``fastgrad train``: check the arguments, read the CSV, train; write the outputs, then report.

    The files are written before the lines that report them, so a reader that stops early
    (``| head -1``) loses no file.  Exit status: 2 when an output could not be written (the
    others are), else 1 when the run diverged, 130 when interrupted, 0.
    """
    data = Path(args.data)
    val_file = None if args.validation is None else Path(args.validation)
    outputs = out_files.train_outputs(args, [data] + ([val_file] if val_file else []))
    spec = args.layers
    if spec[-1][0] != 1:
        raise CliError(f"--layers: the last layer must have 1 unit (one target column), got {spec[-1][0]}")
    x, y, features = _training_data(args, data)
    held = ""
    val: Optional[Tuple[np.ndarray, np.ndarray]] = None
    if args.validation_split is not None:
        rows, val_rows = split_rows(len(y), args.validation_split, args.seed)
        val = x[val_rows], y[val_rows]
        x, y = x[rows], y[rows]
        held = f"; {len(val_rows)} of the rows held out for validation (--validation-split {args.validation_split:g})"
    elif val_file is not None:
        checked_name(str(val_file), "--validation")
        header, table = read_csv(val_file)
        cols = _columns(header, table, features + [args.target], val_file, args.dtype, "--validation")
        val = cols[:, :-1], cols[:, -1].copy()
        held = f"; validated on the {len(val[1])} rows of {val_file}"
    n = len(y)
    if args.batch_size is not None and args.batch_size > n:
        where = "training rows" if args.validation_split is not None else "rows"
        raise CliError(f"--batch-size: {args.batch_size} is more than the {n} {where} of {str(data)}")
    split = args.validation_split is not None
    scaling = _minmax(features, args.target, x, y, split) if args.normalize == "minmax" else None
    x_fit, y_fit = (x, y) if scaling is None else (scaling.x(x), scaling.y(y))
    val_fit = val if scaling is None or val is None else (scaling.x(val[0]), scaling.y(val[1]))
    check_model_size(spec, x.shape[1], max(n, 0 if val is None else len(val[1])), args.batch_size, args.dtype,
                     "--layers")

    rules = list(args.stop)
    total = _max_steps(rules)
    row_bytes = n_params(spec, x.shape[1]) * np.dtype(args.dtype).itemsize
    record = _record_every(total, row_bytes) if "--plot" in outputs else 0
    model, result, warned = _fit(args, spec, x_fit, y_fit, rules, record, val_fit)
    failed = out_files.write_outputs(outputs, {
        "--save": lambda p: write_model(p, model, features, [args.target], scaling),
        "--history": lambda p: out_files.write_history(p, result),
        "--plot": lambda p: out_files.write_figure(p, result, spec, data, scaling is not None),
    })
    try:
        verdict = judge.judge(model, result, spec, (x_fit, y_fit), val_fit, scaling)
    except MemoryError:
        raise CliError(f"out of memory while computing the losses of the trained model on {n} rows") from None

    for message in warned:
        err(f"fastgrad train: warning: {_cli_hint(message, scaling is not None)}")
    _report(args, spec, n, features, scaling is not None, rules, total, result, held, verdict)
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
