"""Shared fixtures, and the error report printed at the end of every run.

Tests that compare against a reference record ``(check, tensor, error, tolerance)`` with the
``report`` fixture; the largest error per check and tensor kind is printed in the terminal
summary, so the figures quoted in notes come from the run itself.
"""

from __future__ import annotations

import os
from collections import defaultdict

import pytest

_REPORT: dict = defaultdict(lambda: [0.0, None, 0])


class Report:
    def add(self, check: str, error: float, tol: float) -> None:
        row = _REPORT[check]
        row[0] = max(row[0], float(error))
        row[1] = tol
        row[2] += 1


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
