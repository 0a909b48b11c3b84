"""What the commands share: exit statuses, the one-line error, output that survives a closed
pipe, model sizes against the memory available, and checks of path names."""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path
from typing import Any, List, Optional, Sequence, TextIO, Tuple

import numpy as np

from ..walkthrough._base import g  # the short number format the stories use

__all__ = [
    "EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_INTERRUPTED", "TF_INSTALL", "PLOT_INSTALL", "MAX_UNITS",
    "MAX_PARAMS", "ACTIVATIONS", "CliError", "OUTPUT_ERRORS", "out", "err", "g", "describe_layers", "n_params",
    "available_memory", "size", "check_model_size", "need_matplotlib", "shown", "checked_name", "Spec",
]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

TF_INSTALL = "pip install 'fastgrad[tf]'"
PLOT_INSTALL = "pip install 'fastgrad[plot]'"

#: ``train`` and ``check``: at most this many units in a layer and parameters in a model
MAX_UNITS = 1_000_000
MAX_PARAMS = 2**31

ACTIVATIONS = ("linear", "relu")

Spec = Sequence[Tuple[int, str]]  # a Dense stack: (units, activation) per layer


class CliError(Exception):
    """Bad input: reported as one line ``fastgrad <command>: error: <message>``, exit status 2."""


#: what could not be written to stdout/stderr (other than to a closed pipe): reported by main
OUTPUT_ERRORS: List[str] = []


def out(*parts: Any) -> None:
    """Print a line on stdout (see :func:`_print`)."""
    _print(sys.stdout, *parts)


def err(*parts: Any) -> None:
    """Print a line on stderr (see :func:`_print`)."""
    _print(sys.stderr, *parts)


def _print(stream: TextIO, *parts: Any) -> None:
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
        OUTPUT_ERRORS.append(f"cannot write to {'stdout' if stream is sys.stdout else 'stderr'}: {e.strerror or e}")
        _silence(stream)


def _silence(stream: TextIO) -> None:
    """Point ``stream``'s file descriptor at os.devnull."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # pragma: no cover - no real file descriptor
        pass


def describe_layers(spec: Spec) -> str:
    """``Dense(10, relu) -> Dense(1)``."""
    return " -> ".join(f"Dense({u}, {a})" if a != "linear" else f"Dense({u})" for u, a in spec)


def n_params(spec: Spec, features: int) -> int:
    """The number of parameters (kernels and biases) of the Dense stack ``spec`` on ``features`` inputs."""
    widths = [features] + [u for u, _ in spec]
    return sum((i + 1) * o for i, o in zip(widths, widths[1:]))


def available_memory() -> Optional[int]:
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


def size(n: float) -> str:
    """Bytes as '3.2 GiB', or '12 MiB' below a GiB."""
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def check_model_size(spec: Spec, features: int, rows: int, batch: Optional[int], dtype: str, options: str) -> None:
    """Refuse (CliError on ``options``, the ones that set the sizes) a model of more than
    MAX_PARAMS parameters, or one that would not fit in the memory available: 5 copies of the
    parameters (the weights, the gradients, the initial and the final weights, and the model at the
    initial weights that ``train``'s summary measures the first loss with), and the larger
    of a step's scratch (every layer's output and gradient on a batch of ``batch`` rows, all
    ``rows`` for full batch) and the final loss's pass over all ``rows`` (two layers' outputs at
    a time)."""
    params = n_params(spec, features)
    model = f"{describe_layers(spec)} on {features} inputs"
    if params > MAX_PARAMS:
        raise CliError(f"{options}: {model} has {params:,} parameters; at most {MAX_PARAMS:,} are supported")
    widths = [features] + [u for u, _ in spec]
    step = (rows if batch is None else batch) * (2 * sum(widths[1:]) + widths[0] + widths[-1])
    final = rows * max(a + b for a, b in zip(widths, widths[1:]))
    need = np.dtype(dtype).itemsize * (5 * params + max(step, final))
    free = available_memory()
    if free is not None and need > free:
        raise CliError(f"{options}: {model} and {rows} rows needs about {size(need)} of memory ({params:,} "
                       f"parameters, {dtype}), and {size(free)} is available")


def need_matplotlib(option: str) -> None:
    """CliError naming ``option`` and the extra to install, unless matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise CliError(f"{option} needs matplotlib, which is not installed: {PLOT_INSTALL}") from None


def shown(path: Any, limit: int = 80) -> str:
    """A path quoted for a one-line message, its middle cut out when it is longer than ``limit``."""
    text = str(path)
    if len(text) > limit:
        text = f"{text[: limit // 2]}...{text[-(limit // 2 - 3):]}"
    return repr(text)


def checked_name(value: str, option: Optional[str] = None) -> Path:
    """``value`` as a Path, or CliError (naming ``option`` when given) when the system cannot
    take it as a file name at all: longer than it allows, or holding a NUL character."""
    where = f"{option}: {shown(value)}" if option else shown(value)
    try:
        os.stat(value)
    except ValueError:  # a NUL character
        raise CliError(f"{where}: a file name cannot hold a NUL character") from None
    except OSError as e:  # a missing file is fine here: the callers check what they need
        if e.errno == errno.ENAMETOOLONG:
            raise CliError(f"{where}: {os.strerror(e.errno)} ({len(value):,} characters; the system allows "
                           "fewer)") from None
    return Path(value)

