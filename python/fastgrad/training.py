"""Training loops that record every step: full-batch gradient descent, SGD and minibatches.

One step (the walkthrough's order):
    draw the batch -> forward -> loss -> backward -> update -> test the stopping rules

The step itself is one call into the compiled core (``Net.step``: the same kernels as
``fastgrad.ops``, chained as in ``fastgrad.value_and_grad``), so this loop and any other loop
that runs the same step on the same batch indices produce the same trajectory, bit for bit.
Batch indices are drawn with NumPy from ``seed`` (see :class:`BatchStream`), which is what lets
``fastgrad.oracle.replay`` run the same batches in TensorFlow.
"""

from __future__ import annotations

import signal
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional, Sequence, Tuple

import numpy as np

from . import _core
from . import stop as _stop
from ._validation import positive_float, positive_int
from .gradients import prepare
from .layers import layers_of

__all__ = [
    "SGD",
    "fit",
    "FitResult",
    "History",
    "BatchStream",
    "DivergenceWarning",
    "DivergenceError",
    "DEFAULT_MAX_STEPS",
]

#: the step cap added when no MaxSteps rule is given
DEFAULT_MAX_STEPS = 10_000

SAMPLINGS = ("random", "shuffle")


class DivergenceWarning(RuntimeWarning):
    """A run stopped because its loss, a gradient or a weight became NaN or infinite."""


class DivergenceError(ArithmeticError):
    """Raised by ``fit(..., on_divergence="raise")``; ``.result`` holds the partial run."""

    def __init__(self, message: str, result: "FitResult") -> None:
        super().__init__(message)
        self.result = result


class SGD:
    """Plain stochastic gradient descent: ``w <- w - learning_rate * grad``."""

    def __init__(self, learning_rate: float = 0.01) -> None:
        self.learning_rate = positive_float("learning_rate", learning_rate)

    def __repr__(self) -> str:
        return f"SGD(learning_rate={self.learning_rate!r})"


@dataclass
class History:
    """What happened at every step.

    loss : (steps,) the loss of step t's batch, before step t's update.
    grad_norm : (steps,) the global L2 norm of step t's gradient.
    batches : (steps, batch) the sample indices step t used; None for full batch.
    weights : one array per parameter (get_weights() order), (recorded, *shape); row 0 is
        the initial weights; None when weights were not recorded.
    weight_steps : (recorded,) the step after which each row of ``weights`` was taken.
    """

    loss: np.ndarray
    grad_norm: np.ndarray
    batches: Optional[np.ndarray]
    weights: Optional[List[np.ndarray]] = None
    weight_steps: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return len(self.loss)


@dataclass
class FitResult:
    """The outcome of :func:`fit`.

    stopped_by : "weight_delta" | "loss_delta" | "loss_below" | "plateau" | "max_steps" |
        "diverged" | "interrupted" | the name of a custom rule.
    steps : the number of updates made.
    final_loss : MSE on all of (x, y) at the final weights.
    history : a :class:`History`.
    divergence : the divergence message, when ``stopped_by == "diverged"``.
    """

    stopped_by: str
    steps: int
    final_loss: float
    history: History
    seed: int
    learning_rate: float
    batch_size: Optional[int]
    sampling: str
    dtype: str
    initial_weights: List[np.ndarray] = field(repr=False)
    model_spec: List[Tuple[str, bool]] = field(repr=False)
    divergence: Optional[str] = None
    seconds: float = 0.0
    loop: str = "python"


class BatchStream:
    """The batch indices of a run, drawn with NumPy's ``default_rng(seed)``, in chunks.

    ``sampling="random"``: every step draws ``batch_size`` distinct indices anew (Floyd's
    algorithm, vectorised over a chunk of steps).  ``"shuffle"``: each epoch is a fresh
    permutation cut into ``n // batch_size`` batches (a remainder of fewer than ``batch_size``
    samples is left out of that epoch; it differs from epoch to epoch).

    Every consumer that draws chunks in order sees the same stream, so loops agree.
    """

    def __init__(self, n: int, batch_size: int, sampling: str, seed: int) -> None:
        self.n, self.k, self.sampling = n, batch_size, sampling
        self.rng = np.random.default_rng(seed)
        self.chunk_steps = max(1, 8192 // batch_size)

    def next_chunk(self) -> np.ndarray:
        """The next (steps, batch_size) int64 block of indices."""
        n, k, rng = self.n, self.k, self.rng
        if self.sampling == "shuffle":
            perm = rng.permutation(n)
            return np.ascontiguousarray(perm[: (n // k) * k].reshape(-1, k), dtype=np.int64)
        s = self.chunk_steps
        out = np.empty((s, k), dtype=np.int64)
        # Floyd: for j = n-k .. n-1, draw t in [0, j]; take t unless already taken, else take j
        for c, j in enumerate(range(n - k, n)):
            t = rng.integers(0, j + 1, size=s, dtype=np.int64)
            if c:
                taken = (out[:, :c] == t[:, None]).any(axis=1)
                t = np.where(taken, j, t)
            out[:, c] = t
        return out


def _param_names(layers) -> List[str]:
    names = []
    for i, layer in enumerate(layers):
        prefix = "" if len(layers) == 1 else f"layer {i} "
        names.append(prefix + "kernel")
        if layer.use_bias:
            names.append(prefix + "bias")
    return names


def _check_rules(stop) -> list:
    if stop is None:
        rules = []
    elif callable(stop) and not isinstance(stop, (list, tuple)):
        rules = [stop]
    elif isinstance(stop, (list, tuple)):
        rules = list(stop)
    else:
        raise TypeError(f"stop: expected a stopping rule or a list of them, got {type(stop).__name__}")
    for i, r in enumerate(rules):
        if not callable(r):
            raise TypeError(
                f"stop[{i}]: expected a stopping rule (fastgrad.stop.* or a callable taking a StepState), "
                f"got {type(r).__name__}"
            )
    if not any(isinstance(r, _stop.MaxSteps) for r in rules):
        rules.append(_stop.MaxSteps(DEFAULT_MAX_STEPS))
    return rules


def _check_record(record_weights) -> int:
    """0: no recording; k: every k steps (True means 1)."""
    if record_weights is False or record_weights is None:
        return 0
    if record_weights is True:
        return 1
    return positive_int("record_weights", record_weights)


def _check_seed(seed) -> int:
    if seed is None:
        return int(np.random.SeedSequence().generate_state(1, dtype=np.uint32)[0])
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise TypeError(f"seed: expected a non-negative int or None, got {seed!r}")
    return int(seed)


def fit(
    model,
    x,
    y,
    optimizer: Optional[SGD] = None,
    batch_size: Optional[int] = None,
    sampling: str = "random",
    stop=None,
    seed: Optional[int] = None,
    record_weights=False,
    on_divergence: str = "warn",
    callbacks: Sequence[Callable[[_stop.StepState], Any]] = (),
) -> FitResult:
    """Train ``model`` (a Sequential or a single Dense) on ``(x, y)`` under MSE, in place.

    Parameters
    ----------
    x, y : (samples, features) and (samples, outputs) or, for one output, (samples,).
        Converted to the model's dtype.  An unbuilt model is built from the width of ``x``.
    optimizer : ``SGD(learning_rate)``; default ``SGD(0.01)``.
    batch_size : None for full-batch gradient descent, or k samples a step.
    sampling : "random" (each step draws its batch anew, as the walkthrough does) or
        "shuffle" (epochs of a fresh permutation).
    stop : a rule or a list of rules from :mod:`fastgrad.stop`, or callables taking a
        :class:`~fastgrad.stop.StepState`; the first that fires stops the run.
        ``MaxSteps(10_000)`` is added when no MaxSteps is given.
    seed : seeds the batch draws (None: fresh entropy; ``result.seed`` tells which).
    record_weights : False, True (after every step) or k (every k steps, plus the last).
    on_divergence : "warn" (a :class:`DivergenceWarning`) or "raise" (a :class:`DivergenceError`)
        when the loss, a gradient or a weight becomes non-finite.  Either way the run stops.
    callbacks : callables ``cb(state)`` run after every step.

    Every argument is checked before anything changes.  Ctrl-C stops the run after the
    current step and returns the partial result with ``stopped_by="interrupted"``.
    """
    # ---- check everything first: a failed call changes nothing --------------------------
    layers = layers_of(model)
    if optimizer is None:
        optimizer = SGD()
    if not isinstance(optimizer, SGD):
        raise TypeError(f"optimizer: expected fastgrad.SGD, got {type(optimizer).__name__}")
    lr = optimizer.learning_rate
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling: expected one of {SAMPLINGS}, got {sampling!r}")
    batch_size = positive_int("batch_size", batch_size, allow_none=True)
    rules = _check_rules(stop)
    every = _check_record(record_weights)
    seed = _check_seed(seed)
    if on_divergence not in ("warn", "raise"):
        raise ValueError(f"on_divergence: expected 'warn' or 'raise', got {on_divergence!r}")
    callbacks = list(callbacks)
    for i, cb in enumerate(callbacks):
        if not callable(cb):
            raise TypeError(f"callbacks[{i}]: expected a callable taking a StepState, got {type(cb).__name__}")
    layers, x, y = prepare(model, x, y)  # validates x, y; builds an unbuilt model
    n = x.shape[0]
    if batch_size is not None and batch_size > n:
        raise ValueError(f"batch_size: expected at most the {n} samples of x, got {batch_size}")

    params = [w for layer in layers for w in layer._params()]
    initial = [w.copy() for w in params]
    dtype = layers[0].dtype
    rows = n if batch_size is None else batch_size
    Net = _core.NetF32 if dtype == np.float32 else _core.NetF64
    net = Net(params, [lay.use_bias for lay in layers], [lay._act for lay in layers], rows, batch_size is not None)
    stream = None if batch_size is None else BatchStream(n, batch_size, sampling, seed)

    for r in rules:
        if hasattr(r, "reset"):
            r.reset()
    names = _param_names(layers)
    start = time.perf_counter()
    stopped_by, divergence, run = _python_loop(net, x, y, stream, lr, rules, callbacks, every, params, names, model)
    seconds = time.perf_counter() - start

    steps = run["steps"]
    hist = History(
        loss=np.asarray(run["loss"][:steps], dtype=np.float64),
        grad_norm=np.asarray(run["grad_norm"][:steps], dtype=np.float64),
        batches=None if stream is None else _stack_batches(run["chunks"], steps, batch_size),
    )
    if every:
        w_steps = run["w_steps"]
        if w_steps[-1] != steps:  # the final weights are always recorded
            run["w_rows"].append([w.copy() for w in params])
            w_steps.append(steps)
        hist.weights = [np.stack([row[p] for row in run["w_rows"]]) for p in range(len(params))]
        hist.weight_steps = np.asarray(w_steps)
    with np.errstate(all="ignore"):
        final = _full_loss(layers, x, y)
    result = FitResult(
        stopped_by=stopped_by,
        steps=steps,
        final_loss=final,
        history=hist,
        seed=seed,
        learning_rate=lr,
        batch_size=batch_size,
        sampling=sampling,
        dtype=dtype.name,
        initial_weights=initial,
        model_spec=[(lay.activation, lay.use_bias) for lay in layers],
        divergence=divergence,
        seconds=seconds,
    )
    if divergence is not None:
        if on_divergence == "raise":
            raise DivergenceError(divergence, result)
        warnings.warn(divergence, DivergenceWarning, stacklevel=2)
    return result


def _full_loss(layers, x, y) -> float:
    a = x
    for layer in layers:
        a = _core.dense_forward(a, layer.kernel, layer.bias, layer._act, False)
    return float(_core.mse(a, y))


def _stack_batches(chunks: List[np.ndarray], steps: int, k: int) -> np.ndarray:
    if not chunks:
        return np.empty((0, k), dtype=np.int64)
    return np.concatenate(chunks)[:steps].copy()


class _SigintFlag:
    """Turns Ctrl-C into a flag read between steps (main thread only; elsewhere a no-op)."""

    def __init__(self) -> None:
        self.hit = False
        self._old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            try:
                self._old = signal.signal(signal.SIGINT, self._handler)
            except ValueError:  # pragma: no cover - e.g. an embedded interpreter
                self._old = None
        return self

    def _handler(self, signum, frame) -> None:
        self.hit = True

    def __exit__(self, *exc) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def _divergence_message(step, loss, grad_norm, bad_grad, bad_weight, names) -> Optional[str]:
    if np.isfinite(loss) and bad_grad < 0 and bad_weight < 0:
        return None
    if not np.isfinite(loss):
        where = f"the loss became {loss}"
    elif bad_grad >= 0:
        where = f"the gradient of {names[bad_grad]} became non-finite (gradient norm {grad_norm:.4g})"
    else:
        where = f"{names[bad_weight]} became non-finite after the update"
    return (
        f"training diverged at step {step}: {where}; the run stopped there. "
        "Try a smaller learning rate or scaled data (fastgrad.minmax)."
    )


def _python_loop(net, x, y, stream, lr, rules, callbacks, every, params, names, model):
    """The reference loop.  Returns (stopped_by, divergence message or None, records)."""
    run = {"steps": 0, "loss": [], "grad_norm": [], "chunks": [], "w_rows": [], "w_steps": []}
    if every:
        run["w_rows"].append([w.copy() for w in params])
        run["w_steps"].append(0)
    losses, norms = run["loss"], run["grad_norm"]
    chunk, ci = None, 0
    prev_loss = None
    stopped_by, divergence = None, None
    step_fn = net.step
    with _SigintFlag() as sigint:
        while True:
            if sigint.hit:
                stopped_by = "interrupted"
                break
            # 1. draw the batch
            if stream is None:
                idx = None
            else:
                if chunk is None or ci == len(chunk):
                    chunk, ci = stream.next_chunk(), 0
                    run["chunks"].append(chunk)
                idx = chunk[ci]
                ci += 1
            # 2-5. forward, loss, backward, update (one compiled step)
            loss, gnorm, delta, bad_g, bad_w = step_fn(x, y, idx, lr)
            losses.append(loss)
            norms.append(gnorm)
            run["steps"] = t = len(losses)
            if every and t % every == 0:
                run["w_rows"].append([w.copy() for w in params])
                run["w_steps"].append(t)
            # 6. divergence, then the stopping rules
            divergence = _divergence_message(t, loss, gnorm, bad_g, bad_w, names)
            if divergence is not None:
                stopped_by = "diverged"
                break
            state = _stop.StepState(t, loss, prev_loss, gnorm, delta, model)
            for cb in callbacks:
                cb(state)
            for r in rules:
                if r(state):
                    stopped_by = _stop.rule_name(r)
                    break
            if stopped_by is not None:
                break
            prev_loss = loss
    if stream is not None and run["chunks"]:
        # trim the last chunk to what was used (keeps the concatenation small)
        used = run["steps"] - sum(len(c) for c in run["chunks"][:-1])
        run["chunks"][-1] = run["chunks"][-1][:used]
    return stopped_by, divergence, run
