"""The model file ``train --save`` writes and ``predict`` reads: a :func:`fastgrad.io.save` file
(``fastgrad.load`` reads it) whose extra entries hold what the command knows beyond the model:

    features   the feature columns, in the order the model takes them
    targets    the target column(s), one per output
    normalize  "minmax" or "none"
    x_min, x_max, y_min, y_max   (minmax only) float64, one per feature / target: the ranges the
               training rows were scaled by, which ``predict`` applies to its data and undoes on
               its predictions
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from .. import io as fgio
from .common import CliError, checked_name, shown

__all__ = ["Scaling", "Saved", "write_model", "read_model"]


@dataclasses.dataclass
class Scaling:
    """--normalize minmax: the range of each feature and target on the training rows."""

    x_min: np.ndarray
    x_max: np.ndarray
    y_min: np.ndarray
    y_max: np.ndarray

    def x(self, x: np.ndarray) -> np.ndarray:
        """Features (rows, features) scaled as the training rows were: (x - min) / (max - min)."""
        return (x - self.x_min) / (self.x_max - self.x_min)

    def y(self, y: np.ndarray) -> np.ndarray:
        """Targets, (rows,) for one or (rows, targets), scaled as at training."""
        return (y - self.y_min) / (self.y_max - self.y_min)

    def y_span(self) -> np.ndarray:
        """max - min of each target: a scaled error times this is the error in the target's units."""
        return self.y_max - self.y_min

    def unscaled(self, pred: np.ndarray) -> np.ndarray:
        """Predictions (rows, targets) back in the targets' units, in float64."""
        return pred.astype(np.float64) * (self.y_max - self.y_min) + self.y_min


@dataclasses.dataclass
class Saved:
    """What ``train --save`` kept beside the model."""

    features: List[str]
    targets: List[str]
    scaling: Optional[Scaling]


def write_model(path: Path, model: Any, features: List[str], targets: List[str], scaling: Optional[Scaling]) -> None:
    """--save: the model and the columns and scaling that ``predict`` needs (OSError when the file
    cannot be written)."""
    extra: Dict[str, Any] = {"features": list(features), "targets": list(targets),
                             "normalize": "none" if scaling is None else "minmax"}
    if scaling is not None:
        extra.update((k, np.asarray(v, dtype=np.float64)) for k, v in dataclasses.asdict(scaling).items())
    fgio.save(model, path, extra=extra)


def read_model(path: Path) -> Tuple[Any, Saved]:
    """The model in ``path`` and what ``train --save`` kept with it; CliError naming the file for a
    missing, foreign or damaged file, or a model file that ``train --save`` did not write."""
    name = shown(path)
    checked_name(str(path))
    try:
        if not path.exists():
            raise CliError(f"{name}: no such file")
        if path.is_dir():
            raise CliError(f"{name}: is a directory, expected a model file (.npz) written by 'fastgrad train --save'")
        model = fgio.load(path)
        extra = fgio.read_extra(path)
    except OSError as e:
        raise CliError(f"{name}: cannot read: {e.strerror or e}") from None
    except ValueError as e:  # the message names the file already
        raise CliError(str(e)) from None
    features, targets = extra.get("features"), extra.get("targets")
    if not (_strings(features) and _strings(targets)):
        raise CliError(f"{name}: a model without the column names that 'fastgrad train --save' keeps with it "
                       "(saved by model.save?); predict needs them to find its features in the data")
    width, units = model.input_dim, model.units
    if len(features) != width or len(targets) != units:
        raise CliError(f"{name}: its {len(features)} feature and {len(targets)} target name(s) do not fit the "
                       f"model, which takes {width} input(s) and gives {units} output(s)")
    scaling = None
    if extra.get("normalize") == "minmax":
        arrays = {k: extra.get(k) for k in ("x_min", "x_max", "y_min", "y_max")}
        sizes = {"x_min": width, "x_max": width, "y_min": units, "y_max": units}
        for k, a in arrays.items():
            if not (isinstance(a, np.ndarray) and a.dtype.kind == "f" and a.shape == (sizes[k],)
                    and np.isfinite(a).all()):
                raise CliError(f"{name}: its minmax scaling is damaged: {k!r} is missing or not {sizes[k]} "
                               "finite number(s)")
        scaling = Scaling(**{k: a.astype(np.float64) for k, a in arrays.items()})
    elif extra.get("normalize") != "none":
        raise CliError(f"{name}: its 'normalize' entry is {extra.get('normalize')!r}, expected 'none' or 'minmax'")
    return model, Saved(list(features), list(targets), scaling)


def _strings(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value)
