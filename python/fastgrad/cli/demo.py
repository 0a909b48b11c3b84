"""``fastgrad demo``: each experiment of the walkthrough runs, tells its story, is replayed in
TensorFlow where it is installed, and draws its figure (the stories and figures live in
:mod:`fastgrad.walkthrough`, one module per experiment)."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import threading
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, List, Optional, Tuple

import numpy as np

from .. import walkthrough
from ..plotting import DPI
from .common import EXIT_OK, TF_INSTALL, CliError, checked_name, g, need_matplotlib, out, shown

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    from ..results import FitResult, History

__all__ = ["cmd_demo", "REPLAY_STEPS"]

#: ``demo`` replays at most this many steps of a run in TensorFlow: ``oracle.replay`` runs eager
#: steps of ~5-10 ms each, and the whole demo should take well under half a minute
REPLAY_STEPS = 100

RULES_NOTE = [
    "Stopping rules, as the walkthrough uses them:",
    "  LossDelta(tol)   |L_t - L_(t-1)| <= tol   (E7/E8's loops: tf.abs(L_t - L_(t-1)) <= margin)",
    "  LossBelow(tol)   L_t <= tol               (E4-E6's loops: tf.abs(L_t, L_(t-1)) <= margin, which TensorFlow "
    "reads as |L_t|)",
    "  WeightDelta(tol) max |w_t - w_(t-1)| <= tol (E1)",
    "  Plateau(tol, patience) for noisy minibatch losses; MaxSteps(n) always as a cap.",
]


def _history_head(h: "History", steps: int) -> "History":
    """The first ``steps`` steps of History ``h`` (weights: the rows taken at step <= ``steps``)."""
    weights = weight_steps = None
    if h.weights is not None:
        keep = np.asarray(h.weight_steps) <= steps
        weights = [w[keep] for w in h.weights]
        weight_steps = np.asarray(h.weight_steps)[keep]
    return dataclasses.replace(h, loss=h.loss[:steps], grad_norm=h.grad_norm[:steps],
                               batches=None if h.batches is None else h.batches[:steps],
                               weights=weights, weight_steps=weight_steps)


def _truncated(result: "FitResult", steps: int) -> "FitResult":
    """A copy of ``result`` holding only its first ``steps`` steps (for a shorter replay)."""
    if steps <= 0 or result.steps <= steps:
        return result
    return dataclasses.replace(result, steps=steps, history=_history_head(result.history, steps),
                               stopped_by="truncated")


class _Oracle:
    """Replays runs in TensorFlow when it is installed.

    TensorFlow takes seconds to import, so the import starts in a background thread as soon as
    the demo starts, while the first experiment runs and draws; the first replay waits for it.
    """

    def __init__(self, enabled: bool, steps: int) -> None:
        self.steps = steps
        self.installed = importlib.util.find_spec("tensorflow") is not None
        self.enabled = enabled and self.installed
        self._ok = False
        self._thread: Optional[threading.Thread] = None
        self.told_missing = False
        if self.enabled:
            self._thread = threading.Thread(target=self._import, name="fastgrad-import-tensorflow", daemon=True)
            self._thread.start()

    def _import(self) -> None:
        from .. import oracle

        try:
            self._ok = oracle.available()
        except Exception:  # a broken TensorFlow install: no replays, as if it were missing
            self._ok = False

    @property
    def available(self) -> bool:
        """Whether the replays run (waits for the background import)."""
        self.wait()
        return self.enabled and self._ok

    def wait(self) -> None:
        """Wait for the background import to end.  While it runs, stderr is held aside (see
        fastgrad.oracle), so an error or traceback written then would show late, or be lost at exit."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def replay(self, result: "FitResult", x: np.ndarray, y: np.ndarray) -> Tuple["History", "FitResult"]:
        """(TF's History, the replayed copy of ``result``) for the first ``steps`` steps."""
        from .. import oracle

        short = _truncated(result, self.steps)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return oracle.replay(short, x, y), short

    def lines(self, ex: walkthrough.Experiment[Any]) -> List[str]:
        """One line per run of experiment ``ex``: the largest deviation of its TF replay.

        The figures are :func:`fastgrad.walkthrough.max_deviation`'s.  A run that diverged is
        compared up to its last finite step, and the line says whether TensorFlow diverged at
        the same step.
        """
        if not self.enabled:
            return []
        if not self.available:
            if self.told_missing:
                return []
            self.told_missing = True
            return [f"TensorFlow could not be imported, so the runs are not replayed in it: {TF_INSTALL}"]
        return [self._line(ex, name) for name in ex.results]

    def _line(self, ex: walkthrough.Experiment[Any], name: str) -> str:
        r = ex.results[name]
        h, short = self.replay(r, ex.data["x"], ex.data["y"])
        finite = np.isfinite(short.history.loss) & np.isfinite(h.loss)
        k = int(np.argmin(finite)) if not finite.all() else len(finite)
        note = ""
        if k < short.steps:
            same = not np.isfinite(short.history.loss[k]) and not np.isfinite(h.loss[k])
            note = (f"; TensorFlow diverges at the same step {k + 1} (loss {h.loss[k]})" if same
                    else f"; at step {k + 1} the losses part: fastgrad {short.history.loss[k]}, "
                    f"TensorFlow {h.loss[k]}")
            short = dataclasses.replace(short, steps=k, history=_history_head(short.history, k))
            h = _history_head(h, k)
        with np.errstate(all="ignore"):
            dev = walkthrough.max_deviation(short, h, ex.data["y"])
        part = f"{r.steps} steps" if self.steps <= 0 or r.steps <= self.steps else \
            f"first {self.steps} of {r.steps} steps"
        if note:
            part += f", compared over the {k} finite ones"
        label = "" if len(ex.results) == 1 else f" of {name!r}"
        # a diverging loss is far from 0 at every step: there the step-by-step ratio is the
        # meaningful one (the RMS-residual figure is relative to y, which it outgrows)
        loss = f"loss (step by step) {g(dev['loss_strict'], 2)}" if note else f"loss {g(dev['loss'], 2)}"
        weights = f"weights {g(dev['weights'], 2)}" if short.history.weights is not None else "weights not recorded"
        return f"TensorFlow replay{label} ({part}, {r.dtype}): largest relative deviation {loss}, {weights}{note}"


def _plots_dir(value: str) -> Path:
    """--plots' directory, created when missing; CliError when it cannot be."""
    need_matplotlib("--plots")
    plots = checked_name(value, "--plots")
    try:
        if plots.exists() and not plots.is_dir():
            raise CliError(f"--plots: {shown(plots)} exists and is not a directory")
        plots.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CliError(f"--plots: cannot create directory {shown(plots)}: {e.strerror or e}") from None
    return plots


def _save_figure(module: Any, ex: walkthrough.Experiment[Any], directory: Path) -> Path:
    path = directory / f"{ex.id.lower()}.png"
    fig = module.figure(ex)
    try:
        fig.savefig(path, dpi=DPI)
    except OSError as e:
        raise CliError(f"--plots: cannot write {shown(path)}: {e.strerror or e}") from None
    return path


def cmd_demo(args: argparse.Namespace) -> int:
    """``fastgrad demo``: run the experiments, tell each, replay in TF, draw the figures."""
    modules = walkthrough.MODULES
    unknown = [e for e in args.experiments if e.upper() not in modules]
    if unknown:
        raise CliError(f"unknown experiment {unknown[0]!r}; expected some of {', '.join(modules)} "
                       "(or none, for all of them)")
    ids = [e.upper() for e in args.experiments] or list(modules)
    plots = None if args.plots is None else _plots_dir(args.plots)

    start = time.perf_counter()
    if plots is not None:
        import matplotlib.figure  # noqa: F401  (before TensorFlow's import starts in its thread)
    tf = _Oracle(enabled=not args.no_replay, steps=args.replay_steps)
    try:
        _tell_all(args, ids, plots, tf)
    finally:
        tf.wait()
    out(f"\ndemo finished in {time.perf_counter() - start:.1f} s")
    return EXIT_OK


def _tell_all(args: argparse.Namespace, ids: List[str], plots: Optional[Path], tf: _Oracle) -> None:
    """Run, tell, replay and draw each of the experiments ``ids``, then the note on the rules."""
    modules = walkthrough.MODULES
    if args.no_replay:
        out("TensorFlow replays: off (--no-replay)")
    elif not tf.installed:
        tf.told_missing = True
        out(f"TensorFlow is not installed, so the runs are not replayed in it: {TF_INSTALL}")
    for eid in ids:
        t0 = time.perf_counter()
        module = modules[eid]
        is_replay = getattr(module, "IS_TF_REPLAY", False)
        if is_replay and not tf.available:
            why = "used (--no-replay)" if args.no_replay else "installed" if not tf.installed else "importable"
            out(f"\n== {module.ID}: {module.TITLE}")
            out(f"{module.ID} is E1 replayed in TensorFlow, which is not {why}: {TF_INSTALL}")
            continue
        ex = module.run()
        out(f"\n== {ex.id}: {ex.title}")
        for line in module.tell(ex):
            out(line)
        if not is_replay:
            for line in tf.lines(ex):
                out(line)
        if plots is not None:
            out(f"figure: {_save_figure(module, ex, plots)}")
        out(f"({time.perf_counter() - t0:.2f} s)")
    if any(e in ids for e in ("E4", "E5", "E6", "E7", "E8")):
        out("")
        for line in RULES_NOTE:
            out(line)
