"""fastgrad.sklearn.MLPRegressor against scikit-learn's own MLPRegressor, running.

Error per tensor: max |ours - scikit-learn's| / max |scikit-learn's| (coefs_, intercepts_,
loss_curve_, validation_scores_), on the diabetes data with y standardized.
"""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")

from sklearn.base import clone  # noqa: E402
from sklearn.datasets import load_diabetes  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.neural_network import MLPRegressor as SkMLP  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from fastgrad.checks import relative_error as rel_err  # noqa: E402
from fastgrad.sklearn import MLPRegressor  # noqa: E402

TOL = 1e-6  # issue 17: relative to max |scikit-learn's| per tensor (float64)

BASE = dict(hidden_layer_sizes=(16,), batch_size=32, max_iter=15, tol=0, random_state=0)
CASES = {
    "sgd-nesterov": dict(solver="sgd", learning_rate_init=0.01, momentum=0.9, nesterovs_momentum=True),
    "sgd-invscaling": dict(solver="sgd", learning_rate="invscaling", learning_rate_init=0.05, power_t=0.25),
    # lr 0.1 with n_iter_no_change=1: the training loss rises, and the rate is divided by 5
    "sgd-adaptive": dict(solver="sgd", learning_rate="adaptive", learning_rate_init=0.1, n_iter_no_change=1),
    "adam": dict(solver="adam", learning_rate_init=0.01),
    # stops after 13 epochs and restores the best (epoch 10's) weights
    "adam-early-stopping": dict(solver="adam", learning_rate_init=0.03, early_stopping=True, n_iter_no_change=2),
}


@pytest.fixture(scope="module")
def diabetes():
    X, y = load_diabetes(return_X_y=True)
    return X, (y - y.mean()) / y.std()


def _both(X, y, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        theirs = SkMLP(**kw).fit(X, y)
        ours = MLPRegressor(**kw).fit(X, y)
    return ours, theirs


@pytest.mark.parametrize("case", sorted(CASES))
def test_same_numbers_as_scikit_learn(diabetes, report, case):
    X, y = diabetes
    ours, theirs = _both(X, y, **BASE, **CASES[case])
    assert ours.n_iter_ == theirs.n_iter_ and ours.t_ == theirs.t_
    assert len(ours.loss_curve_) == len(theirs.loss_curve_)
    pairs = [(f"coefs_[{i}]", a, b) for i, (a, b) in enumerate(zip(ours.coefs_, theirs.coefs_))]
    pairs += [(f"intercepts_[{i}]", a, b) for i, (a, b) in enumerate(zip(ours.intercepts_, theirs.intercepts_))]
    pairs.append(("loss_curve_", np.array(ours.loss_curve_), np.array(theirs.loss_curve_)))
    if theirs.validation_scores_ is not None:
        pairs.append(("validation_scores_", np.array(ours.validation_scores_), np.array(theirs.validation_scores_)))
    for name, a, b in pairs:
        assert a.shape == b.shape and a.dtype == b.dtype == np.float64, name
        e = rel_err(a, b)
        report.add(f"sklearn MLPRegressor {case}: {name.split('[')[0]}", e, TOL)
        assert e <= TOL, f"{case} {name}: {e:.3e} > {TOL:.0e}"
    assert abs(ours.loss_ - theirs.loss_) <= TOL * abs(theirs.loss_)
    if theirs.best_validation_score_ is not None:
        assert abs(ours.best_validation_score_ - theirs.best_validation_score_) <= TOL
    else:
        assert abs(ours.best_loss_ - theirs.best_loss_) <= TOL * abs(theirs.best_loss_)
    np.testing.assert_allclose(ours.predict(X), theirs.predict(X), rtol=0, atol=TOL * np.abs(y).max())


def test_the_cases_exercise_what_they_name(diabetes):
    X, y = diabetes
    ours, _ = _both(X, y, **BASE, **CASES["sgd-adaptive"])
    assert ours._solver.learning_rate < CASES["sgd-adaptive"]["learning_rate_init"]
    ours, _ = _both(X, y, **BASE, **CASES["adam-early-stopping"])
    assert ours.n_iter_ < BASE["max_iter"]
    assert np.argmax(ours.validation_scores_) < ours.n_iter_ - 1


def test_partial_fit_and_warm_start_follow_scikit_learn(diabetes, report):
    X, y = diabetes
    kw = dict(BASE, solver="adam", learning_rate_init=0.01)
    ours, theirs = MLPRegressor(**kw), SkMLP(**kw)
    for _ in range(3):
        ours.partial_fit(X, y)
        theirs.partial_fit(X, y)
    ours = pickle.loads(pickle.dumps(ours))  # the optimizer state survives a pickle
    ours.partial_fit(X, y)
    theirs.partial_fit(X, y)
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        assert rel_err(a, b) <= TOL
    assert rel_err(np.array(ours.loss_curve_), np.array(theirs.loss_curve_)) <= TOL

    kw = dict(BASE, solver="sgd", learning_rate_init=0.01, warm_start=True, max_iter=3)
    ours, theirs = _both(X, y, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours.fit(X, y)
        theirs.fit(X, y)
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        assert rel_err(a, b) <= TOL
    assert ours.t_ == theirs.t_ and len(ours.loss_curve_) == 6


def test_float32_input_trains_float32_as_scikit_learn(diabetes):
    X, y = diabetes
    ours, theirs = _both(X.astype(np.float32), y.astype(np.float32), **BASE, solver="adam")
    assert [c.dtype for c in ours.coefs_] == [c.dtype for c in theirs.coefs_] == [np.float32] * 2
    assert ours.predict(X.astype(np.float32)).dtype == np.float32
    for a, b in zip(ours.coefs_, theirs.coefs_):
        assert rel_err(a, b) <= 1e-4  # float32 rounding, 15 epochs of updates


def test_stopping_and_convergence_warning(diabetes):
    X, y = diabetes
    with pytest.warns(ConvergenceWarning, match="Maximum iterations \\(2\\)"):
        MLPRegressor(hidden_layer_sizes=(4,), max_iter=2, random_state=0).fit(X, y)
    kw = dict(hidden_layer_sizes=(4,), max_iter=500, tol=1e-2, n_iter_no_change=2, random_state=0,
              solver="sgd", learning_rate_init=0.01)
    ours, theirs = _both(X, y, **kw)
    assert ours.n_iter_ == theirs.n_iter_ < 500


@pytest.mark.parametrize("params, what", [
    (dict(activation="tanh"), "activation='tanh'"),
    (dict(activation="logistic"), "activation='logistic'"),
    (dict(solver="lbfgs"), "solver='lbfgs'"),
    (dict(loss="poisson"), "loss='poisson'"),
])
def test_unsupported_values_point_to_scikit_learn(diabetes, params, what):
    X, y = diabetes
    with pytest.raises(ValueError, match=f"{what}.*scikit-learn's own"):
        MLPRegressor(**params).fit(X, y)


def test_bad_parameters_are_refused(diabetes):
    X, y = diabetes
    for params in (dict(alpha=-1), dict(batch_size=0), dict(momentum=1.5), dict(hidden_layer_sizes=(0,)),
                   dict(learning_rate="fast"), dict(max_iter=0), dict(validation_fraction=1.0)):
        with pytest.raises(ValueError):
            MLPRegressor(**params).fit(X, y)
    with pytest.raises(ValueError, match="partial_fit does not support early_stopping"):
        MLPRegressor(early_stopping=True).partial_fit(X, y)


def test_works_with_scikit_learn_tools(diabetes):
    X, y = diabetes
    est = MLPRegressor(hidden_layer_sizes=(8,), max_iter=5, random_state=0, solver="sgd", learning_rate_init=0.01)
    assert clone(est).get_params() == est.get_params()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        pipe = make_pipeline(StandardScaler(), est).fit(X, y)
        assert pipe.predict(X).shape == (len(X),)
        scores = cross_val_score(est, X, y, cv=3)
        assert scores.shape == (3,) and np.isfinite(scores).all()
        for n_jobs in (None, 2):
            grid = GridSearchCV(est, {"learning_rate_init": [0.001, 0.01], "alpha": [1e-4, 1e-2]}, cv=2,
                                n_jobs=n_jobs).fit(X, y)
            assert set(grid.best_params_) == {"learning_rate_init", "alpha"}
            assert np.isfinite(grid.cv_results_["mean_test_score"]).all()
    # the same parameters give scikit-learn's own estimator
    # (scikit-learn before 1.7 has no `loss` parameter; fastgrad's takes it, as 1.7 and later do)
    assert set(SkMLP().get_params()) | {"loss"} == set(MLPRegressor().get_params())


@parametrize_with_checks([MLPRegressor(max_iter=50, random_state=0)])
def test_scikit_learn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)
