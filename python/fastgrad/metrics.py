"""Judge a model on data: the loss fit minimises and the usual regression metrics."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Dict

import numpy as np

from . import ops
from .gradients import _prepare

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from .layers import Model

__all__ = ["evaluate"]


def evaluate(model: Model, x: ArrayLike, y: ArrayLike) -> Dict[str, float]:
    """The model's errors on ``(x, y)``: ``{"mse", "rmse", "mae", "r2"}``, Python floats.

    ``model`` is a :class:`fastgrad.Sequential` or :class:`fastgrad.Dense`; ``x`` is (samples,
    features) and ``y`` (samples, outputs) or, for one output, (samples,), checked and converted
    to the model's dtype as :func:`fastgrad.fit` does them.  An unbuilt model is built from ``x``,
    as a first call would build it.  The predictions are the model's own, ``model(x)``.

    - ``mse``: the mean of the squared errors over every element, computed as fit computes its
      loss (:func:`fastgrad.ops.mse`), so it equals ``fg.value_and_grad(model, x, y)[0]`` bit for bit.
    - ``rmse``: ``sqrt(mse)``, Keras's ``RootMeanSquaredError``.  With several outputs this is not
      scikit-learn's ``root_mean_squared_error``, which averages each output's RMSE.
    - ``mae``: the mean of the absolute errors over every element (summed in float64).
    - ``r2``: scikit-learn's ``r2_score`` with ``multioutput="uniform_average"``: each output's
      ``1 - SS_res / SS_tot`` (in float64), then their plain mean.  An output whose ``y`` is
      constant scores 1.0 when predicted exactly, else 0.0 (scikit-learn computes SS_tot from the
      rounded mean, so for some constant columns, such as three 0.1s, it divides by a rounding
      error instead).  With a single sample R² is undefined: NaN (scikit-learn also warns).

    A model whose predictions are not finite (one that diverged) gets inf or NaN metrics, not an error.
    """
    _, x, y = _prepare(model, x, y)  # y comes back 2-D, in the model's dtype
    pred = model(x)
    mse = float(ops.mse(pred, y))
    # the other metrics in float64 from the same arrays (mse's kernel also sums in double)
    with np.errstate(over="ignore", invalid="ignore"):  # predictions of a diverged model: inf/NaN out
        err = pred.astype(np.float64) - y.astype(np.float64)
        mae = float(np.mean(np.abs(err)))
        r2 = _r2(y.astype(np.float64), err)
    return {"mse": mse, "rmse": math.sqrt(mse), "mae": mae, "r2": r2}


def _r2(y: np.ndarray, err: np.ndarray) -> float:
    """Uniform mean over the columns of ``1 - sum(err**2) / sum((y - mean(y))**2)``."""
    if y.shape[0] < 2:
        return math.nan
    ss_res = np.sum(err * err, axis=0)
    ss_tot = np.sum((y - y.mean(axis=0)) ** 2, axis=0)
    # a constant column has SS_tot = 0 exactly, even where its rounded mean differs from its value
    # (scikit-learn would divide by that rounding: y = [0.1, 0.1, 0.1] scores about -1.7e27 there)
    ss_tot[(y == y[0]).all(axis=0)] = 0.0
    # scikit-learn's force_finite rule: a constant column scores 1 when predicted exactly, else 0;
    # a perfect prediction scores 1 whatever SS_tot is
    scores = np.ones(y.shape[1])
    fit = (ss_res != 0) & (ss_tot != 0)
    scores[fit] = 1.0 - ss_res[fit] / ss_tot[fit]
    scores[(ss_res != 0) & (ss_tot == 0)] = 0.0
    return float(np.mean(scores))
