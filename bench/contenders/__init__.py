"""The contenders of bench/compare.py, one module per peer, in the order the table lists them.

Every contender trains the same workload (data, initial weights, batch indices) and records the
loss of every step; ``base`` says what each one provides.  A peer that is not installed is skipped.
"""

from __future__ import annotations

from typing import Callable, List

from contenders.base import Contender, Runner, segment_bounds
from contenders.fastgrad_fit import Fastgrad, FastgradRunner, FastgradSGD
from contenders.jax_loops import JaxJit, JaxScan
from contenders.numpy_loop import Numpy
from contenders.tf_loops import TFEager, TFFunction
from contenders.torch_loop import Torch
from contenders.yardstick import Yardstick

CONTENDERS: List[Callable[[], Contender]] = [
    Fastgrad, FastgradSGD, Yardstick, Numpy, TFEager, TFFunction, Torch, JaxJit, JaxScan,
]

__all__ = ["CONTENDERS", "Contender", "FastgradRunner", "Runner", "segment_bounds"]
