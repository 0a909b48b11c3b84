"""fastgrad: hand-derived Dense/MSE kernels in C++, training loops that record every step,
and TensorFlow as an optional oracle.

    import fastgrad as fg
    model = fg.Sequential([fg.Dense(10, "relu"), fg.Dense(1)], seed=0)
    loss, grads = fg.value_and_grad(model, x, y)
    result = fg.fit(model, x, y, optimizer=fg.SGD(0.1), stop=[fg.stop.LossBelow(1e-4)])
"""

import types

import numpy as _np  # noqa: F401  (loads NumPy's OpenBLAS, which _core then shares)

from . import _blas, _core, ops, schedules, stop
from ._core import __version__

_blas.select()
from .data import minmax
from .gradients import value_and_grad
from .io import load
from .keras_io import from_keras
from .layers import Dense, Sequential
from .metrics import evaluate
from .optimizers import SGD, Adam
from .results import DivergenceError, DivergenceWarning, FitResult, History
from .training import fit

__all__ = [
    "Dense",
    "Sequential",
    "value_and_grad",
    "fit",
    "SGD",
    "Adam",
    "schedules",
    "FitResult",
    "History",
    "DivergenceWarning",
    "DivergenceError",
    "minmax",
    "evaluate",
    "load",
    "from_keras",
    "ops",
    "stop",
    "oracle",
    "__version__",
]


def __getattr__(name: str) -> types.ModuleType:
    # the oracle imports TensorFlow lazily: importing fastgrad never does
    if name == "oracle":
        import importlib

        return importlib.import_module(".oracle", __name__)
    raise AttributeError(f"module 'fastgrad' has no attribute {name!r}")
