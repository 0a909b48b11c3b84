"""``fastgrad train``'s output files (--save, --history, --plot): checked before training, so a
bad path fails at once, and written after it, each failure one line naming its option.  (The
model file itself is :mod:`.modelfile`'s.)"""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, List, Sequence

from .. import plotting
from .common import CliError, Spec, checked_name, describe_layers, need_matplotlib, shown

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    from ..results import FitResult

__all__ = ["OUTPUTS", "check_output", "train_outputs", "write_outputs", "write_history", "write_figure"]

#: ``train``'s output options, each with the label of the line that reports its file
OUTPUTS = {"--save": "model:", "--history": "history:", "--plot": "figure:"}


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
    try:
        return a.resolve() == b.resolve()
    except OSError:  # a name the system cannot resolve names no file we read
        return False


def check_output(option: str, value: str, inputs: Sequence[Path]) -> Path:
    """An output path, checked before anything runs: a name the system takes, not a directory, in a
    directory that exists and can be written (or a file that can be), none of the input files."""
    p = checked_name(value, option)
    try:
        if p.is_dir():
            raise CliError(f"{option}: {value!r} is a directory; expected a file name")
        if not p.parent.exists():
            raise CliError(f"{option}: the directory of {value!r} does not exist")
        if not p.parent.is_dir():
            raise CliError(f"{option}: {str(p.parent)!r} is not a directory, so {value!r} cannot be created")
        writable = os.access(p, os.W_OK) if p.exists() else os.access(p.parent, os.W_OK | os.X_OK)
    except OSError as e:  # e.g. a directory on the way that cannot be searched
        raise CliError(f"{option}: {shown(value)}: {e.strerror or e}") from None
    if not writable:
        raise CliError(f"{option}: {value!r} cannot be written (permission denied)")
    if any(_same_file(p, f) for f in inputs):
        raise CliError(f"{option}: {value!r} is an input file; fastgrad never overwrites its input")
    return p


def _plot_formats() -> List[str]:
    """The extensions --plot writes: matplotlib's formats, less pgf (LaTeX code, needs a TeX install)."""
    from matplotlib.backend_bases import FigureCanvasBase

    return sorted(set(FigureCanvasBase.get_supported_filetypes()) - {"pgf"})


def _plot_name(value: str) -> str:
    """--plot's file name, '.png' added when it has no extension (as matplotlib would add it);
    CliError for an extension that is not a figure format."""
    if checked_name(value, "--plot").is_dir():
        raise CliError(f"--plot: {value!r} is a directory; expected a file name")
    ext = Path(value).suffix[1:].lower()
    if not ext:
        return value + ".png"
    formats = _plot_formats()
    if ext not in formats:
        raise CliError(f"--plot: {value!r}: '.{ext}' is not a figure format; expected one of "
                       f"{', '.join('.' + f for f in formats)}")
    return value


def train_outputs(args: argparse.Namespace, inputs: Sequence[Path]) -> Dict[str, Path]:
    """``train``'s output files, checked before anything runs: {option: path} for those given.

    Each must be writable and none of ``inputs`` (:func:`check_output`), --plot's a figure format,
    and no two the same file.
    """
    values = {option: getattr(args, option[2:]) for option in OUTPUTS}
    if values["--plot"] is not None:
        need_matplotlib("--plot")
        values["--plot"] = _plot_name(values["--plot"])
    outputs = {option: check_output(option, v, inputs) for option, v in values.items() if v is not None}
    options = list(outputs)
    for i, a in enumerate(options):
        for b in options[:i]:
            if _same_file(outputs[a], outputs[b]):
                raise CliError(f"{a}: {str(outputs[a])!r} is also the file of {b}; each output needs a file "
                               "of its own")
    return outputs


def write_outputs(outputs: Dict[str, Path], write: Dict[str, Callable[[Path], None]]) -> Dict[str, str]:
    """Write every output with its writer in ``write``; {option: message} for those that failed
    (an OSError: a full disk, a path the early checks could not rule out), the others written."""
    failed = {}
    for option, path in outputs.items():
        try:
            write[option](path)
        except OSError as e:
            failed[option] = f"{option}: cannot write {str(path)!r}: {e.strerror or e}"
    return failed


def write_history(path: Path, result: "FitResult") -> None:
    """--history: the step, its loss and its gradient norm, one row a step."""
    h = result.history
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["step", "loss", "grad_norm"])
        for t, (loss, gn) in enumerate(zip(h.loss, h.grad_norm), start=1):
            w.writerow([t, repr(float(loss)), repr(float(gn))])


def write_figure(path: Path, result: "FitResult", spec: Spec, data: Path, scaled: bool = False) -> None:
    """--plot: the run's three panels, in the format of the file's extension (the losses as fit saw
    them: in min-max scaled units when ``scaled``)."""
    units = " (scaled units)" if scaled else ""
    fig = plotting.plot_runs({"run": result}, title=f"{describe_layers(spec)} on {data.name}: {result.steps} steps, "
                             f"{result.stopped_by}, final loss {result.final_loss:.4g}{units}")
    fig.savefig(path, dpi=plotting.DPI, format=path.suffix[1:].lower())
