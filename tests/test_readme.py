"""The README is for users, and true: its tour runs and shows what it says, its demo excerpt is
what the demo prints, the commands CI runs are in it, its links stay in the repository, its layout
names files that exist, and it reads in five minutes."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MAX_WORDS = 1300  # "about 1,200 words at most"; `wc -w README.md` counts the same way


def text() -> str:
    if not README.exists():  # pragma: no cover - tests run from a checkout
        pytest.skip("README.md not beside the tests")
    return README.read_text(encoding="utf-8")


def fenced_blocks(source: str):
    """(language, body) of every fenced code block, in order."""
    blocks, lang, body = [], None, []
    for line in source.splitlines():
        if lang is None and line.startswith("```"):
            lang, body = line[3:].strip(), []
        elif lang is not None and line.strip() == "```":
            blocks.append((lang, "\n".join(body) + "\n"))
            lang = None
        elif lang is not None:
            body.append(line)
    assert lang is None, "a code block is not closed"
    return blocks


def python_blocks():
    return [body for lang, body in fenced_blocks(text()) if lang == "python"]


def section(title: str) -> str:
    """The text of the README's `## title` section, up to the next `## `."""
    t = text()
    start = t.index(f"\n## {title}\n")
    end = t.find("\n## ", start + 1)
    return t[start : end if end >= 0 else len(t)]


def run_tour(with_oracle: bool = False) -> dict:
    """Every python block of the README in order, in one namespace (the oracle's only if asked),
    in a temporary directory (the tour saves a model file)."""
    import os
    import tempfile

    ns: dict = {}
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        try:
            for block in python_blocks():
                if "fg.oracle." in block and not with_oracle:
                    continue
                exec(compile(block, "README.md", "exec"), ns)
            ns["loaded_predictions"] = ns["fg"].load("model.npz").predict(ns["x_val"])
        finally:
            os.chdir(cwd)
    return ns


def test_the_sklearn_drop_in_gives_scikit_learns_numbers():
    from sklearn.neural_network import MLPRegressor as SkMLP

    ns = run_tour()
    reg = ns["reg"]
    sk = SkMLP(hidden_layer_sizes=(16,), learning_rate_init=0.01, max_iter=1000, random_state=0)
    reg2 = type(reg)(hidden_layer_sizes=(16,), learning_rate_init=0.01, max_iter=1000, random_state=0)
    reg2.fit(ns["x"], ns["y"])
    sk.fit(ns["x"], ns["y"])
    assert reg.n_iter_ < 1000  # the README's converged
    assert reg2.n_iter_ == sk.n_iter_
    reg = reg2
    for a, b in zip(reg.coefs_ + reg.intercepts_, sk.coefs_ + sk.intercepts_):
        np.testing.assert_allclose(a, b, rtol=0, atol=SKLEARN_ATOL * np.abs(b).max())


SKLEARN_ATOL = 1e-6  # relative to each tensor's largest value, as tests/test_sklearn.py holds it


def test_the_judge_and_keep_tour_does_what_it_says():
    ns = run_tour()
    r, model = ns["judged"], ns["net"]
    h = r.history
    assert h.val_steps[0] == 0 and h.val_steps[-1] == r.steps and len(h.val_loss) >= 3
    assert r.stopped_by in ("plateau", "max_epochs") and r.best_step is not None
    assert h.val_loss[list(h.val_steps).index(r.best_step)] == h.val_loss[1:].min()
    scores = ns["fg"].evaluate(model, ns["x_val"], ns["y_val"])
    assert scores["r2"] > 0.99, "the comment says r2: 0.99..."
    assert ns["loaded_predictions"].tobytes() == model.predict(ns["x_val"]).tobytes()


def test_the_commands_ci_runs_are_the_readmes():
    # .ci/run greps these two lines, word for word, and runs them
    blocks = [body for lang, body in fenced_blocks(text()) if lang == "bash"]
    for cmd in ("pip install '.[test]' && pytest", "pip install . && fastgrad demo"):
        assert any(cmd in b for b in blocks), f"README does not show, in a bash block: {cmd}"


def test_the_e1_tour_prints_what_the_readme_says():
    block = python_blocks()[0]
    ns: dict = {}
    exec(compile(block, "README.md", "exec"), ns)
    r = ns["result"]
    assert r.history.weights[0].ravel().tolist() == [2.0, 1.5, 1.25, 1.125, 1.0625]
    assert r.history.loss.tolist() == [2.5, 0.625, 0.15625, 0.0390625]
    assert r.final_loss == 0.009765625 and r.stopped_by == "weight_delta"
    # the comments in the block state the same numbers
    for shown in ("[2.0, 1.5, 1.25, 1.125, 1.0625]", "[2.5, 0.625, 0.15625, 0.0390625]", "0.009765625",
                  "'weight_delta'"):
        assert shown in block


def test_the_models_and_kernels_tour_shows_what_it_says():
    ns = run_tour()
    block = next(b for b in python_blocks() if "value_and_grad" in b)
    shapes = [g.shape for g in ns["grads"]]
    assert shapes == [(3, 10), (10,), (10, 1), (1,)]
    assert str(shapes) in block
    assert np.isfinite(ns["loss"]) and ns["loss"] > 0
    x, k, b = ns["x"], ns["k"], ns["b"]
    np.testing.assert_allclose(ns["h"], np.maximum(x @ k.astype(np.float64) + b, 0), rtol=1e-12, atol=1e-12)


def test_the_minibatch_tour_recovers_the_line_and_records_what_it_says():
    ns = run_tour()
    block = next(b for b in python_blocks() if "record_weights=10" in b)
    r, line = ns["result"], ns["line"]
    assert r.stopped_by == "plateau" and "# 'plateau'" in block
    assert 0 < r.steps < 5000
    # "[3, 2, -7] and [5], to 1e-3"
    assert "[3, 2, -7] and [5], to 1e-3" in block
    np.testing.assert_allclose(line.kernel.ravel(), [3.0, 2.0, -7.0], atol=1e-3, rtol=0)
    np.testing.assert_allclose(line.bias, [5.0], atol=1e-3, rtol=0)
    # "(result.steps, 3): the samples each step used"
    assert r.history.batches.shape == (r.steps, 3)
    assert ((r.history.batches >= 0) & (r.history.batches < 100)).all()
    # "the kernel at steps 0, 10, 20, ... and the last (weight_steps)"
    ws = r.history.weight_steps.tolist()
    assert ws[0] == 0 and ws[-1] == r.steps
    assert all(s % 10 == 0 for s in ws[:-1]) and ws[:-1] == list(range(0, r.steps, 10))[: len(ws) - 1]
    assert r.history.weights[0].shape == (len(ws), 3, 1)
    np.testing.assert_array_equal(r.history.weights[0][-1], line.kernel)


@pytest.mark.oracle
def test_the_oracle_tour_agrees_as_the_readme_says(tf):
    ns = run_tour(with_oracle=True)
    oracle_text = section("The oracle")
    assert "1e-12 (float64) and 1e-6 (float32)" in oracle_text
    # the model is float32: its gradients held to TensorFlow's within 1e-6, relative
    assert ns["tf_loss"] == pytest.approx(ns["loss"], rel=1e-6)
    for ours, theirs in zip(ns["grads"], ns["tf_grads"]):
        assert np.max(np.abs(ours - theirs)) <= 1e-6 * np.max(np.abs(theirs))
    # the replay runs the same batches: TF's weights at the recorded steps are fastgrad's
    r, h = ns["result"], ns["tf_history"]
    ours = r.history.weights[0]
    theirs = h.weights[0][r.history.weight_steps]
    assert np.max(np.abs(ours - theirs)) <= 1e-5 * np.max(np.abs(theirs))


def test_the_demo_excerpt_is_what_the_demo_prints():
    excerpt = next(body for lang, body in fenced_blocks(text()) if body.startswith("== E1"))
    out = subprocess.run([sys.executable, "-m", "fastgrad", "demo", "E1", "E4", "--no-replay"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = [ln for ln in excerpt.splitlines() if ln.strip() and ln.strip() != "..."]
    assert len(lines) > 10
    for ln in lines:
        assert ln in out.stdout, f"README line not in the demo's output: {ln!r}"


def test_the_readme_reads_in_five_minutes_and_is_for_users():
    t = text()
    words = len(t.split())
    assert words <= MAX_WORDS, f"README has {words} words; at most about 1,200"
    lowered = t.lower()
    for notebook in ("today", "on this machine", "this session", "earlier days", "yesterday"):
        assert notebook not in lowered, f"README says {notebook!r}: true for a day"
    assert not re.search(r"\b20\d\d-\d\d-\d\d\b", t), "README holds a date"
    # private or internal names a user should not build on
    assert "BatchStream" not in t and "_core." not in t


def test_links_stay_in_the_repository():
    t = text()
    targets = re.findall(r"\]\(([^)\s]+)\)", t)
    assert targets, "no links found: the pattern is wrong"
    for target in targets:
        assert not re.match(r"[a-z]+:", target), f"link outside the repository: {target}"
        assert not target.startswith(("/", "..")) and "/../" not in target, f"link outside the repository: {target}"
        path = (ROOT / target.split("#")[0]).resolve()
        assert ROOT in path.parents and path.exists(), f"link to a missing file: {target}"
    assert "../" not in t, "a path outside the repository (a pip user has only the package)"


def test_the_walkthrough_is_summarized_in_the_readme():
    s = section("The walkthrough")
    for e in range(1, 9):
        assert f"E{e}" in s


def test_one_speed_table_with_its_command_and_machine_as_in_docs():
    s = section("Speed")
    assert "python bench/compare.py" in s and "median" in s and "vCPUs" in s
    tables = [body for _, body in fenced_blocks(text()) if "per step" in body]
    assert len(tables) == 1, "the README has one speed table"
    rows = [ln.split()[0] for ln in tables[0].splitlines()[1:] if ln.strip()]
    assert rows == ["W1", "W2", "W3", "W4", "W5", "W6", "W7"]
    # the figures are docs/performance.md's, from the same run
    perf = (ROOT / "docs" / "performance.md").read_text(encoding="utf-8")
    assert tables[0] in perf, "the README's table is not docs/performance.md's"


def test_the_layout_names_files_that_exist():
    blocks = fenced_blocks(section("Layout"))
    assert len(blocks) == 1, "the Layout section has one block"
    paths = [ln.split()[0] for ln in blocks[0][1].splitlines() if ln and not ln[0].isspace()]
    assert len(paths) > 20
    missing = [p for p in paths if not (ROOT / p).exists()]
    assert not missing, f"the README's layout names files that are not there: {missing}"
    for wanted in ("csrc/kernels.hpp", "python/fastgrad/training.py", "tests/"):
        assert wanted in paths
