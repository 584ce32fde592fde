"""Training the new head on cached features: the whole loop compiled once per process.

The head is a few Dense layers on a few thousand feature vectors, so its arithmetic takes
milliseconds. Through `keras.Model.fit` a run cost 0.7-1.6 s on the dev CPU, mostly spent
tracing a new training function for every new model. Here one TensorFlow function holds the
training steps, with the weights, Adam's moments and every setting (learning rate, dropout,
L2) passed in as tensors: it is traced once per process for each number of layers, whatever
their sizes, and later runs reuse it. The arithmetic is Keras' own (the Dense layers, inverted
dropout, sparse cross-entropy averaged over the batch, L2 on the kernels, Adam with Keras'
defaults); a test checks the trained weights against `fit` on the same batches.

Progress, cancel and early stopping go through Keras callbacks, called as `fit` calls them.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

# Keras' Adam defaults, as keras.optimizers.Adam(learning_rate) uses them.
_BETA_1, _BETA_2, _EPSILON = 0.9, 0.999, 1e-7
# Batches per call of the compiled steps: cancel is checked between calls, so it lands within
# a few milliseconds. Fewer per call costs more: 10 epochs of 33 batches took 0.15 s with 8,
# 0.35 s with 1.
STEPS_PER_CALL = 8


def dense_layers(head: keras.Model) -> list[keras.layers.Dense]:
    """The head's Dense layers in order; each but the last follows a dropout and uses relu."""
    return [layer for layer in head.layers if isinstance(layer, keras.layers.Dense)]


def _forward(params: Sequence[tf.Tensor], x: tf.Tensor, rate: tf.Tensor, seed: tf.Tensor,
             step: tf.Tensor) -> tf.Tensor:
    """Logits of build_head's model while training: dropout before every Dense layer."""
    keep = 1.0 - rate
    n_dense = len(params) // 2
    step_seed = tf.stack([seed, step])
    for i in range(n_dense):
        layer_seed = tf.random.experimental.stateless_fold_in(step_seed, i)
        noise = tf.random.stateless_uniform(tf.shape(x), seed=layer_seed)
        x = tf.where(noise >= rate, x / keep, tf.zeros_like(x))
        x = tf.matmul(x, params[2 * i]) + params[2 * i + 1]
        if i < n_dense - 1:
            x = tf.nn.relu(x)
    return x


def _train_steps(params: list[tf.Tensor], moments: list[tf.Tensor], velocities: list[tf.Tensor],
                 step: tf.Tensor, x: tf.Tensor, y: tf.Tensor, weights: tf.Tensor,
                 order: tf.Tensor, first: tf.Tensor, count: tf.Tensor, batch_size: tf.Tensor,
                 learning_rate: tf.Tensor, rate: tf.Tensor, l2: tf.Tensor, seed: tf.Tensor,
                 ) -> tuple[Any, ...]:
    """Batches first..first+count-1 of `order`: forward, backward, Adam. Pure: returns state.

    Returns (params, moments, velocities, step, sum of batch losses times batch sizes,
    correct answers, examples seen).
    """
    n = tf.shape(order)[0]
    loss_sum = tf.constant(0.0)
    correct = tf.constant(0.0)
    seen = tf.constant(0)
    for b in tf.range(first, first + count):
        idx = order[b * batch_size:tf.minimum((b + 1) * batch_size, n)]
        xb, yb, wb = tf.gather(x, idx), tf.gather(y, idx), tf.gather(weights, idx)
        size = tf.shape(idx)[0]
        with tf.GradientTape() as tape:
            tape.watch(params)
            logits = _forward(params, xb, rate, seed, step)
            per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(yb, logits)
            # Keras' "sum over batch size": weighted losses summed, divided by the count.
            loss = tf.reduce_sum(per_example * wb) / tf.cast(size, tf.float32)
            # Keras' L2 penalty, l2 * sum(k^2), through TensorFlow's fused L2Loss kernel (half
            # of it): one pass forward and one back instead of square, sum and their gradients;
            # the three-layer head's 10 epochs took 4.7-4.8 s instead of 5.8-5.9 s.
            loss += l2 * tf.add_n([2.0 * tf.nn.l2_loss(k) for k in params[::2]])
        grads = tape.gradient(loss, params)
        t = tf.cast(step + 1, tf.float32)
        alpha = learning_rate * tf.sqrt(1.0 - _BETA_2 ** t) / (1.0 - _BETA_1 ** t)
        moments = [m + (g - m) * (1.0 - _BETA_1) for m, g in zip(moments, grads)]
        velocities = [v + (tf.square(g) - v) * (1.0 - _BETA_2) for v, g in zip(velocities, grads)]
        params = [p - alpha * m / (tf.sqrt(v) + _EPSILON)
                  for p, m, v in zip(params, moments, velocities)]
        step += 1
        hits = tf.cast(tf.equal(tf.argmax(logits, axis=1, output_type=yb.dtype), yb), tf.float32)
        loss_sum += loss * tf.cast(size, tf.float32)
        correct += tf.reduce_sum(hits)  # unweighted, like fit's accuracy with class weights
        seen += size
    return params, moments, velocities, step, loss_sum, correct, seen


@functools.cache
def _compiled_steps(n_dense: int) -> Any:
    """_train_steps compiled for heads of n_dense Dense layers, of any sizes.

    Traced with unknown sizes from the start, so a new width, class count or feature size
    reuses it; left to `reduce_retracing`, each of those traced again (0.3-0.5 s) first.
    """
    float_scalar, int_scalar = tf.TensorSpec([], tf.float32), tf.TensorSpec([], tf.int32)
    weights = [tf.TensorSpec([None, None], tf.float32), tf.TensorSpec([None], tf.float32)]
    weights *= n_dense
    indices = tf.TensorSpec([None], tf.int32)
    return tf.function(_train_steps, input_signature=[
        weights, weights, weights, int_scalar, tf.TensorSpec([None, None], tf.float32),
        indices, tf.TensorSpec([None], tf.float32), indices, int_scalar, int_scalar, int_scalar,
        float_scalar, float_scalar, float_scalar, int_scalar,
    ])


def _validation_logs(head: keras.Model, x_val: np.ndarray, y_val: np.ndarray) -> dict[str, float]:
    """val_loss (cross-entropy plus the L2 penalty, as Keras reports it) and val_accuracy."""
    probs = np.asarray(head(x_val, training=False), np.float64)
    picked = np.clip(probs[np.arange(len(y_val)), y_val], 1e-7, 1.0)
    penalty = float(sum(float(loss) for loss in head.losses))
    return {
        "val_loss": float(-np.log(picked).mean()) + penalty,
        "val_accuracy": float((probs.argmax(axis=1) == y_val).mean()),
    }


def fit_head(
    head: keras.Model,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    dropout: float,
    l2: float,
    seed: int,
    class_weight: dict[int, float] | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> None:
    """Trains build_head's model in place with minibatch Adam, as `fit` would.

    Each epoch visits the training rows in a new order drawn from `seed`; dropout is drawn
    from `seed` and the step number, so a run is reproducible. The callbacks get fit's calls
    (train begin/end, epoch begin/end with loss, accuracy, val_loss and val_accuracy, and a
    batch end every STEPS_PER_CALL batches), and a callback that sets
    `head.stop_training` ends training after the current call: that is how cancel and
    early stopping act.
    """
    layers = dense_layers(head)
    params = [tf.convert_to_tensor(np.asarray(w)) for layer in layers
              for w in (layer.kernel, layer.bias)]
    train_steps = _compiled_steps(len(layers))
    moments = [tf.zeros_like(p) for p in params]
    velocities = [tf.zeros_like(p) for p in params]
    x = tf.constant(x_train, tf.float32)
    y = tf.constant(y_train, tf.int32)
    weights = np.ones(len(y_train), np.float32)
    if class_weight:
        weights = np.asarray([class_weight[int(label)] for label in y_train], np.float32)
    weights_t = tf.constant(weights)
    # Tensors, not Python numbers: a new value would otherwise trace the function again.
    learning_rate_t = tf.constant(learning_rate, tf.float32)
    rate_t = tf.constant(dropout, tf.float32)
    l2_t = tf.constant(l2, tf.float32)
    size_t, seed_t = tf.constant(int(batch_size)), tf.constant(int(seed), tf.int32)
    step = tf.constant(0)
    n_batches = math.ceil(len(y_train) / batch_size)
    rng = np.random.default_rng(seed)
    y_val = np.asarray(y_val)

    def publish(values: list[tf.Tensor]) -> None:
        for i, layer in enumerate(layers):
            layer.kernel.assign(values[2 * i])
            layer.bias.assign(values[2 * i + 1])

    callback_list = keras.callbacks.CallbackList(list(callbacks), model=head, epochs=epochs,
                                                 steps=n_batches, verbose=0)
    head.stop_training = False
    callback_list.on_train_begin()
    for epoch in range(epochs):
        callback_list.on_epoch_begin(epoch)
        order = tf.constant(rng.permutation(len(y_train)).astype(np.int32))
        totals = np.zeros(3)
        for first in range(0, n_batches, STEPS_PER_CALL):
            count = min(STEPS_PER_CALL, n_batches - first)
            params, moments, velocities, step, *sums = train_steps(
                params, moments, velocities, step, x, y, weights_t, order,
                tf.constant(first), tf.constant(count), size_t, learning_rate_t, rate_t, l2_t,
                seed_t,
            )
            totals += [float(s) for s in sums]
            callback_list.on_train_batch_end(first + count - 1)
            if head.stop_training:
                break
        publish(params)
        if head.stop_training and totals[2] < len(y_train):
            break  # cancelled mid-epoch: no epoch end to report
        loss_sum, correct, seen = totals
        logs = {"loss": loss_sum / seen, "accuracy": correct / seen,
                **_validation_logs(head, x_val, y_val)}
        callback_list.on_epoch_end(epoch, logs)
        if head.stop_training:
            break
    callback_list.on_train_end()
