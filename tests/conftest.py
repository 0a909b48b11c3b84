"""Shared fixtures, and the error report printed at the end of every run.

Tests that compare against a reference record ``(check, tensor, error, tolerance)`` with the
``report`` fixture; the largest error per check and tensor kind is printed in the terminal
summary, so the figures quoted in notes come from the run itself.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections import defaultdict

import numpy as np
import pytest

_REPORT: dict = defaultdict(lambda: [0.0, None, 0])


class Report:
    def add(self, check: str, error: float, tol: float) -> None:
        row = _REPORT[check]
        row[0] = max(row[0], float(error))
        row[1] = tol
        row[2] += 1


RUN_START_WAIT_S = 60  # the longest ctrl_c_once_changed waits to see a run's first update


@contextlib.contextmanager
def _ctrl_c_once_changed(array):
    """Within the block, Ctrl-C (SIGINT to this process) once ``array`` differs from its value
    at the start: once a run has made an update (the native loop is running, the GIL released),
    not at a fixed time, which on a loaded machine could come before fit reached its loop."""
    before = array.copy()
    done = threading.Event()
    sending = threading.Lock()  # no Ctrl-C once the block is over (it would abort the pytest session)

    def send():
        deadline = time.monotonic() + RUN_START_WAIT_S
        while np.array_equal(array, before) and not done.is_set() and time.monotonic() < deadline:
            time.sleep(0.001)
        with sending:
            if not done.is_set():
                os.kill(os.getpid(), signal.SIGINT)

    sender = threading.Thread(target=send)
    sender.start()
    try:
        yield
    finally:
        with sending:
            done.set()
        sender.join()


@pytest.fixture
def ctrl_c_once_changed():
    """The context manager ``_ctrl_c_once_changed(array)``."""
    return _ctrl_c_once_changed


@pytest.fixture(scope="session")
def report() -> Report:
    return Report()


@pytest.fixture(scope="session")
def tf():
    """TensorFlow, or a skip; with FASTGRAD_REQUIRE_TF=1 (as in CI) a missing TF is an error."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if os.environ.get("FASTGRAD_REQUIRE_TF") == "1":
        import tensorflow

        return tensorflow
    return pytest.importorskip("tensorflow")


def pytest_terminal_summary(terminalreporter):
    if not _REPORT:
        return
    tr = terminalreporter
    tr.section("fastgrad error report (max over every compared tensor)")
    tr.write_line(f"{'check':58s} {'max error':>11s} {'tolerance':>10s} {'tensors':>8s}")
    for check in sorted(_REPORT):
        err, tol, n = _REPORT[check]
        tr.write_line(f"{check:58s} {err:11.3e} {tol:10.1e} {n:8d}")
