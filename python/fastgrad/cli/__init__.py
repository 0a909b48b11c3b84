"""The ``fastgrad`` command (also ``python -m fastgrad``).

    fastgrad demo [E1 ... E8] [--plots DIR]     the walkthrough's experiments, told step by step
    fastgrad train data.csv --target COL ...    train a Dense stack on a CSV file
    fastgrad predict MODEL.npz data.csv         apply a model saved by train --save to a CSV file
    fastgrad check [--layers ...]               every gradient against TensorFlow and finite differences

Exit status: 0 on success; 1 when ``check`` finds a gradient outside its tolerance or ``train``
diverges; 2 on bad input, or an output file that cannot be written (a one-line
``fastgrad <command>: error: ...`` on stderr, never a traceback); 130 when interrupted.

The modules: :mod:`.parser` (the options and their checks), :mod:`.demo`, :mod:`.train` (with
:mod:`.csvfile`, :mod:`.outputs` and :mod:`.judge`), :mod:`.predict`, :mod:`.modelfile` (the file
train --save writes and predict reads), :mod:`.check`, and :mod:`.common` (what they share).
"""

from __future__ import annotations

import os
import sys
from typing import Optional, Sequence

from ..checks import FD_EPS, FD_RTOL, RELU_MARGIN, TF_RTOL
from .common import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, MAX_PARAMS, MAX_UNITS, OUTPUT_ERRORS, CliError, err
from .csvfile import read_csv
from .demo import REPLAY_STEPS
from .parser import build_parser, parse_layers, parse_stop

__all__ = [
    "main",
    "build_parser",
    "parse_layers",
    "parse_stop",
    "read_csv",
    "CliError",
    "REPLAY_STEPS",
    "TF_RTOL",
    "FD_RTOL",
    "FD_EPS",
    "RELU_MARGIN",
    "MAX_UNITS",
    "MAX_PARAMS",
]


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
    OUTPUT_ERRORS.clear()
    try:
        status = args.func(args)
    except CliError as e:
        err(f"fastgrad {args.command}: error: {e}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        err(f"fastgrad {args.command}: interrupted")
        return EXIT_INTERRUPTED
    if OUTPUT_ERRORS:  # the output is incomplete: not a success
        err(f"fastgrad {args.command}: error: {OUTPUT_ERRORS[0]}")
        return EXIT_USAGE
    return status
