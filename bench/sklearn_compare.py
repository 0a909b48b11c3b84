"""scikit-learn's MLPRegressor against fastgrad.sklearn.MLPRegressor: the same settings, the same
numbers (the largest relative difference of the fitted weights is printed beside the times).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/sklearn_compare.py [--repeats 5]

Workloads (issue 17): diabetes (y standardized; 16 hidden, batch 32, 200 epochs) and
make_regression(20_000, 50) (y standardized; 64 hidden, batch 64, 20 epochs), solvers sgd and adam,
tol=0 so that every epoch runs.  Each figure is the median of ``--repeats`` runs, the two
estimators alternating so that both see the same machine state.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np
from sklearn.datasets import load_diabetes, make_regression
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPRegressor as SkMLP

from fastgrad.sklearn import MLPRegressor as FgMLP


def workloads():
    X, y = load_diabetes(return_X_y=True)
    yield "diabetes 442x10, 16 hidden, batch 32, 200 epochs", X, (y - y.mean()) / y.std(), \
        dict(hidden_layer_sizes=(16,), batch_size=32, max_iter=200)
    X, y = make_regression(n_samples=20_000, n_features=50, random_state=0)
    yield "make_regression 20000x50, 64 hidden, batch 64, 20 epochs", X, (y - y.mean()) / y.std(), \
        dict(hidden_layer_sizes=(64,), batch_size=64, max_iter=20)


def timed(cls, X, y, params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        t = time.perf_counter()
        est = cls(**params).fit(X, y)
        return time.perf_counter() - t, est


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    print(f"{'workload':58s} {'solver':6s} {'scikit-learn':>12s} {'fastgrad':>9s} "
          f"{'speed-up':>8s} {'max rel diff':>12s}")
    for name, X, y, shape in workloads():
        for solver in ("sgd", "adam"):
            params = dict(shape, solver=solver, tol=0.0, random_state=0)
            sk_t, fg_t = [], []
            for _ in range(args.repeats):
                t, sk = timed(SkMLP, X, y, params)
                sk_t.append(t)
                t, fg = timed(FgMLP, X, y, params)
                fg_t.append(t)
            diff = max(np.abs(a - b).max() / np.abs(b).max()
                       for a, b in zip(fg.coefs_ + fg.intercepts_, sk.coefs_ + sk.intercepts_))
            s, f = statistics.median(sk_t), statistics.median(fg_t)
            print(f"{name:58s} {solver:6s} {s:11.3f}s {f:8.3f}s {s / f:7.1f}x {diff:12.1e}")


if __name__ == "__main__":
    main()
