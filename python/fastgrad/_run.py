"""A run of :func:`fastgrad.fit`: hold the model (its marks, its build, its compiled step), run
one of the loops of ``_loops``, let go.  A run that fails for want of memory or for a stopping
rule's bad answer leaves the weights as they were."""

from __future__ import annotations

import threading
import time
from typing import List, Optional, Tuple

import numpy as np

from . import _core
from ._batches import BatchStream, sampler
from ._loops import Records, RuleReturnError, RunPlan, native_loop, param_names, param_slots, python_loop
from ._marks import mark, unmark
from ._validation import human_bytes
from .layers import Dense
from .results import History


def run(model, layers: List[Dense], x: np.ndarray, y: np.ndarray, *, use_native: bool, native, rules: list,
        callbacks: list,
        plan: RunPlan) -> Tuple[str, int, History, Optional[str], List[np.ndarray], List[np.ndarray], float, int]:
    """One run of ``model`` on checked data; returns (stopped_by, steps, history, divergence, params
    (the live arrays), initial (copies from before the run), seconds, best_step (-1: none)).

    A MemoryError
    or a rule's bad answer during the run puts back the initial weights (and unbuilds what this
    call built) before it propagates, so that a failed call leaves the model as it was.
    """
    owner = (object(), threading.current_thread())  # this call's mark on the layers (see _marks)
    net_entry = None
    unbuilt: List[Dense] = []
    params: List[np.ndarray] = []
    initial: List[np.ndarray] = []
    try:
        mark(layers, owner, "model", same_thread_ok=False)  # the last check: no other thread is changing it
        try:
            if any([layer.kernel is None for layer in layers]):  # not built (attributes: fit's fixed cost)
                unbuilt = [layer for layer in layers if layer.kernel is None]
                model.build(x.shape[1])  # as a first call would; the only change before training
            params = [w for layer in layers for w in layer._params()]
            initial = [w.copy() for w in params]
            batch_size, sampling, seed = plan.batch_size, plan.sampling, plan.seed
            rows = x.shape[0] if batch_size is None else batch_size
            net_entry = _net_for(layers, params, rows, batch_size is not None)
            opt = plan.optimizer
            plain = opt._plain()
            if plain:  # the fused update; iterations counted here (fit's fixed cost: no call when the Net is plain)
                saved: tuple = ((), opt.iterations)
                if not net_entry[2].plain:
                    net_entry[2].set_optimizer(0, _PLAIN, (0, plan.lr), [], 0)
            else:
                opt._check_state_for(model, params)  # (again: the model may have been built just now)
                slots = opt._slots_for(model, params)
                saved = ([[a.copy() for a in kind] for kind in slots], opt.iterations)
                kind, opt_params, rate = opt._native_config()
                net_entry[2].set_optimizer(kind, opt_params, rate, slots, opt.iterations)
            start = time.perf_counter()
            if use_native:
                n = x.shape[0]
                draw = None
                if batch_size is not None and plan.batches is None:
                    draw = seed if seed < 2**64 else sampler(n, batch_size, sampling, seed)
                steps, history, stopped_by, divergence, best_step = native_loop(
                    net_entry[2], x, y, draw, sampling == "shuffle", rules, native, params, initial, layers, plan)
            else:
                for r in rules:  # the native loop keeps the built-in rules' state in C++
                    if hasattr(r, "reset"):
                        r.reset()
                stream = None
                if batch_size is not None and plan.batches is None:
                    stream = BatchStream(x.shape[0], batch_size, sampling, seed)
                rec = Records(params, plan.every, plan.max_rows)
                stopped_by, divergence, best_step = python_loop(net_entry[2], x, y, stream, rules, callbacks, rec,
                                                                param_names(layers), model, plan)
                steps, history = rec.steps, rec.history(params, batch_size)
            seconds = time.perf_counter() - start
            opt.iterations = saved[1] + steps if plain else net_entry[2].iterations
        except (MemoryError, RuleReturnError):
            _put_back(layers, params, initial, unbuilt)
            if net_entry is not None:  # the optimizer's state too
                for kind, was in zip(opt._slots or [], saved[0]):
                    for a, w in zip(kind, was):
                        np.copyto(a, w)
                opt.iterations = saved[1]
            raise
    finally:
        unmark(layers, owner)  # first: nothing before it in this block can fail and leave the mark
        if net_entry is not None:
            _keep_net(layers, net_entry)
    return stopped_by, steps, history, divergence, params, initial, seconds, best_step


# plain SGD's settings for Net.set_optimizer: no momentum, decay or clip
_PLAIN = (0.0, False, -1.0, -1.0, -1.0, -1.0, 0.0, 0.0, 0.0, False)


def _put_back(layers: List[Dense], params: List[np.ndarray], initial: List[np.ndarray], unbuilt: List[Dense]) -> None:
    """The run's arrays back in the layers, holding the weights from before the run; the layers
    the run built, unbuilt again."""
    if len(initial) == len(params):
        for (d, name, p), w0 in zip(param_slots(layers, params), initial):
            np.copyto(p, w0)
            d[name] = p  # (a callback may have given the layer other arrays meanwhile)
    for layer in unbuilt:
        layer.kernel = layer.bias = None


# ---- the compiled step, kept between runs ------------------------------------------------------
# The compiled Net of a small model is kept between fit calls (its set-up is a few µs of a short
# run), on the model's first layer (``Dense._fit_net``, which copies and pickles leave out).  It
# is taken off the layer while a fit uses it, so two threads never share one.  After set_weights
# (new parameter arrays of the same shapes) it is pointed at the new arrays; it is rebuilt when
# the model's structure or the batch is not the one it was built for.
NET_CACHE_MAX_SCRATCH = 1 << 16  # elements of scratch (activations, gradients, gathered rows)


def _net_for(layers: List[Dense], params: List[np.ndarray], rows: int, gather: bool) -> tuple:
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
    scratch = rows * (2 * sum(lay.units for lay in layers) + layers[0].input_dim + layers[-1].units)
    try:
        net = Net(params, [lay.use_bias for lay in layers], [lay._act for lay in layers], rows, gather)
    except MemoryError:
        size = human_bytes((scratch + sum(p.size for p in params)) * layers[0].dtype.itemsize)
        raise MemoryError(f"fit: could not allocate the compiled step's scratch for batches of {rows} rows "
                          f"(activations and gradients, about {size}); use a smaller batch_size") from None
    return structure, ids, net, scratch <= NET_CACHE_MAX_SCRATCH


def _keep_net(layers: List[Dense], entry: tuple) -> None:
    """Keep the Net for the next fit of these layers, if its scratch is small."""
    if entry[3]:
        layers[0]._fit_net = entry
