"""E4C, the walkthrough's addendum to E4: the same raw-data SGD run with ``global_clipnorm``.

Each test holds a claim the story (``fastgrad demo E4C``) prints: what clipping fixes (no
explosion, every step at most lr * c) and what it does not (w walks in steps of lr * c and stays
about lr * c from 1; E5's scaling gets far closer).
"""

from __future__ import annotations

import importlib.util
import math
import re

import numpy as np
import pytest

import fastgrad as fg
from fastgrad import cli
from fastgrad import walkthrough as wt

# w is float32 and stays in [~0.99, 2]: each update is rounded to it, so a step's length is exact to
# within half a float32 ulp of w in [1, 2); one ulp is the bound the step and band tests allow
ULP = float(np.spacing(np.float32(1.0)))
REPLAY_TOL = 1e-5  # E4C vs Keras's SGD(global_clipnorm), float32: issue 3's replay tolerance
REPLAY_STEPS = 200
E4_MAX_STEPS = 30  # the design: E4 diverges within 30 steps

e4c = wt.MODULES["E4C"]  # the module (``wt.e4c`` is its run function)


@pytest.fixture(scope="module")
def ex():
    return wt.e4c()


def _w(r):
    return r.history.weights[0].ravel().astype(np.float64)


def _runs(ex):
    return [(ex.results["run"], ex.facts.clipped), (ex.results["wide"], ex.facts.wide)]


def test_it_is_told_right_after_e4():
    assert list(wt.MODULES) == ["E1", "E2", "E3", "E4", "E4C", "E5", "E6", "E7", "E8"]
    assert wt.EXPERIMENTS["E4C"] is e4c.run and wt.e4c is e4c.run and e4c.ID == "E4C"
    assert [e.id for e in wt.run("e4c")] == ["E4C"]


def test_the_clipped_run_does_not_diverge_where_e4_did(ex):
    e4 = wt.e4().results["run"]
    assert e4.stopped_by == "diverged" and e4.steps <= E4_MAX_STEPS
    f = ex.facts
    assert (f.unclipped_stopped_by, f.unclipped_steps) == ("diverged", e4.steps)
    for r, run in _runs(ex):
        assert r.optimizer["config"]["global_clipnorm"] == run.clipnorm
        assert r.learning_rate == e4.learning_rate == f.learning_rate
        # the same seed: the same samples as E4, step for step
        np.testing.assert_array_equal(r.history.batches[: e4.steps], e4.history.batches)
        assert r.stopped_by == "max_steps" and r.steps == e4c.STEPS
        assert r.divergence is None and run.warnings == 0 and run.finite
        assert np.isfinite(r.history.loss).all() and np.isfinite(r.history.grad_norm).all()
        assert np.isfinite(_w(r)).all() and math.isfinite(r.final_loss)
        assert run.max_loss == r.history.loss.max() < 1e7  # E4's loss reached inf


def test_every_step_is_capped_at_lr_times_c(ex):
    lr = ex.facts.learning_rate
    for r, run in _runs(ex):
        w, norm = _w(r), r.history.grad_norm
        dw = np.diff(w)
        cap = lr * run.clipnorm
        assert run.max_step == np.abs(dw).max() <= cap + ULP
        # the recorded norm is the gradient's before clipping: above c the step is exactly lr * c,
        # below it lr times the gradient; always towards w = 1
        clipped = norm > run.clipnorm
        assert run.clipped_steps == clipped.sum() >= 0.9 * r.steps  # "nearly every step"
        np.testing.assert_allclose(np.abs(dw[clipped]), cap, rtol=0, atol=ULP)
        np.testing.assert_allclose(np.abs(dw[~clipped]), lr * norm[~clipped], rtol=0, atol=ULP)
        moved = (w[:-1] != 1.0) & (dw != 0)
        assert np.all(np.sign(dw[moved]) == -np.sign(w[:-1][moved] - 1.0))


def test_it_walks_to_within_lr_c_and_stays_there_without_settling(ex):
    f = ex.facts
    lr, dist = f.learning_rate, abs(e4c.W0 - 1.0)
    for r, run in _runs(ex):
        err = np.abs(_w(r) - 1.0)
        cap = lr * run.clipnorm
        arrival = int(np.flatnonzero(err <= cap)[0])
        assert run.arrival_step == arrival
        # steps of at most lr * c cannot cover the distance sooner
        assert arrival >= math.floor((dist - cap) / (cap + ULP))
        assert run.band == err[arrival:].max() <= cap + ULP
        assert run.late_step == np.abs(np.diff(_w(r)))[-e4c.LATE:].max() >= cap / 2  # still moving
        assert 0.5 * dist <= arrival * run.band <= 1.01 * dist  # "about |w0 - 1|"
        assert run.w == _w(r)[-1] and run.final_loss == r.final_loss
    assert f.wide.arrival_step < f.clipped.arrival_step and f.wide.band > f.clipped.band


def test_scaling_fixes_what_clipping_does_not(ex):
    f, e5 = ex.facts, wt.e5().facts
    assert (f.e5_w, f.e5_steps, f.e5_final_loss) == (e5.w, e5.steps, e5.final_loss)
    x, y = fg.data.e4_data()
    assert f.stable_lr == 1 / x.max() ** 2 and f.e5_final_loss_raw == e5.final_loss * (y.max() - y.min()) ** 2
    assert f.learning_rate > 1000 * f.stable_lr
    assert abs(f.e5_w - 1) < f.clipped.band / 100
    assert f.e5_final_loss_raw < f.clipped.final_loss / 1000


def test_the_story_prints_the_runs_numbers(ex):
    text = "\n".join(e4c.tell(ex))
    c, w = ex.facts.clipped, ex.facts.wide
    for needle in (f"global_clipnorm={c.clipnorm:g}", "What it fixes", "What it does not fix",
                   f"stopped as diverged at step {ex.facts.unclipped_steps}",
                   f"longer than c at {c.clipped_steps} of {c.steps} steps", f"in {c.arrival_step} steps",
                   f"w = {c.w:.6f}", f"after {w.arrival_step} steps", "no DivergenceWarning",
                   f"w = {ex.facts.e5_w:.7f}"):
        assert needle in text, needle


def test_fastgrad_demo_e4c_prints_the_story(ex, capsys):
    assert cli.main(["demo", "E4c", "--no-replay"]) == 0
    out = capsys.readouterr().out
    assert re.findall(r"^== (\S+): ", out, flags=re.M) == ["E4C"]
    assert f"== E4C: {e4c.TITLE}" in out
    for line in e4c.tell(ex):  # the same seed, the same bits: the same story
        assert line in out.splitlines()


def test_the_full_demo_tells_it_right_after_e4(capsys):
    assert cli.main(["demo", "--no-replay"]) == 0
    out = capsys.readouterr().out
    assert re.findall(r"^== (\S+): ", out, flags=re.M) == ["E1", "E2", "E3", "E4", "E4C", "E5", "E6", "E7", "E8"]


def test_demo_help_lists_it_after_e4(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["demo", "--help"])
    assert exit_.value.code == 0
    ids = re.findall(r"^  (E\w+)  ", capsys.readouterr().out, flags=re.M)
    assert ids == list(wt.MODULES) and ids.index("E4C") == ids.index("E4") + 1


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="needs matplotlib (the plot extra)")
def test_the_figure(ex):
    fig = e4c.figure(ex)
    ax_loss, ax_norm, ax_w = fig.axes[:3]
    assert ax_loss.get_yscale() == ax_norm.get_yscale() == ax_w.get_yscale() == "log"
    assert "before clipping" in ax_norm.get_ylabel() and "|w - 1|" in ax_w.get_ylabel()
    labels = [line.get_label() for line in ax_loss.get_lines()]
    assert any(label.startswith("no clipping (E4") for label in labels)  # E4's run, for contrast
    assert "lr * c = 0.001" in [t.get_text() for t in ax_w.texts]


@pytest.mark.oracle
def test_keras_clips_the_same(tf, report, ex):
    for name, r in ex.results.items():
        short = fg.fit(e4c.one_weight(e4c.W0), ex.data["x"], ex.data["y"],
                       optimizer=fg.SGD(r.learning_rate, global_clipnorm=r.optimizer["config"]["global_clipnorm"]),
                       batch_size=1, stop=[fg.stop.MaxSteps(REPLAY_STEPS)], seed=42, record_weights=True)
        np.testing.assert_array_equal(short.history.loss, r.history.loss[:REPLAY_STEPS])
        h = fg.oracle.replay(short, ex.data["x"], ex.data["y"])
        d = wt.max_deviation(short, h, ex.data["y"])
        report.add(f"TF replay E4C {name} float32, {REPLAY_STEPS} steps: weights", d["weights"], REPLAY_TOL)
        assert d["weights"] <= REPLAY_TOL and d["loss"] <= REPLAY_TOL
