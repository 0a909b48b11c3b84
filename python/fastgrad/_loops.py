"""The two training loops behind :func:`fastgrad.fit`: the Python reference loop, and the glue of
the native one.

One step (the walkthrough's order):
    draw the batch -> forward -> loss -> backward -> update -> test the stopping rules

The native loop (``Net.fit_run``, C++) runs the whole run without returning to Python; the
Python loop (:func:`python_loop`, the readable reference) calls the compiled step (``Net.step``)
once per step, for custom rules and callbacks.  Both run the same arithmetic as
``fastgrad.value_and_grad`` + ``sgd_update`` on the same batch indices, so they give the same
trajectory, bit for bit.  Batch indices are drawn in C++ from the seed (``_batches``).

``_run`` holds the model around a run (marks, build, the compiled step).
"""

from __future__ import annotations

import _signal
import threading
from dataclasses import dataclass
from math import isfinite
from typing import Any, List, Optional, Tuple

import numpy as np

from . import stop as _stop
from .layers import Dense, _layers_of
from .results import History

_SIGINT = int(_signal.SIGINT)
_DEFAULT_SIGINT = _signal.default_int_handler
_BOOL = np.bool_

# kinds understood by the native loop (csrc/rules.hpp RuleKind); exact types only, so that a
# subclass with its own __call__ runs in the Python loop.  MaxEpochs runs as MaxSteps.
NATIVE_KINDS = {_stop.WeightDelta: 0, _stop.LossDelta: 1, _stop.LossBelow: 2, _stop.Plateau: 3, _stop.MaxSteps: 4,
                _stop.MaxEpochs: 4}
BATCHES_EXHAUSTED = "batches_exhausted"  # stopped_by when explicit batches ran out


@dataclass
class RunPlan:
    """What a run does besides its steps, as fit decided it."""

    lr: float
    batch_size: Optional[int]
    sampling: str
    seed: int
    every: int  # record the weights every `every` steps (0: never)
    max_rows: int  # the most weight rows the run can record
    epoch_steps: int  # ceil(samples / batch): what MaxEpochs and the default validate_every count
    batches: Optional[np.ndarray] = None  # explicit batches, (steps, batch) int64, checked
    validation: Optional[Tuple[np.ndarray, np.ndarray]] = None
    validate_every: int = 0
    restore_best: bool = False
    best_on_val: bool = False
    progress: Any = None  # a tqdm bar, or None
    progress_every: int = 0
    schedule: bool = False  # the rate changes step by step: record it
    optimizer: Any = None  # the fastgrad.optimizers.Optimizer of the run


def native_rules(rules, epoch_steps: int = 1) -> Optional[Tuple[List[Tuple[int, float, int]], List[bool]]]:
    """The rules as (kind, tol, n) for the native loop, with whether each monitors the validation
    loss; None if one is not built in."""
    out, on_val = [], []
    for r in rules:
        kind = NATIVE_KINDS.get(type(r))
        if kind is None:
            return None
        if type(r) is _stop.MaxEpochs:
            out.append((4, 0.0, min(r.n * epoch_steps, _stop.MAX_COUNT)))
        elif kind == 4:
            out.append((4, 0.0, r.n))
        else:
            out.append((kind, r.tol, r.patience if kind == 3 else 0))
        on_val.append(getattr(r, "monitor", "loss") == "val_loss")
    return out, on_val


class RuleReturnError(TypeError):
    """A stopping rule answered something other than a bool (raised mid-run: the weights are
    put back as they were)."""


# ---- the parameters, by name and by slot -------------------------------------------------------

def _param_fields(layers: List[Dense]) -> List[Tuple[int, Dense, str]]:
    """(layer index, layer, "kernel" | "bias") for every parameter, in get_weights() order."""
    return [(i, layer, name) for i, layer in enumerate(layers)
            for name in (("kernel", "bias") if layer.use_bias else ("kernel",))]


def param_names(layers: List[Dense]) -> List[str]:
    one = len(layers) == 1
    return [(name if one else f"layer {i} {name}") for i, _, name in _param_fields(layers)]


def param_slots(layers: List[Dense], params: List[np.ndarray]) -> List[Tuple[dict, str, np.ndarray]]:
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


# ---- Ctrl-C and divergence --------------------------------------------------------------------

def catch_sigint_here() -> bool:
    """Whether a run may take Ctrl-C over: on the main thread (Python takes signals there alone),
    and only from Python's default handler (an ignored SIGINT, or a handler of the caller's own,
    such as a worker pool's, is left alone)."""
    return threading.current_thread() is threading.main_thread() and _signal.getsignal(_SIGINT) is _DEFAULT_SIGINT


class SigintFlag:
    """Turns Ctrl-C into a flag read between steps (see catch_sigint_here; elsewhere a no-op).

    Uses the C-level ``_signal`` module: ``signal.signal`` converts to and from enums, which
    costs more than a short training run.  A Ctrl-C that came after the loop's last look at the
    flag (``reported`` not set) is raised again once the handler is back, as a KeyboardInterrupt,
    instead of being lost.
    """

    def __init__(self) -> None:
        self.hit = False
        self.reported = False
        self._old = None

    def __enter__(self) -> SigintFlag:
        if catch_sigint_here():
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


def divergence_message(step, loss, grad_norm, bad_grad, bad_weight, names) -> Optional[str]:
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


# ---- the Python loop ---------------------------------------------------------------------------

class Records:
    """What the Python loop records, in arrays allocated ahead: losses and norms gathered a block
    of steps at a time, weight rows written into preallocated (rows, *shape) blocks.  The first
    block is allocated before the first update, and holds the whole run when it is small."""

    FLUSH_STEPS = 1 << 14  # losses and norms move from Python lists into arrays this often
    FIRST_ROWS_BYTES = 1 << 24  # the first weight block: up to this size (the whole run if it fits)
    MAX_BLOCK_BYTES = 1 << 26  # later blocks double up to this size

    def __init__(self, params: List[np.ndarray], every: int, max_rows: int) -> None:
        self.params = params  # the live parameter arrays
        self.every = every
        self.steps = 0
        self.loss: List[np.ndarray] = []
        self.grad_norm: List[np.ndarray] = []
        self.chunks: List[np.ndarray] = []
        self.max_rows = max_rows
        self.blocks: List[Tuple[List[np.ndarray], np.ndarray]] = []  # full blocks: (rows per parameter, steps)
        self.rows = 0  # rows recorded in all
        self.val_loss: List[float] = []
        self.val_steps: List[int] = []
        self.lr: List[float] = []
        if every:
            self._row_bytes = sum(p.nbytes for p in params) + 8
            self._new_block(max(1, min(max_rows, self.FIRST_ROWS_BYTES // self._row_bytes)))
            self.add_row(0)  # row 0: the initial weights

    def _new_block(self, rows: int) -> None:
        self.cur = [np.empty((rows, *p.shape), p.dtype) for p in self.params]
        self.cur_steps = np.empty(rows, np.int64)
        self.cur_n = 0

    def add_row(self, step: int) -> None:
        """Record the live weights as the row after ``step``."""
        n = self.cur_n
        if n == len(self.cur_steps):
            self.blocks.append((self.cur, self.cur_steps))
            want = 2 * n
            if self.rows < self.max_rows:  # (a callback may have raised a MaxSteps meanwhile: then past it)
                want = min(want, self.max_rows - self.rows)
            self._new_block(max(1, min(want, self.MAX_BLOCK_BYTES // self._row_bytes)))
            n = 0
        for block, p in zip(self.cur, self.params):
            block[n] = p
        self.cur_steps[n] = step
        self.cur_n = n + 1
        self.rows += 1

    def history(self, params: List[np.ndarray], batch_size: Optional[int]) -> History:
        steps = self.steps
        loss = np.concatenate(self.loss)[:steps] if self.loss else np.empty(0)
        norm = np.concatenate(self.grad_norm)[:steps] if self.grad_norm else np.empty(0)
        batches = None
        if batch_size is not None:
            batches = np.concatenate(self.chunks)[:steps].copy() if self.chunks else np.empty((0, batch_size), np.int64)
        h = History(loss=loss, grad_norm=norm, batches=batches)
        if self.lr:
            h.learning_rate = np.array(self.lr[:steps], dtype=np.float64)
        if self.val_steps:
            h.val_loss = np.array(self.val_loss, dtype=np.float64)
            h.val_steps = np.array(self.val_steps, dtype=np.int64)
        if self.every:
            if self.cur_steps[self.cur_n - 1] != steps:  # the final weights are always recorded
                self.add_row(steps)
            blocks = self.blocks + [([b[: self.cur_n] for b in self.cur], self.cur_steps[: self.cur_n])]
            self.blocks, self.cur = [], []
            h.weight_steps = np.concatenate([s for _, s in blocks])
            h.weights = [np.concatenate([rows[p] for rows, _ in blocks]) for p in range(len(params))]
        return h


class _Best:
    """Restore-best in the Python loop: copies of the weights at the best monitored value (the
    native loop's RunExtras::offer, in the same order of comparisons)."""

    def __init__(self, params: List[np.ndarray]) -> None:
        self.params = params
        self.value = float("inf")
        self.step = -1
        self.weights: List[np.ndarray] = []

    def offer(self, value: float, step: int) -> None:
        if value < self.value:  # NaN never is
            self.value = value
            self.step = step
            self.weights = [p.copy() for p in self.params]

    def restore(self) -> None:
        for p, w in zip(self.params, self.weights):
            np.copyto(p, w)


def python_loop(net, x, y, stream, rules, callbacks, rec: Records, names, model,
                plan: RunPlan) -> Tuple[Optional[str], Optional[str], int]:
    """The reference loop, one compiled step per iteration.  Returns (stopped_by, divergence,
    best_step)."""
    losses: List[float] = []
    norms: List[float] = []
    chunk, ci = None, 0
    prev_loss = None
    stopped_by, divergence = None, None
    step_fn = net.step
    lr = plan.lr
    every = rec.every
    flush_at = rec.FLUSH_STEPS
    t = 0
    StepState = _stop.StepState
    slots = param_slots(_layers_of(model), rec.params)
    batches = plan.batches
    if batches is not None:
        rec.chunks.append(batches)
    validation, val_every = plan.validation, plan.validate_every
    best = _Best(rec.params) if plan.restore_best else None
    best_on_val = plan.best_on_val
    bar, bar_every = plan.progress, plan.progress_every
    if validation is not None:  # the validation loss before training: step 0
        rec.val_loss.append(net.validate(*validation))
        rec.val_steps.append(0)
    try:
        with SigintFlag() as sigint:
            while True:
                if sigint.hit:
                    stopped_by = "interrupted"
                    sigint.reported = True
                    break
                # 1. draw the batch (or take the next of the explicit ones)
                if batches is not None:
                    idx = batches[t]
                elif stream is None:
                    idx = None
                else:
                    if chunk is None or ci == len(chunk):
                        chunk, ci = stream.next_chunk(), 0
                        rec.chunks.append(chunk)
                    idx = chunk[ci]
                    ci += 1
                # 2-5. forward, loss, backward, update (one compiled step)
                loss, gnorm, delta, bad_g, bad_w, lr_used = step_fn(x, y, idx, lr)
                if plan.schedule:
                    rec.lr.append(lr_used)
                losses.append(loss)
                norms.append(gnorm)
                t += 1
                if every and t % every == 0:
                    rec.add_row(t)
                if t == flush_at:  # lists of Python floats cost four times the array they become
                    rec.loss.append(np.array(losses, dtype=np.float64))
                    rec.grad_norm.append(np.array(norms, dtype=np.float64))
                    losses.clear()
                    norms.clear()
                    flush_at += rec.FLUSH_STEPS
                # 6. divergence, the validation loss, the best weights, then the stopping rules
                if bad_g >= 0 or bad_w >= 0 or not isfinite(loss):
                    divergence = divergence_message(t, loss, gnorm, bad_g, bad_w, names)
                    stopped_by = "diverged"
                    break
                val = None
                if validation is not None and t % val_every == 0:
                    val = net.validate(*validation)
                    rec.val_loss.append(val)
                    rec.val_steps.append(t)
                if best is not None and (not best_on_val or val is not None):
                    best.offer(val if best_on_val else loss, t)
                state = StepState(t, loss, prev_loss, gnorm, delta, model, val, plan.epoch_steps, lr_used)
                for cb in callbacks:
                    cb(state)  # (what a callback returns is not looked at)
                for r in rules:
                    fired = r(state)
                    if fired is not False:  # (the common answer, in one test)
                        if fired is not True and type(fired) is not _BOOL:  # "no" and NaN are truthy
                            raise RuleReturnError(f"stop[{rules.index(r)}] ({_stop.rule_name(r)}) returned "
                                                  f"{type(fired).__name__}; expected a bool (True stops the run)")
                        if fired:
                            stopped_by = _stop.rule_name(r)
                            break
                _adopt_replaced(slots)
                if stopped_by is not None:
                    break
                if batches is not None and t == len(batches):
                    stopped_by = BATCHES_EXHAUSTED
                    break
                prev_loss = loss
                if bar is not None and t % bar_every == 0:
                    bar.update(t - bar.n)
    finally:
        rec.steps = t
        rec.loss.append(np.array(losses, dtype=np.float64))
        rec.grad_norm.append(np.array(norms, dtype=np.float64))
    # as the native loop: the validation loss after the last step too, and the best weights back
    if validation is not None and rec.val_steps[-1] != t:
        rec.val_loss.append(net.validate(*validation))
        rec.val_steps.append(t)
    best_step = -1
    if best is not None and best.step >= 0:
        best.restore()
        best_step = best.step
    return stopped_by, divergence, best_step


# ---- the native loop ---------------------------------------------------------------------------

def native_loop(net, x, y, draw, shuffle, rules, native, params, initial, layers,
                plan: RunPlan) -> Tuple[int, History, str, Optional[str], int]:
    """The whole run in C++ (Net.fit_run).  Returns (steps, history, stopped_by, divergence,
    best_step).

    ``draw``: None (full batch or explicit batches), the seed, or a Sampler; ``native``: the rules
    as native_rules gives them; ``initial``: copies of the weights before the run (row 0 of the
    recorded weights).  Ctrl-C is caught in C++ from the run's first poll on, where
    catch_sigint_here says so.
    """
    every = plan.every
    bar = plan.progress
    progress = None if bar is None else (lambda steps: bar.update(steps - bar.n))
    try:
        (steps, code, bad_g, bad_w, loss, norm, batches, w_rows, w_steps, val_loss, val_steps,
         best_step, lrs) = net.fit_run(  # positional (keywords cost fit's fixed cost a µs or two)
            x, y, draw, shuffle, plan.lr, native[0], every, catch_sigint_here(), native[1], plan.batches,
            plan.validation, plan.validate_every, plan.restore_best, plan.best_on_val, progress, plan.progress_every)
    except MemoryError as e:  # the C++ says what it could not allocate and how big
        raise MemoryError(f"fit: {e}; the weights are as before the run") from None
    divergence = None
    if code >= 0:
        stopped_by = _stop.rule_name(rules[code])
    elif code == -2:
        stopped_by = "diverged"
        divergence = divergence_message(steps, float(loss[-1]), float(norm[-1]), bad_g, bad_w, param_names(layers))
    elif code == -5:
        stopped_by = BATCHES_EXHAUSTED
    else:
        stopped_by = "interrupted"
    h = History(loss, norm, batches, val_loss=val_loss, val_steps=val_steps, learning_rate=lrs)
    if every:
        w_steps = np.concatenate([np.zeros(1, np.int64), w_steps])
        weights = [np.concatenate([w0[None], w]) for w0, w in zip(initial, w_rows)]
        if w_steps[-1] != steps:  # the final weights are always recorded
            weights = [np.concatenate([w, p[None]]) for w, p in zip(weights, params)]
            w_steps = np.append(w_steps, steps)
        h.weights, h.weight_steps = weights, w_steps
    return steps, h, stopped_by, divergence, best_step
