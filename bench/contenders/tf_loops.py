"""TensorFlow: eager, as the walkthrough writes its loop, and a ``tf.function`` step (with Keras's own
SGD-with-momentum or Adam for the workloads that use them)."""

from __future__ import annotations

import os
import time

import numpy as np

from contenders.base import Contender, Runner, segment_bounds
from workloads import Workload


def _import_tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    return tf


class TFEagerRunner(Runner):
    """The walkthrough's loop: a custom Keras Dense layer, ``tf.GradientTape``, the Keras MSE,
    ``assign_sub`` on each variable, and ``current_loss.numpy()`` recorded every step.

    Two changes that Keras 3 forces: the layer creates its variables with ``add_weight`` (Keras 3
    no longer tracks a ``tf.Variable`` set as an attribute), and the MSE is ``tf.keras.metrics.mse``
    (``tf.keras.metrics.mean_squared_error`` is gone; ``mse`` is the same function).  Batches come
    from the shared index array instead of ``dataset.sample``.
    """

    segmentable = True

    def __init__(self, tf, w: Workload) -> None:
        self.tf, self.w = tf, w
        init = w.init

        class CustomDense(tf.keras.layers.Layer):
            def __init__(self, units, activation, use_bias, kernel, bias):
                super().__init__()
                self.units = units
                self.activation = tf.keras.activations.get(activation)
                self.use_bias = use_bias
                self._k0, self._b0 = kernel, bias

            def build(self, input_shape):
                self.wgt = self.add_weight(shape=self._k0.shape, initializer=tf.keras.initializers.Constant(self._k0),
                                           trainable=True, name="weights")
                if self.use_bias:
                    self.bs = self.add_weight(shape=self._b0.shape, initializer="zeros", trainable=True, name="biases")
                super().build(input_shape)

            def call(self, inputs):
                z = tf.matmul(inputs, self.wgt)
                if self.use_bias:
                    z = z + self.bs
                return self.activation(z)

        self.dense = []
        i = 0
        for units, act, use_bias in w.layers:
            k = init[i]
            b = init[i + 1] if use_bias else None
            i += 2 if use_bias else 1
            layer = CustomDense(units, act, use_bias, k, b)
            layer.build(input_shape=(k.shape[0],))
            self.dense.append(layer)

    def reset(self):
        i = 0
        for layer in self.dense:
            layer.wgt.assign(self.w.init[i])
            i += 1
            if layer.use_bias:
                layer.bs.assign(self.w.init[i])
                i += 1

    def run(self, steps, segments=1):
        tf, w = self.tf, self.w
        x, y, lr, batches = w.x, w.y, w.lr, w.batches
        dense = self.dense
        loss_list = []
        stamps = []
        for a, b in segment_bounds(steps, segments):
            for t in range(a, b):
                if batches is None:
                    random_x, random_y = x, y
                else:
                    idx = batches[t]
                    random_x, random_y = x[idx], y[idx]
                with tf.GradientTape() as tape:
                    h = random_x
                    for layer in dense:
                        h = layer(h)
                    current_loss = tf.reduce_mean(tf.keras.metrics.mse(random_y, h))
                variables = [v for layer in dense for v in layer.trainable_variables]
                gradient = tape.gradient(current_loss, variables)
                for v, g in zip(variables, gradient):
                    v.assign_sub(lr * g)
                loss_list.append(current_loss.numpy())
            if segments > 1:
                stamps.append(time.perf_counter())
        return np.asarray(loss_list, dtype=np.float64), stamps

    def weights(self):
        return [np.array(v.numpy()) for layer in self.dense for v in layer.trainable_variables]


class TFFunctionRunner(Runner):
    """A ``tf.function`` step (gather, forward, tape, ``assign_sub``) called from a Python loop; for
    another optimizer than plain SGD, ``apply_gradients`` of ``keras.optimizers.SGD``/``Adam`` in
    the step instead of ``assign_sub``."""

    segmentable = True

    def __init__(self, tf, w: Workload) -> None:
        self.tf, self.w = tf, w
        self.vars = [tf.Variable(a) for a in w.init]
        X, Y = tf.constant(w.x), tf.constant(w.y)
        spec, lr, variables = w.layers, tf.constant(w.lr, tf.float32), self.vars

        def loss_of(xb, yb):
            a, i = xb, 0
            for _, act, use_bias in spec:
                a = tf.matmul(a, variables[i])
                i += 1
                if use_bias:
                    a = a + variables[i]
                    i += 1
                if act == "relu":
                    a = tf.nn.relu(a)
            return tf.reduce_mean(tf.square(a - yb))

        self.keras_opt = keras_opt = None if w.opt.plain else _keras_optimizer(w)
        self.opt_state = []
        if keras_opt is not None:
            keras_opt.build(variables)
            # its state, zeroed by reset(): iterations and the slots, not the learning rate
            self.opt_state = [v for v in keras_opt.variables if "learning_rate" not in v.path]

        def update(xb, yb):
            with tf.GradientTape() as tape:
                loss = loss_of(xb, yb)
            grads = tape.gradient(loss, variables)
            if keras_opt is not None:
                keras_opt.apply_gradients(zip(grads, variables))
            else:
                for v, g in zip(variables, grads):
                    v.assign_sub(lr * g)
            return loss

        # named functions, not lambdas: AutoGraph cannot find a lambda's source and warns
        def full_step():
            return update(X, Y)

        def batch_step(idx):
            return update(tf.gather(X, idx), tf.gather(Y, idx))

        self.step = tf.function(full_step if w.batches is None else batch_step)

    def reset(self):
        for v, a in zip(self.vars, self.w.init):
            v.assign(a)
        for v in self.opt_state:
            v.assign(np.zeros(v.shape, dtype=v.dtype))

    def run(self, steps, segments=1):
        batches, step = self.w.batches, self.step
        losses = np.empty(steps)
        stamps = []
        for a, b in segment_bounds(steps, segments):
            if batches is None:
                for t in range(a, b):
                    losses[t] = step().numpy()
            else:
                for t in range(a, b):
                    losses[t] = step(batches[t]).numpy()
            if segments > 1:
                stamps.append(time.perf_counter())
        return losses, stamps

    def weights(self):
        return [np.array(v.numpy()) for v in self.vars]


class TFEager(Contender):
    name, key = "TF eager (walkthrough)", "tf_eager"

    def available(self):
        try:
            self.tf = _import_tf()
        except ImportError:
            return False, "TensorFlow is not installed (pip install tensorflow-cpu)"
        return True, self.tf.__version__

    def prepare(self, w):
        return TFEagerRunner(self.tf, w)


def _keras_optimizer(w: Workload):
    """Keras's own optimizer for ``w.opt``."""
    import keras

    o = w.opt
    if o.kind == "adam":
        return keras.optimizers.Adam(learning_rate=w.lr, beta_1=o.beta_1, beta_2=o.beta_2, epsilon=o.epsilon)
    return keras.optimizers.SGD(learning_rate=w.lr, momentum=o.momentum)


class TFFunction(TFEager):
    name, key = "TF tf.function", "tf_function"

    def supports(self, w):
        return True

    def prepare(self, w):
        r = TFFunctionRunner(self.tf, w)
        if not w.opt.plain:
            r.label = f"tf.function + Keras {'Adam' if w.opt.kind == 'adam' else 'SGD(mom.)'}"
        return r
