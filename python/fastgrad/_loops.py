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
from math import isfinite
from typing import List, Optional, Tuple

import numpy as np

from . import stop as _stop
from .layers import Dense, _layers_of
from .results import History

_SIGINT = int(_signal.SIGINT)
_DEFAULT_SIGINT = _signal.default_int_handler
_BOOL = np.bool_

# kinds understood by the native loop (csrc RuleKind); exact types only, so that a subclass with
# its own __call__ runs in the Python loop
NATIVE_KINDS = {_stop.WeightDelta: 0, _stop.LossDelta: 1, _stop.LossBelow: 2, _stop.Plateau: 3, _stop.MaxSteps: 4}


def native_rules(rules) -> Optional[List[Tuple[int, float, int]]]:
    """The rules as (kind, tol, n) for the native loop, or None if one is not built in."""
    out = []
    for r in rules:
        kind = NATIVE_KINDS.get(type(r))
        if kind is None:
            return None
        if kind == 4:
            out.append((4, 0.0, r.n))
        else:
            out.append((kind, r.tol, r.patience if kind == 3 else 0))
    return out


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
        if self.every:
            if self.cur_steps[self.cur_n - 1] != steps:  # the final weights are always recorded
                self.add_row(steps)
            blocks = self.blocks + [([b[: self.cur_n] for b in self.cur], self.cur_steps[: self.cur_n])]
            self.blocks, self.cur = [], []
            h.weight_steps = np.concatenate([s for _, s in blocks])
            h.weights = [np.concatenate([rows[p] for rows, _ in blocks]) for p in range(len(params))]
        return h


def python_loop(net, x, y, stream, lr, rules, callbacks, rec: Records, names, model) -> Tuple[Optional[str], Optional[str]]:
    """The reference loop, one compiled step per iteration.  Returns (stopped_by, divergence)."""
    losses: List[float] = []
    norms: List[float] = []
    chunk, ci = None, 0
    prev_loss = None
    stopped_by, divergence = None, None
    step_fn = net.step
    every = rec.every
    flush_at = rec.FLUSH_STEPS
    t = 0
    StepState = _stop.StepState
    slots = param_slots(_layers_of(model), rec.params)
    try:
        with SigintFlag() as sigint:
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
                t += 1
                if every and t % every == 0:
                    rec.add_row(t)
                if t == flush_at:  # lists of Python floats cost four times the array they become
                    rec.loss.append(np.array(losses, dtype=np.float64))
                    rec.grad_norm.append(np.array(norms, dtype=np.float64))
                    losses.clear()
                    norms.clear()
                    flush_at += rec.FLUSH_STEPS
                # 6. divergence, then the stopping rules
                if bad_g >= 0 or bad_w >= 0 or not isfinite(loss):
                    divergence = divergence_message(t, loss, gnorm, bad_g, bad_w, names)
                    stopped_by = "diverged"
                    break
                state = StepState(t, loss, prev_loss, gnorm, delta, model)
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
                prev_loss = loss
    finally:
        rec.steps = t
        rec.loss.append(np.array(losses, dtype=np.float64))
        rec.grad_norm.append(np.array(norms, dtype=np.float64))
    return stopped_by, divergence


# ---- the native loop ---------------------------------------------------------------------------

def native_loop(net, x, y, draw, shuffle, lr, rules, native, every, params, initial, layers) -> Tuple[int, History, str, Optional[str]]:
    """The whole run in C++ (Net.fit_run).  Returns (steps, history, stopped_by, divergence).

    ``draw``: None (full batch), the seed, or a Sampler; ``initial``: copies of the weights
    before the run (row 0 of the recorded weights).  Ctrl-C is caught in C++ from the run's
    first poll on, where catch_sigint_here says so.
    """
    try:
        steps, code, bad_g, bad_w, loss, norm, batches, w_rows, w_steps = net.fit_run(
            x, y, draw, shuffle, lr, native, every, catch_sigint_here())
    except MemoryError as e:  # the C++ says what it could not allocate and how big
        raise MemoryError(f"fit: {e}; the weights are as before the run") from None
    divergence = None
    if code >= 0:
        stopped_by = _stop.rule_name(rules[code])
    elif code == -2:
        stopped_by = "diverged"
        divergence = divergence_message(steps, float(loss[-1]), float(norm[-1]), bad_g, bad_w, param_names(layers))
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
