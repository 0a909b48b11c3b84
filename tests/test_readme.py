"""The README's tour runs and shows what it says it shows."""

from __future__ import annotations

import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def python_blocks():
    if not README.exists():  # pragma: no cover - tests run from a checkout
        pytest.skip("README.md not beside the tests")
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_the_e1_tour_prints_what_the_readme_says():
    block = python_blocks()[0]
    ns: dict = {}
    exec(compile(block, "README.md", "exec"), ns)
    r = ns["result"]
    assert r.history.weights[0].ravel().tolist() == [2.0, 1.5, 1.25, 1.125, 1.0625]
    assert r.history.loss.tolist() == [2.5, 0.625, 0.15625, 0.0390625]
    assert r.final_loss == 0.009765625 and r.stopped_by == "weight_delta"
    # the comments in the block state the same numbers
    assert "[2.0, 1.5, 1.25, 1.125, 1.0625]" in block and "0.009765625" in block


def test_the_demo_excerpt_is_what_the_demo_prints():
    import subprocess
    import sys

    text = README.read_text()
    start = text.index("```\n== E1")
    excerpt = text[start + 4 : text.index("```", start + 4)]
    out = subprocess.run([sys.executable, "-m", "fastgrad", "demo", "E1", "E4", "--no-replay"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = [ln for ln in excerpt.splitlines() if ln.strip() and ln.strip() != "..."]
    assert len(lines) > 10
    for ln in lines:
        assert ln in out.stdout, f"README line not in the demo's output: {ln!r}"
