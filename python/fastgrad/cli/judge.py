"""What ``train``'s summary says of a run: the loss and R2 on the training and validation rows in the
target's own units (whatever --normalize did), and, in plain words, when the model is no better than
predicting the mean or the loss ended far above where it started, with what to try."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, List, Optional, Tuple

import numpy as np

import fastgrad as fg

from ..metrics import evaluate
from .common import Spec, g
from .modelfile import Scaling

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    from ..results import FitResult

__all__ = ["MEAN_R2", "BLOWUP_FACTOR", "Scores", "Verdict", "judge"]

#: below this R2 on the training rows the model is "no better than predicting the mean": a net that
#: learned only the mean scores about 0, and a useful fit scores well above this
MEAN_R2 = 0.05
#: a final training loss above this many times the loss at the initial weights "ended far above
#: where it started": the steps overshot, though nothing became inf or NaN
BLOWUP_FACTOR = 10.0

Data = Tuple[np.ndarray, np.ndarray]


@dataclasses.dataclass
class Scores:
    """A model's MSE (in the target's units) and R2 on some rows."""

    mse: float
    r2: float
    rows: int


@dataclasses.dataclass
class Verdict:
    """The numbers the summary gives and judges by, all in the target's units."""

    train: Scores
    initial_mse: float  # on the training rows, at the initial weights
    variance: float  # of the target on the training rows: the MSE of predicting their mean
    val: Optional[Scores] = None
    val_lowest: Optional[Tuple[float, int, bool]] = None  # the lowest validation loss, its step, whether the last

    def lines(self, target: str) -> List[str]:
        """The summary's lines of losses and R2."""
        lines = [f"final loss:  {g(self.train.mse, 6)}   (MSE on the {self.train.rows} training rows, in the units "
                 f"of {target!r}; {g(self.initial_mse, 6)} at the initial weights)",
                 f"R2:          {_r2(self.train.r2)}   (on the training rows: 1 is a perfect fit, 0 no better than "
                 "predicting the mean)"]
        if self.val is not None:
            where = f"MSE on the {self.val.rows} validation rows"
            if self.val_lowest is not None:
                lowest, step, last = self.val_lowest
                where += ", the lowest of the run" if last else f"; the lowest, {g(lowest, 6)}, after step {step}"
            lines += [f"val loss:    {g(self.val.mse, 6)}   ({where})", f"val R2:      {_r2(self.val.r2)}"]
        return lines

    def notes(self, target: str, scaled: bool, stopped_by: str) -> List[str]:
        """What the numbers say, each with what to try; none for a run that diverged (its warning says it)."""
        if stopped_by == "diverged":
            return []
        scale = "" if scaled else "scaling the data with --normalize minmax, "
        if self.initial_mse > 0 and self.train.mse > BLOWUP_FACTOR * self.initial_mse:
            return [f"the loss ended far above where it started: {g(self.train.mse, 4)} on the training rows against "
                    f"{g(self.initial_mse, 4)} at the initial weights (more than {BLOWUP_FACTOR:g}x): the steps "
                    "overshoot.  Try a smaller --lr"
                    + ("." if scaled else ", or --normalize minmax to scale the data.")]
        if self.variance > 0 and self.train.r2 < MEAN_R2:
            return [f"the model is no better than predicting the mean: R2 {_r2(self.train.r2)} on the training rows "
                    f"(below {MEAN_R2:g}); predicting the mean of {target!r} everywhere scores a loss of "
                    f"{g(self.variance, 6)}.  Try {scale}another --lr (smaller if the loss jumps about, larger if "
                    "it creeps), or more steps (--stop max-steps=N)."]
        if self.val is not None and self.val.r2 < MEAN_R2:
            return [f"on the validation rows the model is no better than predicting the mean: R2 {_r2(self.val.r2)} "
                    f"(below {MEAN_R2:g}) against {_r2(self.train.r2)} on the training rows, so what it learned "
                    "does not carry over to new rows.  Try fewer units, fewer steps (--stop plateau=TOL:PATIENCE), "
                    "or more rows."]
        return []


def _r2(v: float) -> str:
    """R2 to 4 decimals, or in 4 digits when it is far below 0 (a model gone far off)."""
    return f"{v:.4f}" if abs(v) < 1e4 else g(v, 4)


def judge(model: fg.Sequential, result: "FitResult", spec: Spec, train: Data, val: Optional[Data],
          scaling: Optional[Scaling]) -> Verdict:
    """The verdict on ``model`` after ``result``: ``train`` and ``val`` are the rows as fit took them
    (scaled by ``scaling`` when --normalize minmax); the losses are given in the target's units."""
    span = 1.0 if scaling is None else float(scaling.y_span()[0])
    # minmax scales the target by span: errors in its units are span times the scaled ones, so
    # the MSE is span**2 times, and R2 (a ratio of squared errors) is the same
    to_units = span * span
    start = fg.Sequential([fg.Dense(u, a, dtype=model.dtype.name) for u, a in spec])
    start.build(train[0].shape[1])
    start.set_weights(result.initial_weights)
    verdict = Verdict(
        train=_scores(model, train, to_units),
        initial_mse=evaluate(start, *train)["mse"] * to_units,
        variance=float(np.var(train[1].astype(np.float64))) * to_units,
    )
    if val is not None:
        verdict.val = _scores(model, val, to_units)
        history = result.history
        losses = history.val_loss
        if losses is not None and len(losses):
            i = len(losses) - 1 if np.isnan(losses).all() else int(np.nanargmin(losses))
            verdict.val_lowest = (float(losses[i]) * to_units, int(history.val_steps[i]), i == len(losses) - 1)
    return verdict


def _scores(model: fg.Sequential, data: Data, to_units: float) -> Scores:
    with np.errstate(over="ignore", invalid="ignore"):  # a diverged model's inf / NaN
        m = evaluate(model, *data)
        return Scores(mse=m["mse"] * to_units, r2=m["r2"], rows=len(data[1]))
