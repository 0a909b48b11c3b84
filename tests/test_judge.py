"""Judge and keep (issue 15): validation data, monitors, restore-best, MaxEpochs, explicit batches,
the progress bar, evaluate/predict/save/load through the public names, the result's summary.

Every feature runs in both loops, which must give the same bits."""

from __future__ import annotations

import math

import numpy as np
import pytest

import fastgrad as fg
from fastgrad import stop

# the validation loss against a float64 forward pass by hand at the recorded weights: the kernels
# round in the model's dtype (float32: about 1e-7 relative per operation over a few dozen terms)
VAL_BY_HAND_RTOL = {np.float32: 1e-5, np.float64: 1e-12}


def data(n=40, d=3, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = x @ np.array([1.5, -2.0, 0.5][:d]) + 0.3 + 0.1 * rng.normal(size=n)
    return x.astype(dtype), y.astype(dtype)


def two_layer(dtype=np.float64, seed=0):
    return fg.Sequential([fg.Dense(5, "relu", dtype=dtype), fg.Dense(1, dtype=dtype)], seed=seed)


def one_output(dtype=np.float64, seed=0):
    return fg.Sequential([fg.Dense(1, dtype=dtype)], seed=seed)


def forward64(weights, spec, x):
    a, i = np.asarray(x, np.float64), 0
    for act, bias in spec:
        k = weights[i].astype(np.float64)
        a = a @ k
        i += 1
        if bias:
            a = a + weights[i].astype(np.float64)
            i += 1
        if act == "relu":
            a = np.maximum(a, 0.0)
    return a


def assert_same(a: fg.FitResult, b: fg.FitResult) -> None:
    assert (a.stopped_by, a.steps, a.best_step) == (b.stopped_by, b.steps, b.best_step)
    assert a.history.loss.tobytes() == b.history.loss.tobytes()
    assert a.history.grad_norm.tobytes() == b.history.grad_norm.tobytes()
    for name in ("batches", "val_loss", "val_steps"):
        u, v = getattr(a.history, name), getattr(b.history, name)
        assert (u is None) == (v is None), name
        if u is not None:
            assert u.tobytes() == v.tobytes(), name
    for u, v in zip(a.final_weights, b.final_weights):
        assert u.tobytes() == v.tobytes()


def both(make, x, y, **kw):
    out = []
    for loop in ("native", "python"):
        m = make()
        out.append(fg.fit(m, x, y, loop=loop, **kw))
    assert out[0].loop == "native" and out[1].loop == "python"
    assert_same(*out)
    return out[0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("make", [two_layer, one_output])
def test_validation_losses_are_the_mse_at_the_recorded_weights(dtype, make):
    x, y = data(dtype=dtype)
    xv, yv = data(n=17, seed=5, dtype=dtype)
    r = both(lambda: make(dtype), x, y, optimizer=fg.SGD(0.02), batch_size=4, seed=3, stop=[stop.MaxSteps(37)],
             validation_data=(xv, yv), validate_every=5, record_weights=True)
    h = r.history
    assert h.val_steps.tolist() == [0, 5, 10, 15, 20, 25, 30, 35, 37]  # before, every 5th, the last
    spec = r.model_spec
    for v, step in zip(h.val_loss, h.val_steps):
        w = [rows[step] for rows in h.weights]  # the weights recorded after that step
        by_hand = np.mean((forward64(w, spec, xv) - yv.astype(np.float64)[:, None]) ** 2)
        assert v == pytest.approx(by_hand, rel=VAL_BY_HAND_RTOL[dtype])


def test_validation_default_is_once_an_epoch_and_the_last_step():
    x, y = data(n=42)
    r = both(two_layer, x, y, optimizer=fg.SGD(0.01), batch_size=8, seed=0, stop=[stop.MaxSteps(20)],
             validation_data=data(n=9, seed=2))
    assert r.history.val_steps.tolist() == [0, 6, 12, 18, 20]  # ceil(42 / 8) = 6 steps an epoch


def test_full_batch_validates_every_step():
    x, y = data(n=10)
    r = both(one_output, x, y, optimizer=fg.SGD(0.05), stop=[stop.MaxSteps(4)], validation_data=(x, y))
    assert r.history.val_steps.tolist() == [0, 1, 2, 3, 4]
    # validating on the training data itself: the loss before step t+1 is the validation loss after step t
    assert r.history.val_loss[:4].tobytes() == r.history.loss.tobytes()


@pytest.mark.parametrize("rule", [
    stop.Plateau(1e-4, patience=2, monitor="val_loss"),
    stop.LossDelta(1e-3, monitor="val_loss"),
    stop.LossBelow(0.5, monitor="val_loss"),
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_monitors_on_the_validation_loss_fire_alike_in_both_loops(rule, dtype):
    x, y = data(dtype=dtype)
    xv, yv = data(n=15, seed=8, dtype=dtype)
    r = both(lambda: two_layer(dtype), x, y, optimizer=fg.SGD(0.05), batch_size=4, seed=2,
             stop=[rule, stop.MaxSteps(4000)], validation_data=(xv, yv), validate_every=3)
    assert r.stopped_by == rule.name, "the monitor should fire before the step cap"
    assert r.steps % 3 == 0  # a validation-loss rule is tested only after the steps that validate
    v = r.history.val_loss[1:]  # the evaluations the rules saw (not the one before training)
    if isinstance(rule, stop.LossBelow):
        assert v[-1] <= 0.5 and (v[:-1] > 0.5).all()
    elif isinstance(rule, stop.LossDelta):
        d = np.abs(np.diff(v))
        assert d[-1] <= 1e-3 and (d[:-1] > 1e-3).all()
    else:  # patience 2, counted in evaluations: the last two did not beat the best before them by tol
        best_before = v[:-2].min()
        assert (v[-2:] >= best_before - 1e-4).all()


def test_a_validation_monitor_without_validation_data_is_refused_before_anything_changes():
    x, y = data()
    m = two_layer()
    m.build(3)
    before = [w.copy() for w in m.get_weights()]
    with pytest.raises(ValueError, match=r"stop\[0\] \(plateau\): monitors val_loss, which needs validation_data"):
        fg.fit(m, x, y, stop=[stop.Plateau(0.1, 3, monitor="val_loss")])
    assert all(a.tobytes() == b.tobytes() for a, b in zip(before, m.get_weights()))
    with pytest.raises(ValueError, match="monitor: expected 'loss' or 'val_loss'"):
        stop.Plateau(0.1, 3, monitor="val")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_restore_best_ends_on_the_weights_of_the_best_validation_loss(dtype):
    x, y = data(dtype=dtype)
    xv, yv = data(n=13, seed=4, dtype=dtype)
    # batches of 2 at a rate of 0.1: the validation loss wanders, its best (step 50) is not the last
    r = both(lambda: two_layer(dtype), x, y, optimizer=fg.SGD(0.1), batch_size=2, seed=1,
             stop=[stop.MaxSteps(60)], validation_data=(xv, yv), validate_every=1, restore_best=True,
             record_weights=True)
    h = r.history
    k = 1 + int(np.argmin(h.val_loss[1:]))  # the first best evaluation after a step
    assert r.best_step == h.val_steps[k]
    assert r.best_step != r.steps, "pick data where the best is not the last step"
    for rows, w in zip(h.weights, r.final_weights):
        assert rows[r.best_step].tobytes() == w.tobytes()


def test_restore_best_without_validation_keeps_the_weights_after_the_best_batch_loss():
    x, y = data()
    r = both(one_output, x, y, optimizer=fg.SGD(0.4), batch_size=1, seed=6, stop=[stop.MaxSteps(50)],
             restore_best=True, record_weights=True)
    t = 1 + int(np.argmin(r.history.loss))
    assert r.best_step == t
    for rows, w in zip(r.history.weights, r.final_weights):
        assert rows[t].tobytes() == w.tobytes()


def test_max_epochs_counts_ceil_n_over_batch_steps():
    x, y = data(n=42)
    r = both(two_layer, x, y, optimizer=fg.SGD(0.01), batch_size=8, seed=0, stop=[stop.MaxEpochs(3)])
    assert (r.stopped_by, r.steps) == ("max_epochs", 18)
    r = both(two_layer, x, y, optimizer=fg.SGD(0.01), stop=[stop.MaxEpochs(4)])
    assert (r.stopped_by, r.steps) == ("max_epochs", 4)  # full batch: an epoch is a step


@pytest.mark.parametrize("make", [two_layer, one_output])
@pytest.mark.parametrize("sampling", ["random", "shuffle"])
def test_explicit_batches_replay_a_drawn_run_bit_for_bit(make, sampling):
    x, y = data()
    drawn = fg.fit(make(), x, y, optimizer=fg.SGD(0.02), batch_size=3, sampling=sampling, seed=9,
                   stop=[stop.MaxSteps(25)])
    again = both(make, x, y, optimizer=fg.SGD(0.02), batches=drawn.history.batches)
    assert again.stopped_by == "batches_exhausted" and again.steps == 25
    assert again.history.loss.tobytes() == drawn.history.loss.tobytes()
    assert again.history.batches.tobytes() == drawn.history.batches.tobytes()
    for u, v in zip(again.final_weights, drawn.final_weights):
        assert u.tobytes() == v.tobytes()


def test_explicit_batches_stop_at_a_rule_first_and_are_copied():
    x, y = data()
    idx = np.arange(40).reshape(20, 2) % 40
    r = both(two_layer, x, y, batches=idx, stop=[stop.MaxSteps(7)])
    assert (r.stopped_by, r.steps) == ("max_steps", 7)
    assert r.history.batches.tolist() == idx[:7].tolist()
    assert r.history.batches.base is not idx and not np.shares_memory(r.history.batches, idx)


@pytest.mark.parametrize("bad, error, match", [
    (np.array([[0, 1], [2, 40]]), ValueError, "batches: index 40 out of range for the 40 samples"),
    (np.array([[0, -1]]), ValueError, "batches: index -1 out of range"),
    (np.array([[0.0, 1.0]]), TypeError, "batches: expected an integer array"),
    (np.array([[True, False]]), TypeError, "batches: expected an integer array"),
    (np.array([0, 1, 2]), ValueError, r"batches: expected a 2-D array \(steps, batch\)"),
    (np.zeros((0, 2), np.int64), ValueError, "at least one step"),
    (np.zeros((1, 41), np.int64), ValueError, "batches of at most the 40 samples"),
])
def test_bad_explicit_batches_are_refused_before_anything_changes(bad, error, match):
    x, y = data()
    m = two_layer()
    m.build(3)
    before = [w.copy() for w in m.get_weights()]
    with pytest.raises(error, match=match):
        fg.fit(m, x, y, batches=bad)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(before, m.get_weights()))
    with pytest.raises(ValueError, match="batch_size: expected None or 2"):
        fg.fit(m, x, y, batches=np.zeros((3, 2), np.int64), batch_size=3)


def test_validation_data_is_checked_as_x_and_y_are():
    x, y = data()
    m = two_layer()
    with pytest.raises(ValueError, match="validation_data: x_val has 2 features, x has 3"):
        fg.fit(m, x, y, validation_data=(np.ones((4, 2)), np.ones(4)))
    with pytest.raises(ValueError, match="validation_data: x: contains NaN or inf"):
        fg.fit(m, x, y, validation_data=(np.full((4, 3), np.nan), np.ones(4)))
    with pytest.raises(TypeError, match=r"validation_data: expected a pair \(x_val, y_val\)"):
        fg.fit(m, x, y, validation_data=x)
    assert not m.built


class FakeBar:
    made: list = []

    def __init__(self, total, **kw):
        self.total, self.n, self.updates, self.closed = total, 0, 0, False
        FakeBar.made.append(self)

    def update(self, k):
        self.n += k
        self.updates += 1

    def close(self):
        self.closed = True


def test_progress_feeds_a_bar_between_native_chunks(monkeypatch):
    import tqdm.auto

    monkeypatch.setattr(tqdm.auto, "tqdm", FakeBar)
    FakeBar.made.clear()
    x, y = data()
    r = fg.fit(one_output(), x, y, optimizer=fg.SGD(0.01), batch_size=2, seed=0, stop=[stop.MaxSteps(20_000)],
               progress=True)
    bar = FakeBar.made[-1]
    assert r.loop == "native" and bar.closed and bar.total == 20_000
    assert 0 < bar.updates <= 201  # between chunks, never a Python call per step
    quiet = fg.fit(one_output(), x, y, optimizer=fg.SGD(0.01), batch_size=2, seed=0, stop=[stop.MaxSteps(20_000)])
    assert quiet.history.loss.tobytes() == r.history.loss.tobytes()  # the bar changes nothing


def test_evaluate_predict_save_load_through_the_public_names(tmp_path):
    x, y = data()
    m = two_layer()
    fg.fit(m, x, y, optimizer=fg.SGD(0.05), batch_size=4, seed=0, stop=[stop.MaxSteps(200)])
    assert m.predict(x).tobytes() == m(x).tobytes()
    scores = fg.evaluate(m, x, y)
    assert set(scores) == {"mse", "rmse", "mae", "r2"}
    assert scores["mse"] == fg.value_and_grad(m, x, y)[0]
    assert scores["rmse"] == pytest.approx(math.sqrt(scores["mse"]), rel=1e-15)
    m.save(tmp_path / "m.npz")
    back = fg.load(tmp_path / "m.npz")
    assert back(x).tobytes() == m(x).tobytes()


def test_the_result_shows_a_short_summary():
    x, y = data()
    r = fg.fit(two_layer(), x, y, optimizer=fg.SGD(0.05), batch_size=4, seed=0, stop=[stop.MaxSteps(30)],
               validation_data=data(n=8, seed=3), restore_best=True)
    text = repr(r)
    for part in ("stopped_by='max_steps'", "steps=30", "first_loss=", "val_loss=", f"best_step={r.best_step}"):
        assert part in text
    html = r._repr_html_()
    assert html.startswith("<table>") and "max_steps" in html and "validation loss" in html


@pytest.mark.parametrize("rows_split", [1 << 20, 0])  # the phased team step, and the cut by rows
def test_validation_on_the_team_gives_both_loops_the_same_bits(rows_split):
    from fastgrad import _core

    saved = _core.get_team_parts(), _core.get_team_min_work(), _core.get_team_rows_split()
    _core.set_team_parts(2)
    _core.set_team_min_work(0)  # every step and every validation on the team
    _core.set_team_rows_split(rows_split)
    try:
        x, y = data(n=64, dtype=np.float32)
        xv, yv = data(n=33, seed=7, dtype=np.float32)
        before = _core.team_steps_run()
        r = both(lambda: two_layer(np.float32), x, y, optimizer=fg.SGD(0.05), batch_size=16, seed=4,
                 stop=[stop.Plateau(1e-5, 3, monitor="val_loss"), stop.MaxSteps(60)],
                 validation_data=(xv, yv), validate_every=2, restore_best=True)
        assert _core.team_steps_run() > before
        assert len(r.history.val_loss) > 3
    finally:
        _core.set_team_parts(saved[0])
        _core.set_team_min_work(saved[1])
        _core.set_team_rows_split(saved[2])
