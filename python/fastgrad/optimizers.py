"""Optimizers: the update rule a run applies to each parameter after its gradient.

SGD is the rule the walkthrough uses and the one both loops run (``w <- w - learning_rate *
grad``, csrc's ``sgd_update``).  Keras's other rules (momentum, Adam, ...) come as further
subclasses of :class:`Optimizer`.
"""

from __future__ import annotations

from ._validation import positive_float

__all__ = ["Optimizer", "SGD"]


class Optimizer:
    """Base of the optimizers: a positive, finite learning rate.

    ``fit`` checks ``learning_rate`` again when a run starts (it may have been changed since).
    """

    def __init__(self, learning_rate: float) -> None:
        self.learning_rate = positive_float("learning_rate", learning_rate)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(learning_rate={self.learning_rate!r})"


class SGD(Optimizer):
    """Plain stochastic gradient descent: ``w <- w - learning_rate * grad``."""

    def __init__(self, learning_rate: float = 0.01) -> None:
        super().__init__(learning_rate)
