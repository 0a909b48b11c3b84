"""``fastgrad predict``: a model saved by ``train --save`` applied to the rows of a CSV file, which
come back as they were with the predictions, in the target's units, as the last column(s)."""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path
from typing import List, Sequence

import numpy as np

from .common import EXIT_OK, CliError, out
from .csvfile import no_header_hint, read_csv_cells, separator_hint
from .modelfile import Saved, read_model
from .outputs import check_output

__all__ = ["cmd_predict", "SUFFIX"]

#: a prediction's column is the target's name with this suffix: the data may hold the target too
#: (the training file does), and a header cannot name two columns alike
SUFFIX = "_predicted"


def predicted_names(targets: Sequence[str]) -> List[str]:
    """The output's prediction columns, one per target."""
    return [t + SUFFIX for t in targets]


def cmd_predict(args: argparse.Namespace) -> int:
    """``fastgrad predict MODEL DATA [--out FILE]``: read both, predict, write DATA's rows with the
    predictions (to stdout without --out).  Every check is made before anything is written."""
    model_path, data = Path(args.model), Path(args.data)
    dest = check_output("--out", args.out, [data, model_path]) if args.out is not None else None
    model, saved = read_model(model_path)
    header, table, cells = read_csv_cells(data)
    names = predicted_names(saved.targets)
    taken = [n for n in names if n in header]
    if taken:
        raise CliError(f"{str(data)}: already has a column {taken[0]!r}, the name of the prediction; rename or "
                       "drop it")
    x = _features(header, table, saved, data, model.dtype)
    pred = _predict(model, x, saved)
    text = _csv(header + names, cells, pred)
    if dest is None:
        out(text.rstrip("\n"))
        return EXIT_OK
    try:
        with open(dest, "w", newline="") as fh:
            fh.write(text)
    except OSError as e:
        raise CliError(f"--out: cannot write {str(dest)!r}: {e.strerror or e}") from None
    out(f"wrote {len(cells)} rows with {', '.join(repr(n) for n in names)} to {dest}")
    return EXIT_OK


def _features(header: List[str], table: np.ndarray, saved: Saved, data: Path, dtype: np.dtype) -> np.ndarray:
    """The model's input: the saved feature columns of ``table``, by name and in the saved order,
    scaled as at training; CliError naming a missing column or a value too large for ``dtype``."""
    missing = [f for f in saved.features if f not in header]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise CliError(f"{str(data)}: no column {missing[0]!r}{more}, a feature of the model; it takes "
                       f"{', '.join(saved.features)}{separator_hint(header)}{no_header_hint(header)}")
    x = table[:, [header.index(f) for f in saved.features]]
    if saved.scaling is not None:
        with np.errstate(over="ignore"):
            x = saved.scaling.x(x)
    big = ~(np.abs(x) <= np.finfo(dtype).max).all(axis=0)
    if big.any():
        col = saved.features[int(np.argmax(big))]
        scaled = " once scaled as at training" if saved.scaling is not None else ""
        raise CliError(f"{str(data)}: column {col!r} holds values too large for the model's {dtype.name}{scaled}")
    return x


def _predict(model, x: np.ndarray, saved: Saved) -> np.ndarray:
    """(rows, targets) predictions in the targets' units: the model's output, its scaling undone."""
    try:
        pred = model(x)
    except MemoryError:
        raise CliError(f"out of memory while predicting {x.shape[0]} rows") from None
    pred = pred.reshape(len(x), -1)
    return pred if saved.scaling is None else saved.scaling.unscaled(pred)


def _csv(header: List[str], cells: List[List[str]], pred: np.ndarray) -> str:
    """The output: each row's cells as read, then its predictions, each the shortest text that reads
    back as the same number in the dtype it was computed in."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for row, p in zip(cells, pred):
        w.writerow(row + [str(v) for v in p])
    return buf.getvalue()
