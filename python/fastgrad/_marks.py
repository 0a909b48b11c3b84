"""Who is changing a layer: the marks that keep two threads from changing one model at once."""

from __future__ import annotations

import sys
import threading
from typing import TYPE_CHECKING, Callable, Sequence, TypeVar

if TYPE_CHECKING:
    from .layers import Dense

_T = TypeVar("_T")

# fit marks the layers it trains for the whole run, and set_weights and build mark them for their
# own call: layer.__dict__["_fit_owner"] = (token, thread), set in one step under the GIL.  Another
# thread's mark refuses the call (two threads changing one model's arrays would mix their
# changes).  The thread that holds a mark may call set_weights and build (fit's callbacks do), but
# not fit.  A mark whose call is over is taken over: its thread has ended (in a fork's child, say),
# or no frame of its thread holds it any more (a Ctrl-C's KeyboardInterrupt can land in the
# cleanup that takes it off).  Copies and pickles leave marks out (Dense.__getstate__).
_TAKE_OVER = threading.Lock()


def mark(layers: Sequence[Dense], owner: tuple, what: str, same_thread_ok: bool) -> None:
    """Mark ``layers`` for ``owner`` (a token, the current thread), made by a caller that holds it
    in a local variable named ``owner`` until it unmarks; RuntimeError naming ``what`` when
    another holds one.  The caller unmarks in a ``finally``, whatever happened (a refusal leaves
    the marks it made until then)."""
    ordered = layers if len(layers) < 2 else sorted(set(layers), key=id)  # one order: no two refuse each other
    for layer in ordered:
        while True:
            held = layer.__dict__.setdefault("_fit_owner", owner)
            if held is owner or same_thread_ok and held[1] is owner[1]:
                break
            if not held[1].is_alive() or not in_progress(held):
                with _TAKE_OVER:  # one taker; a second sees the first's mark
                    if layer.__dict__.get("_fit_owner") is held:
                        layer.__dict__["_fit_owner"] = owner
                        break
                continue  # the mark changed meanwhile: look again
            if held[1] is owner[1]:
                raise RuntimeError(f"{what}: the fit this callback or rule runs in is training this model; "
                                   "train a copy instead (copy.deepcopy(model))")
            raise RuntimeError(f"{what}: another thread is training or changing this model (fit, set_weights "
                               "or build); use one model from one thread at a time, or give each thread a copy")


def in_progress(held: tuple) -> bool:
    """Whether the call that made the mark ``held`` is still running: a frame of its thread holds
    it as ``owner`` (a thread other than this one is stopped meanwhile: this one holds the GIL)."""
    thread = held[1]
    f = sys._getframe(1) if thread is threading.current_thread() else sys._current_frames().get(thread.ident)
    while f is not None:
        if "owner" in f.f_code.co_varnames and f.f_locals.get("owner") is held:
            return True
        f = f.f_back
    return False


def unmark(layers: Sequence[Dense], owner: tuple) -> None:
    """Take ``owner``'s marks off the layers (another's stay)."""
    for layer in layers:
        if layer.__dict__.get("_fit_owner") is owner:
            del layer.__dict__["_fit_owner"]


def changing(layers: Sequence[Dense], what: str, change: Callable[..., _T], *args) -> _T:
    """``change(*args)`` with marks on ``layers`` meanwhile (set_weights, build)."""
    owner = (object(), threading.current_thread())
    try:
        mark(layers, owner, what, same_thread_ok=True)
        return change(*args)
    finally:
        unmark(layers, owner)
