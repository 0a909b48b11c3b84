"""TensorFlow as the oracle: the same model, weights and batches through ``tf.GradientTape``,
and, in :func:`replay`, Keras's own optimizer.

Needs the ``tf`` extra (``pip install 'fastgrad[tf]'``; ``replay`` needs its Keras 3, which comes
with TensorFlow 2.16 and later).  TensorFlow is imported on first use, never by ``import fastgrad``.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import threading
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .gradients import _prepare

__all__ = ["value_and_grad", "replay", "available"]

_INSTALL = "pip install 'fastgrad[tf]'"


def available() -> bool:
    """Whether TensorFlow can be imported."""
    try:
        _tf()
    except ImportError:
        return False
    return True


def _tf():
    """TensorFlow, imported on first use without its start-up log lines."""
    try:
        if "tensorflow" not in sys.modules:
            with _IMPORT_LOCK:  # one import at a time: each swaps the process's stderr
                if "tensorflow" not in sys.modules:
                    _import_quietly()
        import tensorflow as tf
    except ImportError as e:
        raise ImportError(f"fastgrad.oracle needs TensorFlow, which is not installed: {_INSTALL}") from e
    return tf


def _keras():
    """Keras 3, the one TensorFlow 2.16 and later come with (replay runs its optimizers)."""
    _tf()
    import keras

    if int(keras.__version__.split(".")[0]) < 3:
        raise ImportError(f"fastgrad.oracle.replay needs Keras 3 (TensorFlow 2.16 or later), found Keras "
                          f"{keras.__version__}: {_INSTALL}")
    return keras


_IMPORT_LOCK = threading.Lock()
# Lines TensorFlow's C++ side writes to stderr while it is imported, before its logging reads
# TF_CPP_MIN_LOG_LEVEL: absl's banner and INFO/WARNING lines such as oneDNN's notice.  In
# ``fastgrad demo`` they would land in the middle of E1 (the import runs in a background thread).
_ABSL_BANNER = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
_ABSL_LINE = re.compile(r"^([IWEF])\d{4} \d\d:\d\d:\d\d")
_ABSL_LEVELS = {"I": 0, "W": 1, "E": 2, "F": 3}


def _import_quietly() -> None:
    """Import TensorFlow with TF_CPP_MIN_LOG_LEVEL at 2 unless set, and drop the C++ log lines
    it writes meanwhile below that level.  The process's stderr goes to a temporary file during
    the import; what else was written there is passed on once the import ends."""
    level_text = os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    level = int(level_text) if level_text.strip().isdigit() else 0
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to take over
        import tensorflow  # noqa: F401

        return
    with tempfile.TemporaryFile() as log:  # a file, not a pipe: nothing blocks however much is written
        _flush_stderr()
        os.dup2(log.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        finally:
            _flush_stderr()
            os.dup2(saved, 2)
            os.close(saved)
            log.seek(0)
            kept = [line for line in log.read().decode("utf-8", "replace").splitlines(keepends=True)
                    if not _below(line, level)]
            if kept and sys.stderr is not None:
                sys.stderr.write("".join(kept))
                _flush_stderr()


def _below(line: str, level: int) -> bool:
    """Whether ``line`` is a TensorFlow C++ log line below TF_CPP_MIN_LOG_LEVEL ``level``."""
    if line.rstrip("\n") == _ABSL_BANNER:
        return level >= 1
    m = _ABSL_LINE.match(line)
    return bool(m) and _ABSL_LEVELS[m.group(1)] < level


def _flush_stderr() -> None:
    try:
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):  # closed, or replaced by an object without flush
        pass


def _loss(tf, spec, variables, x, y):
    """MSE of the Dense stack ``spec`` [(activation, use_bias)] with ``variables`` on x."""
    a = x
    i = 0
    for activation, use_bias in spec:
        a = tf.matmul(a, variables[i])
        i += 1
        if use_bias:
            a = a + variables[i]
            i += 1
        if activation == "relu":
            a = tf.nn.relu(a)
    return tf.reduce_mean(tf.square(a - y))


def _spec(layers) -> List[Tuple[str, bool]]:
    return [(layer.activation, layer.use_bias) for layer in layers]


def value_and_grad(model, x, y) -> Tuple[float, List[np.ndarray]]:
    """TensorFlow's MSE and gradients for ``model`` at its current weights.

    The same contract as :func:`fastgrad.value_and_grad`: ``(loss, [dk1, db1, ...])``.
    """
    tf = _tf()
    layers, x, y = _prepare(model, x, y)
    weights = [w for layer in layers for w in layer._params()]
    variables = [tf.Variable(w) for w in weights]
    with tf.GradientTape() as tape:
        loss = _loss(tf, _spec(layers), variables, tf.constant(x), tf.constant(y))
    grads = tape.gradient(loss, variables)
    return float(loss.numpy()), [g.numpy() for g in grads]


def replay(result, x, y, initial_weights: Optional[Sequence[np.ndarray]] = None):
    """Run ``result``'s steps again in TensorFlow with Keras's own optimizer, and return
    TensorFlow's :class:`History`.

    Every step uses the batch ``result`` used (``result.history.batches``, or all of ``x``),
    from ``initial_weights`` (default: the weights ``result`` started from): the loss and its
    gradients through ``tf.GradientTape``, then ``apply_gradients`` of a
    ``keras.optimizers.SGD``/``Adam`` built from ``result.optimizer`` (its arguments, and its
    learning rate or ``keras.optimizers.schedules`` schedule), with its ``iterations`` set to
    where the run's optimizer started, so that a schedule continues as it did.

    The replay's optimizer state (momentum, Adam's moments) starts from zero: Keras's slots cannot
    be rebuilt from a result, so a run whose optimizer held such state from an earlier fit (an
    SGD with momentum, or an Adam, started at ``iterations > 0``) is refused with a ValueError.
    A plain SGD carries no state and replays from any ``iterations``.

    Under float64, Keras computes with a Python float hyperparameter in float32 (with TensorFlow,
    ``ops.cast(0.9, "float64")`` rounds 0.9 to float32 first): SGD's momentum, Adam's betas in its
    bias correction, the weight decay, and every schedule, whose dtype is that of
    ``ops.convert_to_tensor(initial_learning_rate)``.  For a float64 run the replay hands Keras
    its float arguments as NumPy float64 scalars, with which it computes all of them in float64,
    as fastgrad does; and it builds the optimizer under the run's dtype as
    ``keras.config.floatx()``, the dtype of a constant rate's variable.

    The returned history records TF's loss and gradient norm at every step, its weights after
    every step (``weights[p]`` has ``steps + 1`` rows; row 0 is the start) and, for a schedule,
    the rate of every step (``learning_rate``).
    """
    from .results import FitResult, History

    if not isinstance(result, FitResult):
        raise TypeError(f"result: expected the FitResult returned by fastgrad.fit, got {type(result).__name__}")
    spec = result.model_spec
    dtype = np.dtype(result.dtype)
    described = _described_optimizer(result)
    start = result.initial_weights if initial_weights is None else list(initial_weights)
    if len(start) != len(result.initial_weights):
        raise ValueError(f"initial_weights: expected {len(result.initial_weights)} arrays, got {len(start)}")
    from ._validation import as_array, check_finite, data

    start = [as_array(f"initial_weights[{j}]", w, dtype) for j, w in enumerate(start)]
    for j, (w, ref) in enumerate(zip(start, result.initial_weights)):
        if w.shape != ref.shape:
            raise ValueError(f"initial_weights[{j}]: expected shape {ref.shape}, got {w.shape}")
        check_finite(f"initial_weights[{j}]", w)

    x, y = data(x, y, dtype, outputs=result.initial_weights[-2 if spec[-1][1] else -1].shape[-1])
    n = result.samples
    if n is not None and x.shape[0] != n:
        raise ValueError(f"x: expected the {n} samples the run trained on, got shape {x.shape}")
    width = result.initial_weights[0].shape[0]
    if x.shape[1] != width:
        raise ValueError(f"x: expected {width} features, as the run's model takes, got shape {x.shape}")
    tf = _tf()
    variables = [tf.Variable(w) for w in start]
    optimizer = _keras_optimizer(described, dtype, variables)
    scheduled = isinstance(described["learning_rate"], dict)
    steps = result.steps
    losses = np.empty(steps)
    norms = np.empty(steps)
    rates = np.empty(steps) if scheduled else None
    weights = [np.empty((steps + 1,) + w.shape, dtype=dtype) for w in start]
    for p, w in enumerate(start):
        weights[p][0] = w
    batches = result.history.batches
    xt, yt = tf.constant(x), tf.constant(y)
    for t in range(steps):
        if batches is None:
            xb, yb = xt, yt
        else:
            xb, yb = tf.constant(x[batches[t]]), tf.constant(y[batches[t]])
        with tf.GradientTape() as tape:
            loss = _loss(tf, spec, variables, xb, yb)
        grads = tape.gradient(loss, variables)
        if rates is not None:
            rates[t] = float(optimizer.learning_rate.numpy())  # the schedule at this step's iterations
        optimizer.apply_gradients(zip(grads, variables))
        losses[t] = float(loss.numpy())
        norms[t] = float(tf.linalg.global_norm(grads).numpy())
        for p, v in enumerate(variables):
            weights[p][t + 1] = v.numpy()
    return History(
        loss=losses,
        grad_norm=norms,
        batches=None if batches is None else batches.copy(),
        weights=weights,
        weight_steps=np.arange(steps + 1),
        learning_rate=rates,
    )


def _described_optimizer(result) -> dict:
    """``result.optimizer``, checked for what a replay can rebuild (a result without one ran
    plain SGD at ``result.learning_rate``)."""
    described = getattr(result, "optimizer", None)
    if described is None:
        return {"class": "SGD", "config": {}, "learning_rate": float(result.learning_rate), "iterations": 0}
    if described["class"] not in _OPTIMIZERS:
        raise ValueError(f"result.optimizer: cannot replay a {described['class']!r} optimizer "
                         f"(expected one of {sorted(_OPTIMIZERS)})")
    stateful = described["class"] == "Adam" or described["config"].get("momentum", 0.0) != 0.0
    if stateful and described["iterations"] > 0:
        raise ValueError(
            f"result: the run's {described['class']} started at iterations {described['iterations']}, with "
            "momentum/velocity state from an earlier fit, which a replay cannot rebuild (its slots would "
            "start from zero); replay a run that started with a fresh optimizer")
    return described


_OPTIMIZERS = ("SGD", "Adam")
_SCHEDULES = ("ExponentialDecay", "InverseTimeDecay", "PiecewiseConstantDecay", "CosineDecay")
# keras.config.floatx is process-wide: one replay at a time switches it
_FLOATX_LOCK = threading.Lock()


def _keras_optimizer(described: dict, dtype: np.dtype, variables: list):
    """Keras's optimizer as ``described``, built on ``variables``, its iterations where the run's
    started."""
    keras = _keras()
    rate = described["learning_rate"]
    if not isinstance(rate, dict):
        learning_rate = float(rate)  # Keras takes a Python float only
    else:
        if rate["class"] not in _SCHEDULES:
            raise ValueError(f"result.optimizer: cannot replay the schedule {rate['class']!r} "
                             f"(expected one of {list(_SCHEDULES)})")
        learning_rate = getattr(keras.optimizers.schedules, rate["class"])(**_in_dtype(rate["config"], dtype))
    with _FLOATX_LOCK:
        saved = keras.config.floatx()
        keras.config.set_floatx(dtype.name)  # the learning-rate variable's dtype
        try:
            optimizer = getattr(keras.optimizers, described["class"])(
                learning_rate=learning_rate, **_in_dtype(described["config"], dtype))
            optimizer.build(variables)
        finally:
            keras.config.set_floatx(saved)
    optimizer.iterations.assign(int(described["iterations"]))
    return optimizer


def _in_dtype(config: dict, dtype: np.dtype) -> dict:
    """Keras's arguments: for a float64 run, every float (in lists too) as a NumPy float64, so
    that Keras computes with it in float64 (see replay); Python floats otherwise, as Keras's
    users give them."""
    if dtype != np.float64:
        return dict(config)

    def f64(v):
        if isinstance(v, (list, tuple)):
            return [f64(e) for e in v]
        return np.float64(v) if isinstance(v, float) else v

    return {k: f64(v) for k, v in config.items()}
