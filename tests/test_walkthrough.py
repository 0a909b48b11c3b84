"""The walkthrough's eight experiments (../shared/DESIGN.md, "The walkthrough")."""

from __future__ import annotations

import numpy as np
import pytest

import fastgrad as fg
from fastgrad import walkthrough as wt
from fastgrad.data import e8_data

E1_WEIGHTS = [2.0, 1.5, 1.25, 1.125, 1.0625]  # the walkthrough's printed trajectory
E1_LOSSES = [2.5, 0.625, 0.15625, 0.0390625]
E1_FINAL = 0.009765625
RECOVERY_TOL = 0.05  # E6/E7: each weight within 0.05 of (3, 2, -7) and the bias of 5
REPLAY_TOL = 1e-5  # E6-E8 vs TensorFlow, float32, first 200 steps (issue 3)
REPLAY_STEPS = 200


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_e1_exact(dtype):
    ex = wt.e1(dtype)
    r = ex.results["run"]
    assert ex.facts.weights == E1_WEIGHTS
    assert ex.facts.losses == E1_LOSSES
    assert r.final_loss == E1_FINAL
    assert r.stopped_by == "weight_delta" and r.steps == 4
    assert r.history.weights[0].dtype == np.dtype(dtype)


@pytest.mark.oracle
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_e2_tensorflow_gives_the_same_numbers(tf, dtype):
    ex = wt.e2(dtype)
    assert ex.facts.tf_weights == E1_WEIGHTS
    assert ex.facts.tf_losses == E1_LOSSES
    assert ex.facts.deviation["weights"] == 0.0 and ex.facts.deviation["loss"] == 0.0


def test_e3_model_object():
    ex = wt.e3()
    assert ex.facts.call_3 == [[6.0]]
    assert ex.facts.weights == E1_WEIGHTS and ex.facts.losses == E1_LOSSES


def test_e4_diverges_with_a_warning():
    ex = wt.e4()
    r = ex.results["run"]
    assert r.stopped_by == "diverged" and r.steps <= 30
    assert len(ex.facts.warning) == 1
    assert f"diverged at step {r.steps}" in ex.facts.warning[0]
    loss, gnorm = r.history.loss, r.history.grad_norm
    assert not np.isfinite(loss[-1])  # the explosion is in the history
    assert np.all(np.diff(loss[:-1]) > 0) and np.all(np.diff(gnorm) > 0)
    assert gnorm[-1] > 1e6 * gnorm[0]
    assert r.divergence == ex.facts.warning[0]


def test_e4_on_divergence_raise():
    x, y = fg.data.e4_data()
    layer = fg.Dense(1, use_bias=False)
    layer.set_weights([[[2.0]]])
    with pytest.raises(fg.DivergenceError, match="diverged at step") as info:
        fg.fit(layer, x, y, optimizer=fg.SGD(0.001), batch_size=1, stop=fg.stop.MaxSteps(30), seed=42,
               on_divergence="raise")
    assert info.value.result.stopped_by == "diverged"


def test_e5_minmax_cures_it():
    ex = wt.e5()
    assert abs(ex.facts.w - 1.0) < 1e-3
    assert ex.facts.final_loss < 1e-3
    assert ex.results["run"].stopped_by == "max_steps"
    assert ex.results["loss_below"].stopped_by == "loss_below"


@pytest.mark.parametrize("make", [wt.e6, wt.e7], ids=["E6", "E7"])
def test_e6_e7_recover_the_plane(make):
    ex = make()
    k, b = np.array(ex.facts.kernel), ex.facts.bias
    assert np.all(np.abs(k - [3, 2, -7]) <= RECOVERY_TOL)
    assert abs(b - 5) <= RECOVERY_TOL


def test_e7_loss_delta_stops_too_early_and_plateau_stops_well():
    f = wt.e7().facts
    assert f.loss_delta_steps < 10 and f.loss_delta_final_loss > 1.0
    assert np.abs(np.array(f.loss_delta_kernel) - [3, 2, -7]).max() > 1.0
    assert f.plateau_final_loss < 1e-6
    assert np.all(np.abs(np.array(f.plateau_kernel) - [3, 2, -7]) <= RECOVERY_TOL)
    assert 0 < f.loss_delta_bad_share < 1


def test_e8_learns():
    ex = wt.e8()
    f = ex.facts
    assert f.first_losses / f.final_loss > 1e3  # orders of magnitude
    y = np.array(f.targets)
    assert f.max_abs_error <= 0.01 * (y.max() - y.min())  # predictions within 1% of the range


def test_e8_data_is_make_regressions():
    x, y = e8_data()
    assert x.shape == (10, 10) and y.shape == (10,)
    np.testing.assert_allclose(x[0, :3], [-0.299007, -0.035826, -1.987569], atol=5e-7)
    assert abs(y[0] - (-324.129377)) < 5e-7
    sklearn = pytest.importorskip("sklearn.datasets")
    xs, ys = sklearn.make_regression(n_samples=10, n_features=10, bias=1, random_state=42)
    np.testing.assert_array_equal(x, xs)
    np.testing.assert_array_equal(y, ys)


@pytest.mark.oracle
@pytest.mark.parametrize("make", [wt.e6, wt.e7, wt.e8], ids=["E6", "E7", "E8"])
def test_replay_in_tensorflow_agrees_step_by_step(tf, report, make):
    ex = make(steps=REPLAY_STEPS)
    r = ex.results["run"]
    assert r.dtype == "float32" and r.steps == REPLAY_STEPS
    h = fg.oracle.replay(r, ex.data["x"], ex.data["y"])
    np.testing.assert_array_equal(h.batches, r.history.batches)
    d = wt.max_deviation(r, h, ex.data["y"])
    report.add(f"TF replay {ex.id} float32, {REPLAY_STEPS} steps: weights", d["weights"], REPLAY_TOL)
    report.add(f"TF replay {ex.id} float32, {REPLAY_STEPS} steps: loss (RMS residual)", d["loss"], REPLAY_TOL)
    assert d["weights"] <= REPLAY_TOL
    assert d["loss"] <= REPLAY_TOL


def test_walkthrough_run_rejects_unknown_ids():
    with pytest.raises(ValueError, match="unknown experiment 'E9'"):
        wt.run(["E9"])


def test_the_example_script_runs_and_prints_the_walkthroughs_results():
    import pathlib
    import subprocess
    import sys

    script = pathlib.Path(__file__).resolve().parent.parent / "examples" / "walkthrough.py"
    if not script.exists():  # pragma: no cover - tests run from a checkout
        pytest.skip("examples/ not beside the tests")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert f"E1 weights: {E1_WEIGHTS}" in out.stdout
    assert "E3 model([[3]]): [[6.0]]" in out.stdout
    assert "E4 diverged at step" in out.stdout
    assert "E6 kernel [ 3.  2. -7.] bias [5.]" in out.stdout
