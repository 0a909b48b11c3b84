"""E3: the model-object form of E1, ``Dense(1, use_bias=False)`` with kernel 2.

``model([[3.0]])`` is ``[[6.0]]``, and training it gives E1's trajectory again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List

import numpy as np

from . import e1
from ._base import Experiment, exact_list, one_weight

ID = "E3"
TITLE = "E1 with a model object: Dense(1, use_bias=False)"
SUMMARY = "E1 with a model object, Dense(1, use_bias=False)"


@dataclass(frozen=True)
class E3Facts(e1.E1Facts):
    """E1's facts, and what the untrained model gives for x = 3."""

    call_3: List[List[float]]


def run(dtype: str = "float32") -> Experiment[E3Facts]:
    """The model-object form of E1: ``Dense(1, use_bias=False)`` with kernel 2."""
    out = one_weight(2.0, dtype)(np.array([[3.0]]))
    ex = e1.run(dtype)
    return Experiment(ID, TITLE, E3Facts(**vars(ex.facts), call_3=out.tolist()), results=ex.results,
                      data=ex.data, models=ex.models)


def tell(ex: Experiment[E3Facts]) -> List[str]:
    """The model's call, then E1's numbers again."""
    f = ex.facts
    return [
        "model = Dense(1, use_bias=False) with kernel [[2.0]]:",
        f"model([[3.0]]) = {f.call_3}  (the walkthrough: 6.0)",
        f"trained as in E1: weights {exact_list(f.weights)}, losses {exact_list(f.losses)}, "
        f"final loss {f.final_loss!r}",
    ]


figure = e1.figure  # E1's figure: the same run
