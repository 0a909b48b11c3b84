"""scikit-learn's ``MLPRegressor`` (solvers "sgd" and "adam"), trained by fastgrad's native loop.

    from fastgrad.sklearn import MLPRegressor      # instead of sklearn.neural_network's
    reg = MLPRegressor(hidden_layer_sizes=(16,), solver="sgd", random_state=0).fit(X, y)
    reg.predict(X_test)

The same parameters, fitted attributes and numbers as scikit-learn's own: this estimator replays
``BaseMultilayerPerceptron._fit_stochastic`` (``sklearn/neural_network/_multilayer_perceptron.py``)
draw for draw -- the initial weights (``_init_coef``), each epoch's ``shuffle`` and ``gen_batches``,
the early-stopping ``train_test_split``, all from the same random state in the same order -- and
hands each epoch's batches to :func:`fastgrad.fit` as explicit ``batches`` (no Python per step).
The epoch bookkeeping (loss curve, ``_update_no_improvement_count``, the "invscaling" and
"adaptive" learning rates, the stopping tests and warnings) is scikit-learn's, line for line.

How scikit-learn's updates map onto fastgrad's (O outputs, a batch of B samples):
scikit-learn minimises half the squared error, averaged over every element, plus
``alpha * ||W||^2 / (2 B)``; its kernel gradient is ``(X^T delta + alpha W) / B``.  fastgrad's MSE
gradient is ``2 / O`` times scikit-learn's, so fastgrad runs ``SGD(lr * O / 2, l2=2 alpha / (O B))``
(Keras's momentum and Nesterov rules are scikit-learn's) and ``Adam(lr, epsilon=2 eps / O)`` (Adam
is invariant to the gradient's scale but for epsilon).  With one output the factors are powers of
two, exact in floating point; with O outputs not a power of two each scaled constant is rounded
once (half an ulp), which moves the trajectory by rounding only.  The batch loss scikit-learn
records is fastgrad's MSE / 2 plus the L2 term at the batch's weights (recorded by the run).

Float64 input trains a float64 network and float32 input a float32 one, as in scikit-learn.
scikit-learn is needed (``pip install scikit-learn``, or fastgrad's ``test`` extra).
"""

from __future__ import annotations

import warnings
from numbers import Integral, Real
from typing import Any, List

import numpy as np

try:
    from sklearn.base import BaseEstimator, RegressorMixin
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import r2_score
    from sklearn.model_selection import train_test_split
    from sklearn.utils import check_random_state, column_or_1d, gen_batches
    from sklearn.utils.validation import check_is_fitted
except ImportError as e:  # scikit-learn is optional for fastgrad
    raise ImportError(
        "fastgrad.sklearn needs scikit-learn: pip install scikit-learn (or fastgrad[test])") from e
try:
    from sklearn.utils.validation import validate_data as _validate_data
except ImportError:  # scikit-learn < 1.6: the method form
    def _validate_data(est, *args, **kwargs):
        return est._validate_data(*args, **kwargs)

from .layers import Dense, Sequential
from .optimizers import SGD, Adam
from .results import DivergenceError
from .stop import MaxSteps as _MaxSteps
from .training import fit as _fg_fit

__all__ = ["MLPRegressor"]

_USE_SKLEARN = "use scikit-learn's own sklearn.neural_network.MLPRegressor for it"
_NONFINITE = ("Solver produced non-finite parameter weights. The input data may contain large "
              "values and need to be preprocessed.")


class MLPRegressor(RegressorMixin, BaseEstimator):
    """scikit-learn's multi-layer perceptron regressor, trained by fastgrad.

    The parameters are scikit-learn's ``MLPRegressor``'s, with its defaults; see its documentation.
    Supported: ``activation`` "relu" or "identity", ``solver`` "sgd" or "adam", ``loss``
    "squared_error"; other values ("tanh", "logistic", "lbfgs", "poisson") are a ValueError (use
    scikit-learn's own for them).  ``max_fun`` is accepted and unused, as scikit-learn's stochastic
    solvers leave it.  ``momentum`` must be below 1 (fastgrad's SGD).

    Fitted attributes, as scikit-learn's: ``coefs_``, ``intercepts_``, ``loss_``, ``loss_curve_``,
    ``best_loss_``, ``validation_scores_``, ``best_validation_score_``, ``n_iter_``, ``t_``,
    ``n_layers_``, ``n_outputs_``, ``out_activation_``, ``n_features_in_``, ``feature_names_in_``.
    """

    def __init__(self, loss="squared_error", hidden_layer_sizes=(100,), activation="relu", *,
                 solver="adam", alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True, random_state=None,
                 tol=1e-4, verbose=False, warm_start=False, momentum=0.9, nesterovs_momentum=True,
                 early_stopping=False, validation_fraction=0.1, beta_1=0.9, beta_2=0.999, epsilon=1e-8,
                 n_iter_no_change=10, max_fun=15000):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.loss = loss
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun

    # ---- public API ----------------------------------------------------------------------------
    def fit(self, X, y):
        """Fit the network to ``X`` (n_samples, n_features) and ``y`` (n_samples,) or
        (n_samples, n_outputs), as scikit-learn's ``MLPRegressor.fit``.  Returns self."""
        return self._fit(X, y, incremental=False)

    def partial_fit(self, X, y):
        """One epoch over ``(X, y)``, continuing from the current weights and optimizer state, as
        scikit-learn's ``MLPRegressor.partial_fit``.  Returns self."""
        return self._fit(X, y, incremental=True)

    def predict(self, X):
        """The network's output for ``X``: (n_samples,) for one output, else (n_samples, n_outputs)."""
        check_is_fitted(self)
        X = _validate_data(self, X, dtype=(np.float64, np.float32), reset=False)
        return self._predict(X)

    # ---- the forward pass, as scikit-learn's _forward_pass_fast --------------------------------
    def _predict(self, X):
        a = X
        for i, (k, b) in enumerate(zip(self.coefs_, self.intercepts_)):
            a = a @ k
            a += b
            if i != len(self.coefs_) - 1 and self.activation == "relu":
                np.maximum(a, 0, out=a)
        return a.ravel() if a.shape[1] == 1 else a

    def _score(self, X, y):
        pred = self._predict(X)
        if not np.isfinite(pred).all():
            return np.nan
        return r2_score(y, pred)

    # ---- checks --------------------------------------------------------------------------------
    def _check_params(self) -> List[int]:
        """scikit-learn's parameter constraints (ValueError / TypeError); the hidden sizes."""
        def number(name, low, high=None, low_open=False, high_open=False, integral=False):
            v = getattr(self, name)
            kind = Integral if integral else Real
            if isinstance(v, bool) or not isinstance(v, kind):
                raise TypeError(f"{name}: expected {'an int' if integral else 'a number'}, got {v!r}")
            ok = (v > low if low_open else v >= low) and (
                high is None or (v < high if high_open else v <= high))
            if not ok:
                raise ValueError(f"{name}: expected a value in {'(' if low_open else '['}{low}, "
                                 f"{'inf' if high is None else high}{')' if high_open or high is None else ']'}"
                                 f", got {v!r}")

        def option(name, allowed, supported):
            v = getattr(self, name)
            if not isinstance(v, str) or v not in allowed:
                raise ValueError(f"{name}: expected one of {sorted(allowed)}, got {v!r}")
            if v not in supported:
                raise ValueError(f"{name}={v!r} is not supported by fastgrad's MLPRegressor "
                                 f"(only {sorted(supported)}); {_USE_SKLEARN}")

        option("activation", {"identity", "logistic", "tanh", "relu"}, {"identity", "relu"})
        option("solver", {"lbfgs", "sgd", "adam"}, {"sgd", "adam"})
        option("loss", {"squared_error", "poisson"}, {"squared_error"})
        option("learning_rate", {"constant", "invscaling", "adaptive"}, {"constant", "invscaling", "adaptive"})
        number("alpha", 0)
        if not (isinstance(self.batch_size, str) and self.batch_size == "auto"):
            number("batch_size", 1, integral=True)
        number("learning_rate_init", 0, low_open=True)
        number("power_t", 0)
        number("max_iter", 1, integral=True)
        number("tol", 0)
        number("momentum", 0, 1, high_open=True)  # fastgrad's SGD needs momentum < 1
        number("validation_fraction", 0, 1, high_open=True)
        number("beta_1", 0, 1, high_open=True)
        number("beta_2", 0, 1, high_open=True)
        number("epsilon", 0, low_open=True)
        if not (isinstance(self.n_iter_no_change, Real) and self.n_iter_no_change == np.inf):
            number("n_iter_no_change", 1, integral=True)
        number("max_fun", 1, integral=True)
        for name in ("shuffle", "warm_start", "nesterovs_momentum", "early_stopping"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise TypeError(f"{name}: expected a bool, got {getattr(self, name)!r}")
        sizes = self.hidden_layer_sizes
        sizes = list(sizes) if hasattr(sizes, "__iter__") else [sizes]
        for s in sizes:
            if isinstance(s, bool) or not isinstance(s, Integral) or s <= 0:
                raise ValueError(f"hidden_layer_sizes must be > 0, got {sizes}.")
        return [int(s) for s in sizes]

    # ---- training, as scikit-learn's _fit --------------------------------------------------------
    def _fit(self, X, y, incremental):
        hidden = self._check_params()
        if incremental and self.early_stopping:
            raise ValueError("partial_fit does not support early_stopping=True")
        first_pass = not hasattr(self, "coefs_") or (not self.warm_start and not incremental)
        X, y = _validate_data(self, X, y, multi_output=True, y_numeric=True,
                              dtype=(np.float64, np.float32), reset=first_pass)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if y.ndim == 1:
            y = y.reshape((-1, 1))
        n_features = X.shape[1]
        if not first_pass and y.shape[1] != self.n_outputs_:
            raise ValueError(f"y: expected {self.n_outputs_} output(s), as the fitted network has, "
                             f"got {y.shape[1]}")
        self.n_outputs_ = y.shape[1]
        layer_units = [n_features] + hidden + [self.n_outputs_]
        self._random_state = check_random_state(self.random_state)
        if first_pass:
            self._initialize(layer_units, X.dtype)
        elif [c.shape for c in self.coefs_] != list(zip(layer_units[:-1], layer_units[1:])):
            raise ValueError(f"hidden_layer_sizes: the fitted network has layers "
                             f"{[c.shape[1] for c in self.coefs_[:-1]]}, got {hidden}")
        self._fit_stochastic(X, y, incremental)
        if not all(np.isfinite(w).all() for w in self.coefs_ + self.intercepts_):
            raise ValueError(_NONFINITE)
        return self

    def _initialize(self, layer_units, dtype):
        self.n_iter_ = 0
        self.t_ = 0
        self.n_layers_ = len(layer_units)
        self.out_activation_ = "identity"
        self.coefs_, self.intercepts_ = [], []
        for fan_in, fan_out in zip(layer_units[:-1], layer_units[1:]):
            # scikit-learn's _init_coef: Glorot uniform (factor 6 for relu and identity), the
            # coef then the intercept drawn from the estimator's random state
            bound = np.sqrt(6.0 / (fan_in + fan_out))
            coef = self._random_state.uniform(-bound, bound, (fan_in, fan_out))
            intercept = self._random_state.uniform(-bound, bound, fan_out)
            self.coefs_.append(coef.astype(dtype, copy=False))
            self.intercepts_.append(intercept.astype(dtype, copy=False))
        self._best_coefs = [c.copy() for c in self.coefs_]
        self._best_intercepts = [i.copy() for i in self.intercepts_]
        self.loss_curve_ = []
        self._no_improvement_count = 0
        if self.early_stopping:
            self.validation_scores_ = []
            self.best_validation_score_ = -np.inf
            self.best_loss_ = None
        else:
            self.best_loss_ = np.inf
            self.validation_scores_ = None
            self.best_validation_score_ = None

    def _new_solver(self) -> "_Solver":
        dtype = self.coefs_[0].dtype.name
        act = "relu" if self.activation == "relu" else "linear"
        layers = [Dense(c.shape[1], act if i < len(self.coefs_) - 1 else "linear", dtype=dtype)
                  for i, c in enumerate(self.coefs_)]
        model = Sequential(layers)
        model.build(self.coefs_[0].shape[0])
        scale = 2.0 / self.n_outputs_  # fastgrad's MSE gradient / scikit-learn's
        if self.solver == "sgd":
            opt = SGD(self.learning_rate_init / scale, momentum=self.momentum,
                      nesterov=bool(self.nesterovs_momentum))
        else:
            opt = Adam(self.learning_rate_init, beta_1=self.beta_1, beta_2=self.beta_2,
                       epsilon=self.epsilon * scale)
        return _Solver(model, opt, scale, self)

    def _fit_stochastic(self, X, y, incremental):
        if not incremental or getattr(self, "_solver", None) is None:
            self._solver = self._new_solver()
        solver = self._solver
        solver.model.set_weights([w for pair in zip(self.coefs_, self.intercepts_) for w in pair])

        early_stopping = self.early_stopping
        if early_stopping:
            X_train, X_val, y_train, y_val = train_test_split(
                X, y, random_state=self._random_state, test_size=self.validation_fraction)
            if X_val.shape[0] < 2:
                raise ValueError("The validation set is too small. Increase 'validation_fraction' "
                                 "or the size of your dataset.")
        else:
            X_train, y_train, X_val, y_val = X, y, None, None
        n_samples = X_train.shape[0]
        sample_idx = np.arange(n_samples, dtype=int)
        if self.batch_size == "auto":
            batch_size = min(200, n_samples)
        else:
            if self.batch_size > n_samples:
                warnings.warn("Got `batch_size` less than 1 or larger than sample size. It is going to be clipped")
            batch_size = int(np.clip(self.batch_size, 1, n_samples))
        X_train = np.ascontiguousarray(X_train, dtype=solver.model.dtype)
        y_train = np.ascontiguousarray(y_train, dtype=solver.model.dtype)

        try:
            self.n_iter_ = 0
            for _ in range(self.max_iter):
                if self.shuffle:
                    # sklearn.utils.shuffle's own draw (resample without replacement: shuffle an
                    # arange with the random state, index by it), without its parameter checks,
                    # which cost more than a small epoch's training
                    perm = np.arange(len(sample_idx))
                    self._random_state.shuffle(perm)
                    sample_idx = sample_idx[perm]
                losses = solver.epoch(X_train, y_train, sample_idx, batch_size)
                if losses is None:  # Ctrl-C: the run kept the weights of its last step
                    raise KeyboardInterrupt
                accumulated_loss = 0.0
                for batch_loss, size in losses:
                    accumulated_loss += batch_loss * size
                self._sync_weights()
                self.n_iter_ += 1
                self.loss_ = accumulated_loss / n_samples
                self.t_ += n_samples
                self.loss_curve_.append(self.loss_)
                if self.verbose:
                    print("Iteration %d, loss = %.8f" % (self.n_iter_, self.loss_))
                self._update_no_improvement_count(early_stopping, X_val, y_val)
                solver.iteration_ends(self.t_)
                if self._no_improvement_count > self.n_iter_no_change:
                    if early_stopping:
                        msg = ("Validation score did not improve more than tol=%f for %d consecutive epochs."
                               % (self.tol, self.n_iter_no_change))
                    else:
                        msg = ("Training loss did not improve more than tol=%f for %d consecutive epochs."
                               % (self.tol, self.n_iter_no_change))
                    if solver.trigger_stopping(msg, self.verbose):
                        break
                    self._no_improvement_count = 0
                if incremental:
                    break
                if self.n_iter_ == self.max_iter:
                    warnings.warn("Stochastic Optimizer: Maximum iterations (%d) reached and the "
                                  "optimization hasn't converged yet." % self.max_iter, ConvergenceWarning)
        except KeyboardInterrupt:
            self._sync_weights()
            warnings.warn("Training interrupted by user.")
        if early_stopping:
            self.coefs_ = self._best_coefs
            self.intercepts_ = self._best_intercepts

    def _sync_weights(self):
        weights = self._solver.model.get_weights()
        self.coefs_, self.intercepts_ = weights[0::2], weights[1::2]

    def _update_no_improvement_count(self, early_stopping, X_val, y_val):
        if early_stopping:
            self.validation_scores_.append(self._score(X_val, y_val))
            if self.verbose:
                print("Validation score: %f" % self.validation_scores_[-1])
            last = self.validation_scores_[-1]
            if last < self.best_validation_score_ + self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if last > self.best_validation_score_:
                self.best_validation_score_ = last
                self._best_coefs = [c.copy() for c in self.coefs_]
                self._best_intercepts = [i.copy() for i in self.intercepts_]
        else:
            if self.loss_curve_[-1] > self.best_loss_ - self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if self.loss_curve_[-1] < self.best_loss_:
                self.best_loss_ = self.loss_curve_[-1]

    # ---- pickling: the fastgrad optimizer holds a weak reference to its model ------------------
    def __getstate__(self):
        state = super().__getstate__()
        if state.get("_solver") is not None:
            state = dict(state)
            state["_solver"] = state["_solver"].portable()
        return state

    def __setstate__(self, state):
        solver = state.get("_solver")
        if isinstance(solver, dict):
            state = dict(state)
            state["_solver"] = _Solver.restore(solver, self)
        super().__setstate__(state)


class _Solver:
    """The fastgrad model and optimizer behind a fit, and scikit-learn's per-epoch learning-rate
    logic (``SGDOptimizer.iteration_ends`` / ``trigger_stopping``) on scikit-learn's scale."""

    def __init__(self, model: Sequential, opt, scale: float, est: MLPRegressor) -> None:
        self.model, self.opt, self.scale = model, opt, scale
        self.alpha = float(est.alpha)
        self.kind = est.solver
        self.lr_schedule = est.learning_rate
        self.learning_rate_init = float(est.learning_rate_init)
        self.power_t = est.power_t
        self.learning_rate = float(est.learning_rate_init)  # scikit-learn's scale

    def epoch(self, X, y, sample_idx, batch_size):
        """One epoch's batches (``gen_batches``'s: the full ones, then the rest) through the native
        loop; [(scikit-learn's batch loss, batch size)], or None when Ctrl-C stopped the run."""
        n = len(sample_idx)
        full = n // batch_size
        chunks = []
        if full:
            chunks.append(sample_idx[:full * batch_size].reshape(full, batch_size))
        if n > full * batch_size:
            chunks.append(sample_idx[full * batch_size:].reshape(1, -1))
        if self.kind == "sgd":
            self.opt.learning_rate = self.learning_rate / self.scale
        out = []
        for batches in chunks:
            size = batches.shape[1]
            self.opt.l2 = self.alpha / size * self.scale if self.alpha else None
            try:
                r = _fg_fit(self.model, X, y, optimizer=self.opt, batches=batches, loop="native", seed=0,
                            stop=[_MaxSteps(len(batches))],  # exactly these batches, stated
                            record_weights=bool(self.alpha), on_divergence="raise")
            except DivergenceError:
                raise ValueError(_NONFINITE) from None
            if r.stopped_by == "interrupted":
                return None
            loss = r.history.loss.astype(np.float64) / 2
            if self.alpha:
                # scikit-learn's L2 term at each batch's weights: the kernels before each step
                sq = sum(np.einsum("ij,ij->i", k[:-1].reshape(len(k) - 1, -1), k[:-1].reshape(len(k) - 1, -1))
                         for k in r.history.weights[0::2])
                loss = loss + (0.5 * self.alpha) * sq / size
            out.extend((float(v), size) for v in loss)
        return out

    def iteration_ends(self, time_step):
        if self.kind == "sgd" and self.lr_schedule == "invscaling":
            self.learning_rate = self.learning_rate_init / (time_step + 1) ** self.power_t

    def trigger_stopping(self, msg, verbose):
        if self.kind != "sgd" or self.lr_schedule != "adaptive":
            if verbose:
                print(msg + " Stopping.")
            return True
        if self.learning_rate <= 1e-6:
            if verbose:
                print(msg + " Learning rate too small. Stopping.")
            return True
        self.learning_rate /= 5.0
        if verbose:
            print(msg + " Setting learning rate to %f" % self.learning_rate)
        return False

    # the optimizer's slots are bound to the model by a weak reference, which pickle refuses:
    # pickle the arrays and bind them again on load
    def portable(self) -> dict:
        state = {k: v for k, v in self.__dict__.items() if k != "opt"}
        opt = self.opt
        state["opt_state"] = (opt.iterations, [a.copy() for a in opt.variables])
        state["opt_config"] = (type(opt), {k: v for k, v in opt.__dict__.items() if not k.startswith("_")
                                           and k != "iterations"})
        return state

    @classmethod
    def restore(cls, state: dict, est: Any) -> "_Solver":
        self = cls.__new__(cls)
        state = dict(state)
        kind, config = state.pop("opt_config")
        iterations, slots = state.pop("opt_state")
        self.__dict__.update(state)
        self.opt = kind(**config)
        self.opt.iterations = iterations
        if slots:
            params = [w for layer in self.model.layers for w in layer._params()]
            fresh = self.opt._slots_for(self.model, params)
            flat = [a for kind_ in fresh for a in kind_]
            for dst, src in zip(flat, slots):
                dst[...] = src
        return self
