"""Training loops that record every step: full-batch gradient descent, SGD and minibatches.

One step (the walkthrough's order):
    draw the batch -> forward -> loss -> backward -> update -> test the stopping rules

Two loops run it.  The native loop (``Net.fit_run``, C++) runs the whole run without returning
to Python; the Python loop calls the compiled step (``Net.step``) once per step, for custom rules
and callbacks.  Both run the same arithmetic as ``fastgrad.value_and_grad`` + ``sgd_update`` on
the same batch indices, so they give the same trajectory, bit for bit.  Batch indices are drawn
in C++ from ``seed`` (see :class:`BatchStream`) and recorded, which is what lets
``fastgrad.oracle.replay`` run the same batches in TensorFlow.
"""

from __future__ import annotations

import _signal
import threading
import time
import warnings
from dataclasses import dataclass, field
from math import gcd, isfinite
from typing import Any, Callable, List, Optional, Sequence, Tuple

import numpy as np

from . import _core
from . import stop as _stop
from ._validation import nonneg_float, nonneg_seed, positive_float, positive_int
from .gradients import prepare
from .layers import layers_of, mark, unmark
from .ops import ACTIVATIONS

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
#: the most samples BatchStream draws from (a shuffle keeps a permutation of all of them)
MAX_SAMPLES = 2**48
_SIGINT = int(_signal.SIGINT)
_DEFAULT_SIGINT = _signal.default_int_handler


class DivergenceWarning(RuntimeWarning):
    """A run stopped because its loss, a gradient or a weight became NaN or infinite."""


class DivergenceError(ArithmeticError):
    """Raised by ``fit(..., on_divergence="raise")``; ``.result`` holds the partial run."""

    def __init__(self, message: str, result: "FitResult") -> None:
        super().__init__(message)
        self.result = result

    def __reduce__(self):  # both arguments, so that it pickles (multiprocessing sends it back)
        return (type(self), (str(self), self.result))


class SGD:
    """Plain stochastic gradient descent: ``w <- w - learning_rate * grad``."""

    def __init__(self, learning_rate: float = 0.01) -> None:
        self.learning_rate = positive_float("learning_rate", learning_rate)

    def __repr__(self) -> str:
        return f"SGD(learning_rate={self.learning_rate!r})"


@dataclass(eq=False)  # compared by identity: its fields are arrays
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

    def to_dataframe(self):
        """One row per step: loss, grad_norm, the batch indices (minibatch runs) and each recorded
        weight element after the step; needs pandas (see fastgrad.plotting.history_to_dataframe)."""
        from .plotting import history_to_dataframe

        return history_to_dataframe(self)


@dataclass(eq=False)  # compared by identity: its fields are arrays
class FitResult:
    """The outcome of :func:`fit`.

    stopped_by : "weight_delta" | "loss_delta" | "loss_below" | "plateau" | "max_steps" |
        "diverged" | "interrupted" | the name of a custom rule.
    steps : the number of updates made.
    final_loss : MSE on all of (x, y) at the final weights (computed on first access, from a
        copy of the final weights: a full pass over the data is paid only when asked for).
        Data of up to 4,096 elements (x and y together) is copied for it; larger data is kept
        by reference, so change it only after reading final_loss (a change to the 4,096
        elements of each array that are sampled, spread over every column, raises a
        RuntimeError; a change elsewhere is not seen).
    final_weights : copies of the weights the run ended with (get_weights() order).
    history : a :class:`History`.
    batch_size, sampling : the batches the run drew ("random" or "shuffle"); both None for a
        full-batch run.
    divergence : the divergence message, when ``stopped_by == "diverged"``.
    samples : the number of samples (rows of x) the run trained on.
    """

    stopped_by: str
    steps: int
    final_weights: List[np.ndarray] = field(repr=False)
    history: History
    seed: int
    learning_rate: float
    batch_size: Optional[int]
    sampling: Optional[str]
    dtype: str
    initial_weights: List[np.ndarray] = field(repr=False)
    model_spec: List[Tuple[str, bool]] = field(repr=False)
    divergence: Optional[str] = None
    seconds: float = 0.0
    loop: str = "python"
    samples: Optional[int] = None
    _data: Any = field(default=None, repr=False, compare=False)
    _final_loss: Optional[float] = field(default=None, repr=False, compare=False)

    @property
    def final_loss(self) -> float:
        if self._final_loss is None:
            x, y = _kept_data(self._data)
            self._final_loss = _loss_at(self.model_spec, self.final_weights, x, y)
            self._data = None  # the data is no longer held once the loss is known
        return self._final_loss

    def _final_loss_or_none(self) -> Optional[float]:
        """final_loss, or None when it cannot be computed (the data changed since the run)."""
        try:
            return self.final_loss
        except RuntimeError:
            return None

    def __repr__(self) -> str:
        loss = self._final_loss_or_none()
        shown = "? (the data changed since the run)" if loss is None else repr(loss)
        return (f"FitResult(stopped_by={self.stopped_by!r}, steps={self.steps}, final_loss={shown}, "
                f"loop={self.loop!r}, seconds={self.seconds:.3g})")

    def plot(self, ax=None):
        """Loss, gradient norm (and weights, when recorded) per step, with matplotlib."""
        from .plotting import plot_result

        return plot_result(self, ax=ax)


# FitResult.final_loss needs the (x, y) the run trained on.  Small data (up to KEEP_COPY_ELEMENTS
# elements in x and y together, the walkthrough's sizes) is copied: later changes to the caller's
# arrays cannot reach the copy.  Larger data is kept by reference (a copy would cost memory and
# time on every run: a sweep keeps many results), with at most KEEP_SAMPLE elements of each array,
# spread over every column, to see a change.  The kept data: a tuple (x, y, sample or None).
KEEP_COPY_ELEMENTS = 4096
KEEP_SAMPLE = 4096


def _keep_data(x: np.ndarray, y: np.ndarray) -> tuple:
    if x.size + y.size <= KEEP_COPY_ELEMENTS:
        return x.copy(), y.copy(), None
    return x, y, _data_sample(x, y)


def _sample_stride(size: int, width: int) -> int:
    """A stride that takes at most KEEP_SAMPLE elements of ``size`` and visits every one of the
    ``width`` columns (a stride sharing a factor with the width would skip some)."""
    stride = max(1, -(-size // KEEP_SAMPLE))
    while stride > 1 and gcd(stride, width) != 1:
        stride += 1
    return stride


def _data_sample(x: np.ndarray, y: np.ndarray) -> Tuple[bytes, bytes]:
    out = []
    for a in (x, y):
        flat = a.reshape(-1)  # a view: fit's arrays are C-contiguous
        out.append(flat[:: _sample_stride(flat.size, a.shape[-1])].tobytes())
    return out[0], out[1]


def _kept_data(kept: tuple) -> Tuple[np.ndarray, np.ndarray]:
    x, y, sample = kept if len(kept) == 3 else (*kept, None)  # (x, y): a result pickled before samples
    if sample is not None and _data_sample(x, y) != sample:
        raise RuntimeError(
            "final_loss: x or y changed after fit returned (data of more than "
            f"{KEEP_COPY_ELEMENTS} elements is not copied); read final_loss before changing them, "
            "or compute the loss with fastgrad.value_and_grad"
        )
    return x, y


class BatchStream:
    """The batch indices of a run, drawn from ``seed``.

    The draws are made in C++ (``csrc/sampler.hpp``): a xoshiro256** generator whose state is
    NumPy's ``SeedSequence(seed)``, exact bounded integers, and

    * ``sampling="random"``: every step draws ``batch_size`` distinct indices anew (Floyd's
      algorithm, or a partial Fisher-Yates shuffle for batches over 64);
    * ``"shuffle"``: each epoch is a fresh permutation cut into ``n // batch_size`` batches (a
      remainder of fewer than ``batch_size`` samples is left out of that epoch; it differs from
      epoch to epoch).

    Both loops draw from it in the same order, so a seed gives the same batches to both, and
    every run records its batches (``history.batches``) for replays.
    """

    #: chunk sizes (in steps) handed to the Python loop: they start small, so a short run draws
    #: little, and double up to MAX_CHUNK_STEPS.  The stream does not depend on them.
    FIRST_CHUNK_STEPS = 64
    MAX_CHUNK_STEPS = 8192

    def __init__(self, n: int, batch_size: int, sampling: str, seed: int) -> None:
        n = positive_int("n", n)
        if n > MAX_SAMPLES:
            raise ValueError(f"n: expected at most 2**48 samples, got {n}")
        batch_size = positive_int("batch_size", batch_size)
        if batch_size > n:
            raise ValueError(f"batch_size: expected at most n = {n}, got {batch_size}")
        _check_sampling(sampling)
        seed = nonneg_seed("seed", seed, allow_none=False)
        self.n, self.k, self.sampling = n, batch_size, sampling
        self.sampler = _sampler(n, batch_size, sampling, seed)
        self._cap = max(1, self.MAX_CHUNK_STEPS // batch_size)
        self._next = min(self.FIRST_CHUNK_STEPS, self._cap)

    def next_chunk(self) -> np.ndarray:
        """The next (steps, batch_size) int64 block of indices."""
        s = self._next
        self._next = min(2 * s, self._cap)
        out = np.empty((s, self.k), dtype=np.int64)
        self.sampler.fill(out)
        return out


def _sampler(n: int, k: int, sampling: str, seed: int):
    """The C++ sampler of a run: its generator starts at NumPy's ``SeedSequence(seed)`` state."""
    if seed < 2**64:  # the state computed in C++ (NumPy's SeedSequence costs 20 µs)
        return _core.Sampler.from_seed(seed, n, k, sampling == "shuffle")
    state = np.random.SeedSequence(seed).generate_state(4, dtype=np.uint64)
    return _core.Sampler(state, n, k, sampling == "shuffle")


# The compiled Net of a small model is kept between fit calls (its set-up is a few µs of a short
# run), on the model's first layer (``Dense._fit_net``, which copies and pickles leave out).  It
# is taken off the layer while a fit uses it, so two threads never share one.  After set_weights
# (new parameter arrays of the same shapes) it is pointed at the new arrays; it is rebuilt when
# the model's structure or the batch is not the one it was built for.
NET_CACHE_MAX_SCRATCH = 1 << 16  # elements of scratch (activations, gradients, gathered rows)


def _net_for(layers, params, rows: int, gather: bool):
    """(structure, parameter ids, Net, keep): the cached entry when it still fits, else a new one."""
    structure = (rows, gather, layers[0].dtype, layers[0].kernel.shape[0],
                 *[(lay._act, lay.use_bias, lay.units) for lay in layers])
    # the ids name the parameter arrays: the Net holds them, so no id is reused meanwhile
    ids = tuple(map(id, params))
    entry = layers[0].__dict__.pop("_fit_net", None)
    if entry is not None and entry[0] == structure:
        if entry[1] == ids:
            return entry
        entry[2].rebind(params)  # the same shapes (the structure says so): new arrays, same buffers
        return structure, ids, entry[2], entry[3]
    Net = _core.NetF32 if layers[0].dtype == np.float32 else _core.NetF64
    net = Net(params, [lay.use_bias for lay in layers], [lay._act for lay in layers], rows, gather)
    scratch = rows * (2 * sum(lay.units for lay in layers) + layers[0].input_dim + layers[-1].units)
    return structure, ids, net, scratch <= NET_CACHE_MAX_SCRATCH


def _keep_net(layers, entry) -> None:
    """Keep the Net for the next fit of these layers, if its scratch is small."""
    if entry[3]:
        layers[0]._fit_net = entry


def _param_fields(layers) -> List[Tuple[int, Any, str]]:
    """(layer index, layer, "kernel" | "bias") for every parameter, in get_weights() order."""
    return [(i, layer, name) for i, layer in enumerate(layers)
            for name in (("kernel", "bias") if layer.use_bias else ("kernel",))]


def _param_names(layers) -> List[str]:
    one = len(layers) == 1
    return [(name if one else f"layer {i} {name}") for i, _, name in _param_fields(layers)]


def _check_rules(stop) -> list:
    if stop is None:
        rules = []
    elif callable(stop) and not isinstance(stop, (list, tuple)):
        rules = [stop]
    elif isinstance(stop, (list, tuple)):
        rules = list(stop)
    else:
        raise TypeError(f"stop: expected a stopping rule or a list of them, got {type(stop).__name__}")
    capped = False
    for i, r in enumerate(rules):
        if isinstance(r, type):
            raise TypeError(f"stop[{i}]: expected a rule, got the class {r.__name__}; make one, e.g. {r.__name__}(...)")
        if not callable(r):
            raise TypeError(
                f"stop[{i}]: expected a stopping rule (fastgrad.stop.* or a callable taking a StepState), "
                f"got {type(r).__name__}"
            )
        if type(r) in _NATIVE_KINDS:  # checked again: its attributes may have changed since it was made
            _check_rule_values(i, r)
        capped = capped or isinstance(r, _stop.MaxSteps)
    if not capped:
        rules.append(_stop.MaxSteps(DEFAULT_MAX_STEPS))
    return rules


def _check_lr_in(lr: float, dtype: np.dtype) -> None:
    """The learning rate (finite, > 0) must stay finite and non-zero in the model's dtype."""
    if dtype == np.float64 or 1e-44 <= lr <= 3e38:  # float32 holds these (the common case: no NumPy call)
        return
    with np.errstate(over="ignore"):
        t = dtype.type(lr)
    if t == 0 or not np.isfinite(t):
        raise ValueError(f"learning_rate: {lr!r} is {'0' if t == 0 else 'inf'} in {dtype.name}, the model's dtype")


def _check_rule_values(i: int, r) -> None:
    """The values a built-in rule was made with, as its constructor checks them."""
    if type(r) is _stop.MaxSteps and type(r.n) is int and 0 < r.n <= _stop.MAX_COUNT:
        return  # the common rule, in one test (no argument names built: fit's fixed cost)
    if isinstance(r, _stop.MaxSteps):
        _stop.count(f"stop[{i}].n", r.n)
        return
    nonneg_float(f"stop[{i}].tol", r.tol)
    if isinstance(r, _stop.Plateau):
        _stop.count(f"stop[{i}].patience", r.patience)


def _check_record(record_weights) -> int:
    """0: no recording; k: every k steps (True means 1)."""
    if isinstance(record_weights, np.bool_):
        record_weights = bool(record_weights)
    if record_weights is False or record_weights is None:
        return 0
    if record_weights is True:
        return 1
    return positive_int("record_weights", record_weights)


def _check_sampling(sampling) -> None:
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling: expected one of {SAMPLINGS}, got {sampling!r}")


def _check_seed(seed) -> int:
    seed = nonneg_seed("seed", seed)
    if seed is None:
        return int(np.random.SeedSequence().generate_state(1, dtype=np.uint32)[0])
    return seed


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
    loop: str = "auto",
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
    seed : a non-negative int, the seed of the batch draws (None: fresh entropy;
        ``result.seed`` tells which).
    record_weights : False, True (after every step) or k (every k steps, plus the last).
    on_divergence : "warn" (a :class:`DivergenceWarning`) or "raise" (a :class:`DivergenceError`)
        when the loss, a gradient or a weight becomes non-finite.  Either way the run stops.
    callbacks : callables ``cb(state)`` run after every step.
    loop : "auto" (the default), "native" or "python".  The native loop (C++, no return to
        Python between steps) runs whenever every rule is a built-in one and there are no
        callbacks; otherwise the Python loop runs.  Both give the same trajectory, bit for bit.

    Every argument is checked before anything changes.  Ctrl-C stops the run after the
    current step and returns the partial result with ``stopped_by="interrupted"``.  (The
    native loop looks for it about every millisecond of work: a Ctrl-C after a run's last look,
    or during a shorter run, raises ``KeyboardInterrupt`` once the run has returned.)  Only a
    run on the main thread, under Python's default SIGINT handler, takes Ctrl-C over.

    ``model`` is updated in place: a fit of a model that another thread is training or changing
    (fit, set_weights, build), or that the calling callback's own run is training, raises a
    RuntimeError; so do set_weights and build from another thread during a run.  Separate
    models train in parallel threads, with the same results as one after another.
    """
    # ---- check everything first: a failed call changes nothing --------------------------
    layers = layers_of(model)
    if optimizer is None:
        optimizer = SGD()
    if not isinstance(optimizer, SGD):
        raise TypeError(f"optimizer: expected fastgrad.SGD, got {type(optimizer).__name__}")
    lr = positive_float("optimizer.learning_rate", optimizer.learning_rate)  # it may have been changed
    _check_sampling(sampling)
    batch_size = positive_int("batch_size", batch_size, allow_none=True)
    rules = _check_rules(stop)
    every = _check_record(record_weights)
    seed = _check_seed(seed)
    if on_divergence not in ("warn", "raise"):
        raise ValueError(f"on_divergence: expected 'warn' or 'raise', got {on_divergence!r}")
    if callable(callbacks) or not hasattr(callbacks, "__iter__"):
        raise TypeError(f"callbacks: expected a list of callables, got {type(callbacks).__name__}")
    callbacks = list(callbacks)
    for i, cb in enumerate(callbacks):
        if not callable(cb):
            raise TypeError(f"callbacks[{i}]: expected a callable taking a StepState, got {type(cb).__name__}")
    native = _native_rules(rules) if not callbacks else None
    if loop not in ("auto", "python", "native"):
        raise ValueError(f"loop: expected 'auto', 'python' or 'native', got {loop!r}")
    if loop == "native" and native is None:
        raise ValueError("loop: 'native' runs only the built-in stopping rules and no callbacks")
    use_native = native is not None and loop != "python"
    layers, x, y = prepare(model, x, y, build=False, writeable=True)
    _check_lr_in(lr, layers[0].dtype)
    n = x.shape[0]
    if batch_size is not None and batch_size > n:
        raise ValueError(f"batch_size: expected at most the {n} samples of x, got {batch_size}")
    owner = (object(), threading.current_thread())  # this call's mark on the layers (see layers.mark)
    net_entry = None
    try:
        mark(layers, owner, "model", same_thread_ok=False)  # the last check: no other thread is changing it
        if any([layer.kernel is None for layer in layers]):  # not built (attributes: fit's fixed cost)
            model.build(x.shape[1])  # as a first call would; the only change before training
        params = [w for layer in layers for w in layer._params()]
        initial = [w.copy() for w in params]
        dtype = layers[0].dtype
        rows = n if batch_size is None else batch_size
        net_entry = _net_for(layers, params, rows, batch_size is not None)
        net = net_entry[2]
        start = time.perf_counter()
        if use_native:
            draw = None if batch_size is None else seed if seed < 2**64 else _sampler(n, batch_size, sampling, seed)
            steps, history, stopped_by, divergence = _native_loop(net, x, y, draw, sampling == "shuffle", lr, rules,
                                                                  native, every, params, initial, layers)
        else:
            for r in rules:  # the native loop keeps the built-in rules' state in C++
                if hasattr(r, "reset"):
                    r.reset()
            stream = None if batch_size is None else BatchStream(n, batch_size, sampling, seed)
            rec = _Records(params, every)
            stopped_by, divergence = _python_loop(net, x, y, stream, lr, rules, callbacks, rec, _param_names(layers),
                                                  model)
            steps, history = rec.steps, rec.history(params, batch_size)
        seconds = time.perf_counter() - start
    finally:
        unmark(layers, owner)  # first: nothing before it in this block can fail and leave the mark
        if net_entry is not None:
            _keep_net(layers, net_entry)

    result = FitResult(
        stopped_by=stopped_by,
        steps=steps,
        final_weights=[w.copy() for w in params],
        history=history,
        seed=seed,
        learning_rate=lr,
        batch_size=batch_size,
        sampling=None if batch_size is None else sampling,
        dtype=_DTYPE_NAMES[dtype.char],
        initial_weights=initial,
        model_spec=[(lay.activation, lay.use_bias) for lay in layers],
        divergence=divergence,
        seconds=seconds,
        loop="native" if use_native else "python",
        samples=n,
        _data=_keep_data(x, y),
    )
    if divergence is not None:
        if on_divergence == "raise":
            raise DivergenceError(divergence, result)
        warnings.warn(divergence, DivergenceWarning, stacklevel=2)
    return result


_DTYPE_NAMES = {"f": "float32", "d": "float64"}


def _loss_at(spec, weights, x, y) -> float:
    """MSE of the Dense stack ``spec`` [(activation, use_bias)] with ``weights`` on (x, y)."""
    a, i = x, 0
    for activation, use_bias in spec:
        k, b = weights[i], (weights[i + 1] if use_bias else None)
        i += 2 if use_bias else 1
        a = _core.dense_forward(a, k, b, ACTIVATIONS[activation], False)
    return float(_core.mse(a, y))


def _catch_sigint_here() -> bool:
    """Whether a run may take Ctrl-C over: on the main thread (Python takes signals there alone),
    and only from Python's default handler (an ignored SIGINT, or a handler of the caller's own,
    such as a worker pool's, is left alone)."""
    return threading.current_thread() is threading.main_thread() and _signal.getsignal(_SIGINT) is _DEFAULT_SIGINT


class _SigintFlag:
    """Turns Ctrl-C into a flag read between steps (see _catch_sigint_here; elsewhere a no-op).

    Uses the C-level ``_signal`` module: ``signal.signal`` converts to and from enums, which
    costs more than a short training run.  A Ctrl-C that came after the loop's last look at the
    flag (``reported`` not set) is raised again once the handler is back, as a KeyboardInterrupt,
    instead of being lost.
    """

    def __init__(self) -> None:
        self.hit = False
        self.reported = False
        self._old = None

    def __enter__(self):
        if _catch_sigint_here():
            try:
                self._old = _signal.signal(_SIGINT, self._handler)
            except ValueError:  # pragma: no cover - e.g. an embedded interpreter
                self._old = None
        return self

    def _handler(self, signum, frame) -> None:
        self.hit = True

    def __exit__(self, exc_type, *exc) -> None:
        if self._old is not None:
            _signal.signal(_SIGINT, self._old)
            if self.hit and not self.reported and exc_type is None:
                _signal.raise_signal(_SIGINT)


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


class _Records:
    """What the Python loop records: per-step losses and norms, batch blocks, weight rows."""

    def __init__(self, params, every: int) -> None:
        self.params = params  # the live parameter arrays
        self.every = every
        self.steps = 0
        self.loss: List[np.ndarray] = []
        self.grad_norm: List[np.ndarray] = []
        self.chunks: List[np.ndarray] = []
        self.w: Optional[List[List[np.ndarray]]] = [[w.copy()[None]] for w in params] if every else None
        self.w_steps: List[np.ndarray] = [np.zeros(1, dtype=np.int64)] if every else []

    def history(self, params, batch_size) -> History:
        steps = self.steps
        loss = np.concatenate(self.loss)[:steps] if self.loss else np.empty(0)
        norm = np.concatenate(self.grad_norm)[:steps] if self.grad_norm else np.empty(0)
        batches = None
        if batch_size is not None:
            batches = np.concatenate(self.chunks)[:steps].copy() if self.chunks else np.empty((0, batch_size), np.int64)
        h = History(loss=loss, grad_norm=norm, batches=batches)
        if self.every:
            w_steps = np.concatenate(self.w_steps)
            weights = [np.concatenate(rows) for rows in self.w]
            if w_steps[-1] != steps:  # the final weights are always recorded
                weights = [np.concatenate([w, p[None]]) for w, p in zip(weights, params)]
                w_steps = np.append(w_steps, steps)
            h.weights, h.weight_steps = weights, w_steps
        return h


def _param_slots(layers, params) -> List[Tuple[dict, str, np.ndarray]]:
    """(the layer's __dict__, "kernel" | "bias", the run's array) for every parameter, in
    get_weights() order (a dict lookup per step is what the Python loop can afford)."""
    return [(vars(layer), name, p) for (_, layer, name), p in zip(_param_fields(layers), params)]


def _adopt_replaced(slots) -> None:
    """A callback or rule may replace a layer's parameters (set_weights) during the Python loop:
    copy the new values into the arrays the run updates, and give those back to the layer, so
    that the run goes on from the new values and the model keeps the run's arrays."""
    for d, name, p in slots:
        a = d[name]
        if a is not p:
            if not isinstance(a, np.ndarray) or a.shape != p.shape:
                raise ValueError(f"{name}: replaced during the run by {type(a).__name__} {getattr(a, 'shape', '')}; "
                                 f"expected shape {p.shape} (use set_weights)")
            np.copyto(p, a, casting="same_kind")
            d[name] = p


def _python_loop(net, x, y, stream, lr, rules, callbacks, rec: _Records, names, model):
    """The reference loop, one compiled step per iteration.  Returns (stopped_by, divergence)."""
    losses: List[float] = []
    norms: List[float] = []
    w_rows: List[List[np.ndarray]] = []
    w_steps: List[int] = []
    params = rec.params
    chunk, ci = None, 0
    prev_loss = None
    stopped_by, divergence = None, None
    step_fn = net.step
    every = rec.every
    StepState = _stop.StepState
    slots = _param_slots(layers_of(model), params)
    try:
        with _SigintFlag() as sigint:
            while True:
                if sigint.hit:
                    stopped_by = "interrupted"
                    sigint.reported = True
                    break
                # 1. draw the batch
                if stream is None:
                    idx = None
                else:
                    if chunk is None or ci == len(chunk):
                        chunk, ci = stream.next_chunk(), 0
                        rec.chunks.append(chunk)
                    idx = chunk[ci]
                    ci += 1
                # 2-5. forward, loss, backward, update (one compiled step)
                loss, gnorm, delta, bad_g, bad_w = step_fn(x, y, idx, lr)
                losses.append(loss)
                norms.append(gnorm)
                t = len(losses)
                if every and t % every == 0:
                    w_rows.append([w.copy() for w in params])
                    w_steps.append(t)
                # 6. divergence, then the stopping rules
                if bad_g >= 0 or bad_w >= 0 or not isfinite(loss):
                    divergence = _divergence_message(t, loss, gnorm, bad_g, bad_w, names)
                    stopped_by = "diverged"
                    break
                state = StepState(t, loss, prev_loss, gnorm, delta, model)
                for cb in callbacks:
                    cb(state)
                for r in rules:
                    if r(state):
                        stopped_by = _stop.rule_name(r)
                        break
                _adopt_replaced(slots)
                if stopped_by is not None:
                    break
                prev_loss = loss
    finally:
        rec.steps = len(losses)
        rec.loss.append(np.asarray(losses, dtype=np.float64))
        rec.grad_norm.append(np.asarray(norms, dtype=np.float64))
        if every and w_rows:
            for p in range(len(params)):
                rec.w[p].append(np.stack([row[p] for row in w_rows]))
            rec.w_steps.append(np.asarray(w_steps, dtype=np.int64))
    return stopped_by, divergence


# kinds understood by the native loop (csrc/net.hpp RuleKind); exact types only, so that a
# subclass with its own __call__ runs in the Python loop
_NATIVE_KINDS = {_stop.WeightDelta: 0, _stop.LossDelta: 1, _stop.LossBelow: 2, _stop.Plateau: 3, _stop.MaxSteps: 4}


def _native_rules(rules) -> Optional[List[Tuple[int, float, int]]]:
    """The rules as (kind, tol, n) for the native loop, or None if one is not built in."""
    out = []
    for r in rules:
        kind = _NATIVE_KINDS.get(type(r))
        if kind is None:
            return None
        if kind == 4:
            out.append((4, 0.0, r.n))
        else:
            out.append((kind, r.tol, r.patience if kind == 3 else 0))
    return out


def _native_loop(net, x, y, draw, shuffle, lr, rules, native, every, params, initial, layers):
    """The whole run in C++ (Net.fit_run).  Returns (steps, history, stopped_by, divergence).

    ``draw``: None (full batch), the seed, or a Sampler; ``initial``: copies of the weights
    before the run (row 0 of the recorded weights).  Ctrl-C is caught in C++ from the run's
    first poll on (see SigintCatch in csrc/bindings.cpp), where _catch_sigint_here says so.
    """
    steps, code, bad_g, bad_w, loss, norm, batches, w_rows, w_steps = net.fit_run(x, y, draw, shuffle, lr, native, every,
                                                                                   _catch_sigint_here())
    divergence = None
    if code >= 0:
        stopped_by = _stop.rule_name(rules[code])
    elif code == -2:
        stopped_by = "diverged"
        divergence = _divergence_message(steps, float(loss[-1]), float(norm[-1]), bad_g, bad_w, _param_names(layers))
    else:
        stopped_by = "interrupted"
    h = History(loss, norm, batches)
    if every:
        w_steps = np.concatenate([np.zeros(1, np.int64), w_steps])
        weights = [np.concatenate([w0[None], w]) for w0, w in zip(initial, w_rows)]
        if w_steps[-1] != steps:  # the final weights are always recorded
            weights = [np.concatenate([w, p[None]]) for w, p in zip(weights, params)]
            w_steps = np.append(w_steps, steps)
        h.weights, h.weight_steps = weights, w_steps
    return steps, h, stopped_by, divergence
