"""Training: :func:`fit` checks every argument, decides which loop runs, and hands the run to it.

The loops themselves (the Python reference loop and the glue of the native one) are in
``_loops``; the result types in ``results``; the optimizer in ``optimizers``.  Batch indices are
drawn in C++ from ``seed`` and recorded, which is what lets ``fastgrad.oracle.replay`` run the
same batches in TensorFlow.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Callable, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import _loops, _run
from . import stop as _stop
from ._batches import check_sampling
from ._validation import (aligned, available_memory, data, human_bytes, nonneg_float, nonneg_seed, positive_float,
                          positive_int)
from .gradients import _prepare
from .layers import Dense, Model, _layers_of
from .optimizers import SGD, Optimizer
from .schedules import LearningRateSchedule
# (History and the others are names here too: results pickled when they lived here refer to them)
from .results import DivergenceError, DivergenceWarning, FitResult, History, _keep_data  # noqa: F401

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

__all__ = ["fit", "DEFAULT_MAX_STEPS"]

#: the step cap added when no MaxSteps rule is given
DEFAULT_MAX_STEPS = 10_000
#: the largest record_weights (every k steps): what the loops count in 64 bits, as MaxSteps
MAX_RECORD_EVERY = _stop.MAX_COUNT
#: a weight recording whose worst case is below this many bytes is not checked against free memory
RECORD_CHECK_BYTES = 1 << 26

_StopRule = Callable[[_stop.StepState], bool]


def fit(
    model: Model,
    x: ArrayLike,
    y: ArrayLike,
    optimizer: Optional[Optimizer] = None,
    batch_size: Optional[int] = None,
    sampling: str = "random",
    stop: Union[_StopRule, Sequence[_StopRule], None] = None,
    seed: Optional[int] = None,
    record_weights: Union[bool, int, None] = False,
    on_divergence: str = "warn",
    callbacks: Sequence[Callable[[_stop.StepState], Any]] = (),
    loop: str = "auto",
    validation_data: Optional[Tuple[ArrayLike, ArrayLike]] = None,
    validate_every: Optional[int] = None,
    restore_best: bool = False,
    batches: Optional[ArrayLike] = None,
    progress: bool = False,
) -> FitResult:
    """Train ``model`` (a Sequential or a single Dense) on ``(x, y)`` under MSE, in place.

    Parameters
    ----------
    x, y : (samples, features) and (samples, outputs) or, for one output, (samples,).
        Converted to the model's dtype (complex, strings and masked arrays are refused); copied
        when they share memory with a parameter, which the run changes.  An unbuilt model is
        built from the width of ``x``.
    optimizer : :class:`~fastgrad.SGD` or :class:`~fastgrad.Adam` (Keras 3's rules, clipping,
        weight decay, schedules); default ``SGD(0.01)``.  Its state (``iterations``, momentum,
        velocities) carries over to the next fit with it.
    batch_size : None for full-batch gradient descent, or k samples a step.
    sampling : "random" (each step draws its batch anew, as the walkthrough does) or
        "shuffle" (epochs of a fresh permutation).
    stop : a rule or a list of rules from :mod:`fastgrad.stop`, or callables taking a
        :class:`~fastgrad.stop.StepState` and answering a bool (a NumPy bool too; anything else
        is a TypeError); the first that answers True stops the run.  ``MaxSteps(10_000)`` is
        added when no MaxSteps or MaxEpochs is given and there are no explicit ``batches``.
    seed : a non-negative int, the seed of the batch draws (None: fresh entropy;
        ``result.seed`` tells which).
    record_weights : False, True (after every step) or k (every k steps, plus the last; at
        most 2**62).  A recording whose worst case (up to MaxSteps) cannot fit in the memory
        available is refused up front with a MemoryError.
    on_divergence : "warn" (a :class:`DivergenceWarning`) or "raise" (a :class:`DivergenceError`)
        when the loss, a gradient or a weight becomes non-finite.  Either way the run stops.
    callbacks : callables ``cb(state)`` run after every step.
    loop : "auto" (the default), "native" or "python".  The native loop (C++, no return to
        Python between steps) runs whenever every rule is a built-in one and there are no
        callbacks; otherwise the Python loop runs.  Both give the same trajectory, bit for bit.
    validation_data : ``(x_val, y_val)``: the MSE on it is computed before training, after every
        ``validate_every``-th step (default: once an epoch, ``ceil(samples / batch)`` steps) and
        after the last step, into ``history.val_loss`` / ``history.val_steps``; rules with
        ``monitor="val_loss"`` watch it.  The native loop computes it without leaving C++.
    restore_best : end on the weights of the best monitored value: the validation loss (with
        validation data), else the batch loss (then the weights after the step whose batch loss
        was lowest, as Keras keeps the weights at the end of the best epoch); ``result.best_step``.
    batches : explicit batch indices, an integer array (steps, batch): step t trains on rows
        ``batches[t]``, no draws (``batch_size`` must be None or ``batches.shape[1]``; ``seed`` and
        ``sampling`` are not used).  The run ends when they run out (``stopped_by ==
        "batches_exhausted"``) unless a rule fires first.  Recorded in ``history.batches``.
    progress : True: a progress bar (``tqdm.auto``: a notebook bar in a notebook, a text bar on a
        terminal, nothing elsewhere), fed between chunks of the native loop (no Python per step).

    Every argument is checked before anything changes, and a run that fails for want of
    memory (or for a rule's answer) puts the weights back as they were.  Ctrl-C stops the run after the
    current step and returns the partial result with ``stopped_by="interrupted"``.  (The
    native loop looks for it about every millisecond of work: a Ctrl-C after a run's last look,
    or during a shorter run, raises ``KeyboardInterrupt`` once the run has returned.)  Only a
    run on the main thread, under Python's default SIGINT handler, takes Ctrl-C over.

    ``model`` is updated in place: a fit of a model that another thread is training or changing
    (fit, set_weights, build), or that the calling callback's own run is training, raises a
    RuntimeError; so do set_weights and build from another thread during a run.  Separate
    models train in parallel threads, with the same results as one after another.
    """
    # ---- validate: every argument before anything changes --------------------------------------
    layers = _layers_of(model)
    if optimizer is None:
        optimizer = SGD()
    lr = _check_optimizer(optimizer)
    check_sampling(sampling)
    batch_size = positive_int("batch_size", batch_size, allow_none=True)
    rules = _check_rules(stop)
    every = _check_record(record_weights)
    seed = _check_seed(seed)
    if on_divergence not in ("warn", "raise"):
        raise ValueError(f"on_divergence: expected 'warn' or 'raise', got {on_divergence!r}")
    callbacks = _check_callbacks(callbacks)
    if loop not in ("auto", "python", "native"):
        raise ValueError(f"loop: expected 'auto', 'python' or 'native', got {loop!r}")
    layers, x, y = _prepare(model, x, y, build=False, writeable=True)
    x, y = _unaliased(x, y, layers)
    if optimizer._slots is not None:  # (plain SGD never has any: fit's fixed cost)
        optimizer._check_state_for(model, [w for layer in layers for w in layer._params()] if layers[0].built else None)
    dtype = layers[0].dtype
    if not isinstance(optimizer.learning_rate, LearningRateSchedule):  # (a schedule may start at 0: warm-up)
        _check_lr_in(lr, dtype)
    n = x.shape[0]
    batches = _check_batches(batches, n, batch_size)
    if batches is not None:
        batch_size = batches.shape[1]
    elif batch_size is not None and batch_size > n:
        raise ValueError(f"batch_size: expected at most the {n} samples of x, got {batch_size}")
    rules = _with_step_cap(rules, batches)
    validation = _check_validation(validation_data, layers, x, y)
    epoch_steps = 1 if batch_size is None else -(-n // batch_size)
    validate_every = epoch_steps if validate_every is None else positive_int("validate_every", validate_every)
    if validation is None and rules and (len(rules) > 1 or type(rules[0]) is not _stop.MaxSteps):
        for i, r in enumerate(rules):
            if getattr(r, "monitor", "loss") == "val_loss":
                raise ValueError(f"stop[{i}] ({_stop.rule_name(r)}): monitors val_loss, which needs validation_data")
    if restore_best is not False and not isinstance(restore_best, (bool, np.bool_)):
        raise TypeError(f"restore_best: expected a bool, got {type(restore_best).__name__}")
    if progress is not False and not isinstance(progress, (bool, np.bool_)):
        raise TypeError(f"progress: expected a bool, got {type(progress).__name__}")
    max_steps = _max_steps(rules, epoch_steps, batches)
    max_rows = _check_record_memory(every, max_steps, layers, x.shape[1])

    # ---- decide: the native loop runs the built-in rules without callbacks --------------------
    native = _loops.native_rules(rules, epoch_steps) if not callbacks else None
    if loop == "native" and native is None:
        raise ValueError("loop: 'native' runs only the built-in stopping rules and no callbacks")
    use_native = native is not None and loop != "python"
    plan = _loops.RunPlan(
        lr=lr, batch_size=batch_size, sampling=sampling, seed=seed, every=every, max_rows=max_rows,
        epoch_steps=epoch_steps, batches=batches, validation=validation, validate_every=validate_every,
        restore_best=bool(restore_best), best_on_val=validation is not None, optimizer=optimizer,
        schedule=isinstance(optimizer.learning_rate, LearningRateSchedule))
    described = _describe(optimizer)

    # ---- dispatch --------------------------------------------------------------------------------
    if progress:
        plan.progress, plan.progress_every = _progress_bar(max_steps, layers, batch_size or n)
    try:
        stopped_by, steps, history, divergence, params, initial, seconds, best_step = _run.run(
            model, layers, x, y, use_native=use_native, native=native, rules=rules, callbacks=callbacks, plan=plan)
    finally:
        if plan.progress is not None:
            plan.progress.close()
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
        best_step=best_step if best_step >= 0 else None,
        optimizer=described,
        _data=_keep_data(x, y),
    )
    if divergence is not None:
        if on_divergence == "raise":
            raise DivergenceError(divergence, result)
        warnings.warn(divergence, DivergenceWarning, stacklevel=2)
    return result


_DTYPE_NAMES = {"f": "float32", "d": "float64"}


# ---- the checks fit makes ------------------------------------------------------------------------

def _check_optimizer(optimizer) -> float:
    """The learning rate of ``optimizer``'s first update, its rate checked again (it may have been
    changed since it was made)."""
    if isinstance(optimizer, type) and issubclass(optimizer, Optimizer):
        raise TypeError(f"optimizer: expected an optimizer, got the class {optimizer.__name__}; make one, "
                        f"e.g. {optimizer.__name__}(0.01)")
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer: expected fastgrad.SGD or fastgrad.Adam, got {type(optimizer).__name__}")
    rate = optimizer.learning_rate
    if isinstance(rate, LearningRateSchedule):
        return float(rate(optimizer.iterations))
    return positive_float("optimizer.learning_rate", rate)


def _describe(optimizer: Optimizer) -> dict:
    """The optimizer as the run starts, in Keras's terms (what oracle.replay builds Keras's from)."""
    rate = optimizer.learning_rate
    if type(optimizer) is SGD and optimizer._plain():  # Keras's defaults but the rate (fit's fixed cost)
        return {"class": "SGD", "config": {}, "learning_rate": rate, "iterations": optimizer.iterations}
    if isinstance(rate, LearningRateSchedule):
        cfg = {k: v for k, v in vars(rate).items() if not k.startswith("_")}
        lr: Any = {"class": type(rate).__name__, "config": cfg}
    else:
        lr = float(rate)
    config = {name: getattr(optimizer, name) for name in optimizer._shown()}
    if config.get("l2") is None:  # (not a Keras option: named only when set)
        config.pop("l2", None)
    return {"class": type(optimizer).__name__, "config": config, "learning_rate": lr,
            "iterations": optimizer.iterations}


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
        if isinstance(r, type):
            raise TypeError(f"stop[{i}]: expected a rule, got the class {r.__name__}; make one, e.g. {r.__name__}(...)")
        if not callable(r):
            raise TypeError(
                f"stop[{i}]: expected a stopping rule (fastgrad.stop.* or a callable taking a StepState), "
                f"got {type(r).__name__}"
            )
        if type(r) in _loops.NATIVE_KINDS:  # checked again: its attributes may have changed since it was made
            _check_rule_values(i, r)
    return rules


def _with_step_cap(rules: list, batches: Optional[np.ndarray]) -> list:
    """The rules, with MaxSteps(DEFAULT_MAX_STEPS) added when nothing else bounds the run."""
    if batches is None and not any([isinstance(r, (_stop.MaxSteps, _stop.MaxEpochs)) for r in rules]):
        rules.append(_stop.MaxSteps(DEFAULT_MAX_STEPS))
    return rules


def _max_steps(rules: list, epoch_steps: int, batches: Optional[np.ndarray]) -> int:
    """The most steps the run can make: its step caps, and the explicit batches."""
    if batches is None and len(rules) == 1 and type(rules[0]) is _stop.MaxSteps:
        return rules[0].n  # the common case in one test (fit's fixed cost)
    caps = [r.n for r in rules if isinstance(r, _stop.MaxSteps)]
    caps += [r.n * epoch_steps for r in rules if isinstance(r, _stop.MaxEpochs)]
    if batches is not None:
        caps.append(len(batches))
    return min(caps)


def _check_batches(batches, n: int, batch_size: Optional[int]) -> Optional[np.ndarray]:
    """Explicit batches as a C-contiguous int64 copy (the run must not see later changes):
    an integer array (steps, batch), 1 <= batch <= n, every index in [0, n)."""
    if batches is None:
        return None
    a = np.asarray(batches)
    if a.dtype == np.bool_ or a.dtype.kind not in "iu":
        raise TypeError(f"batches: expected an integer array (steps, batch), got dtype {a.dtype}")
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"batches: expected a 2-D array (steps, batch) with at least one step and one index, "
                         f"got shape {a.shape}")
    if a.shape[1] > n:
        raise ValueError(f"batches: expected batches of at most the {n} samples of x, got {a.shape[1]}")
    if batch_size is not None and batch_size != a.shape[1]:
        raise ValueError(f"batch_size: expected None or {a.shape[1]} (the width of batches), got {batch_size}")
    lo, hi = a.min(), a.max()
    if lo < 0 or hi >= n:
        bad = lo if lo < 0 else hi
        raise ValueError(f"batches: index {bad} out of range for the {n} samples of x")
    return np.array(a, dtype=np.int64, order="C")  # a copy, always


def _check_validation(validation_data, layers: List[Dense], x: np.ndarray,
                      y: np.ndarray) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """(x_val, y_val) checked as x and y are, in the model's dtype, of x's and y's widths."""
    if validation_data is None:
        return None
    if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
        raise TypeError("validation_data: expected a pair (x_val, y_val)")
    try:
        xv, yv = data(validation_data[0], validation_data[1], layers[0].dtype, outputs=y.shape[1])
    except (TypeError, ValueError) as e:
        raise type(e)(f"validation_data: {e}") from None
    if xv.shape[1] != x.shape[1]:
        raise ValueError(f"validation_data: x_val has {xv.shape[1]} features, x has {x.shape[1]}")
    xv, yv = _unaliased(xv, yv, layers)
    return aligned(xv), aligned(yv)


def _progress_bar(total: int, layers: List[Dense], rows: int):
    """A tqdm.auto bar of ``total`` steps, and how often (in steps) the loops feed it: about every
    20 ms of work (no Python per step), and at least 200 times in a run."""
    import sys

    from tqdm.auto import tqdm

    in_notebook = "ipykernel" in sys.modules
    bar = tqdm(total=total, unit="step", disable=False if in_notebook else None, leave=True)
    work = rows * sum(layer.units * (layer.kernel.shape[0] if layer.kernel is not None else 1) for layer in layers)
    every = max(1, min(max(1, total // 200), 20_000_000 // max(1, work)))
    return bar, every


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
    if isinstance(r, (_stop.MaxSteps, _stop.MaxEpochs)):
        _stop.count(f"stop[{i}].n", r.n)
        return
    nonneg_float(f"stop[{i}].tol", r.tol)
    if isinstance(r, _stop.Plateau):
        _stop.count(f"stop[{i}].patience", r.patience)


def _check_record(record_weights) -> int:
    """0: no recording; k: every k steps (True means 1), at most MAX_RECORD_EVERY."""
    if isinstance(record_weights, np.bool_):
        record_weights = bool(record_weights)
    if record_weights is False or record_weights is None:
        return 0
    if record_weights is True:
        return 1
    if type(record_weights) is int and 0 < record_weights <= MAX_RECORD_EVERY:
        return record_weights
    k = positive_int("record_weights", record_weights)
    if k > MAX_RECORD_EVERY:
        raise ValueError(f"record_weights: expected True, False or a step interval of at most 2**62, got {k}")
    return k


def _check_record_memory(every: int, max_steps: int, layers: List[Dense], input_dim: int) -> int:
    """The most weight rows the run can record (0 without recording): ceil(max_steps / every) + 1
    (row 0, and the final weights).  MemoryError, naming record_weights, when that many rows of
    the model's parameters cannot fit in the memory available now."""
    if not every:
        return 0
    rows = -(-max_steps // every) + 1
    row_bytes, width = 0, input_dim
    for layer in layers:
        row_bytes += (width + layer.use_bias) * layer.units * layer.dtype.itemsize
        width = layer.units
    need = rows * row_bytes
    if need < RECORD_CHECK_BYTES:
        return rows
    free = available_memory()
    if free is not None and need > free:
        raise MemoryError(
            f"record_weights: recording every {every} step(s) of up to {max_steps} steps (MaxSteps) keeps up to "
            f"{rows} rows of the weights ({row_bytes} bytes each): {human_bytes(need)}, more than the "
            f"{human_bytes(free)} of memory available; record every k steps (record_weights=k) or lower MaxSteps")
    return rows


def _check_seed(seed) -> int:
    seed = nonneg_seed("seed", seed)
    if seed is None:
        return int(np.random.SeedSequence().generate_state(1, dtype=np.uint32)[0])
    return seed


def _check_callbacks(callbacks) -> list:
    if callable(callbacks) or not hasattr(callbacks, "__iter__"):
        raise TypeError(f"callbacks: expected a list of callables, got {type(callbacks).__name__}")
    callbacks = list(callbacks)
    for i, cb in enumerate(callbacks):
        if not callable(cb):
            raise TypeError(f"callbacks[{i}]: expected a callable taking a StepState, got {type(cb).__name__}")
    return callbacks


def _unaliased(x: np.ndarray, y: np.ndarray, layers: List[Dense]) -> Tuple[np.ndarray, np.ndarray]:
    """x and y, copied where they share memory with a parameter: the run would read them while it
    updates that parameter (fit(d, d.kernel, y))."""
    if layers[0].kernel is None:  # unbuilt: the parameters fit makes are new arrays
        return x, y
    # the common case in a few attribute reads (fit's fixed cost): x and y views of (or themselves)
    # root arrays, the parameters roots too, none the same array; distinct roots never overlap
    xr, yr = x.base, y.base
    xr = x if xr is None else xr
    yr = y if yr is None else yr
    if type(xr) is np.ndarray and type(yr) is np.ndarray and xr.base is None and yr.base is None:
        for layer in layers:
            k, b = layer.kernel, layer.bias
            if k is xr or k is yr or k.base is not None or b is not None and (b is xr or b is yr or b.base is not None):
                break
        else:
            return x, y
    params = [w for layer in layers for w in layer._params()]
    return (x.copy() if any([np.may_share_memory(x, p) for p in params]) else x,
            y.copy() if any([np.may_share_memory(y, p) for p in params]) else y)
