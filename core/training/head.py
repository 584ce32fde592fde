"""Training the new head on cached features: the whole loop compiled once per process.

The head is a few Dense layers on a few thousand feature vectors, so its arithmetic takes
milliseconds. Through `keras.Model.fit` most of a run went into tracing a new training
function for every new model (docs/benchmarks.md, design choices). Here one TensorFlow function holds the
training steps for every head: the layers' weights and Adam's moments come in as TensorLists
of any length and shapes, the settings (learning rate, dropout, L2) as tensors, and loops over
the layers run inside the graph. So it is traced once per process, whatever the number and
sizes of the layers, and later runs reuse it; so is the validation pass. The arithmetic is
Keras' own (the Dense layers, inverted dropout, sparse cross-entropy averaged over the batch,
L2 on the kernels, Adam with Keras' defaults), with the gradients written out; tests check the
trained weights and the logged metrics against `fit` on the same batches and, with dropout,
the weights against GradientTape on the same masks.

Progress, cancel and early stopping go through Keras callbacks, called as `fit` calls them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from core.config import TrainConfig

# Keras' Adam defaults, as keras.optimizers.Adam(learning_rate) uses them.
_BETA_1, _BETA_2, _EPSILON = 0.9, 0.999, 1e-7
# Batches per call of the compiled steps: cancel is checked between calls, so it lands within
# a few milliseconds. Fewer per call costs more (docs/benchmarks.md, design choices).
STEPS_PER_CALL = 8
_SCALAR, _MATRIX = tf.TensorShape([]), tf.TensorShape([None, None])


def class_weight_for(y: np.ndarray, n_classes: int, mode: str) -> dict[int, float] | None:
    """Balanced weights n / (k * count) as in scikit-learn, or None when off."""
    if mode == "off":
        return None
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    weights = len(y) / (n_classes * np.maximum(counts, 1.0))
    return {i: float(w) for i, w in enumerate(weights)}


def build_head(feature_dim: int, n_classes: int, config: TrainConfig) -> Any:
    """The new classifier: [Dropout, Dense relu]* -> Dropout -> Dense softmax (float32)."""
    reg = keras.regularizers.L2(config.l2) if config.l2 else None
    inputs = keras.Input((feature_dim,), name="features")
    x = inputs
    for i, units in enumerate(config.hidden_units):
        x = keras.layers.Dropout(config.dropout, seed=config.seed + i, name=f"dropout_{i}")(x)
        x = keras.layers.Dense(units, activation="relu", kernel_regularizer=reg,
                               name=f"hidden_{i}")(x)
    x = keras.layers.Dropout(config.dropout, seed=config.seed + 99, name="dropout_out")(x)
    # float32 output keeps softmax stable under mixed precision.
    outputs = keras.layers.Dense(n_classes, activation="softmax", kernel_regularizer=reg,
                                 dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="head")


def dense_layers(head: keras.Model) -> list[keras.layers.Dense]:
    """The head's Dense layers in order; each but the last follows a dropout and uses relu."""
    return [layer for layer in head.layers if isinstance(layer, keras.layers.Dense)]


def _as_list(tensors: Sequence[tf.Tensor]) -> tf.Tensor:
    """A TensorList (one variant tensor) of float32 tensors of any shapes."""
    handle = tf.raw_ops.EmptyTensorList(element_shape=tf.constant(-1), max_num_elements=-1,
                                        element_dtype=tf.float32)
    for tensor in tensors:
        handle = tf.raw_ops.TensorListPushBack(input_handle=handle, tensor=tensor)
    return handle


def _item(handle: tf.Tensor, index: Any, rank: int = -1) -> tf.Tensor:
    shape = -1 if rank < 0 else [-1] * rank
    return tf.raw_ops.TensorListGetItem(input_handle=handle, index=index, element_shape=shape,
                                        element_dtype=tf.float32)


def _with_item(handle: tf.Tensor, index: Any, value: tf.Tensor) -> tf.Tensor:
    return tf.raw_ops.TensorListSetItem(input_handle=handle, index=index, item=value)


def _dense(params: tf.Tensor, i: Any, h: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Dense layer i on h: (h @ kernel + bias, sum(kernel^2) for Keras' L2 penalty)."""
    kernel, bias = _item(params, 2 * i, 2), _item(params, 2 * i + 1, 1)
    # Through TensorFlow's fused L2Loss kernel (half the sum), faster than squaring and
    # summing (docs/benchmarks.md, design choices).
    return tf.matmul(h, kernel) + bias, 2.0 * tf.nn.l2_loss(kernel)


def _forward(params: tf.Tensor, n_layers: tf.Tensor, xb: tf.Tensor, rate: tf.Tensor,
             step_seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """The training forward pass: (logits, each layer's input after dropout, sum of kernel^2).

    Dropout before every Dense layer; relu after every one but the last (the relu of the last
    layer's output is computed and not used).
    """
    keep = 1.0 - rate

    def layer(i, h, logits, inputs, penalty):
        noise = tf.random.stateless_uniform(
            tf.shape(h), seed=tf.random.experimental.stateless_fold_in(step_seed, i))
        h = tf.where(noise >= rate, h / keep, tf.zeros_like(h))
        logits, squares = _dense(params, i, h)
        return i + 1, tf.nn.relu(logits), logits, inputs.write(i, h), penalty + squares

    inputs = tf.TensorArray(tf.float32, size=n_layers, infer_shape=False,
                            element_shape=_MATRIX)
    _, _, logits, inputs, penalty = tf.while_loop(
        lambda i, *_: i < n_layers, layer,
        [tf.constant(0), xb, tf.zeros([0, 0]), inputs, tf.constant(0.0)],
        shape_invariants=[_SCALAR, _MATRIX, _MATRIX, None, _SCALAR])
    return logits, inputs, penalty


def _adam(i: Any, grad: tf.Tensor, params: tf.Tensor, moments: tf.Tensor,
          velocities: tf.Tensor, inputs: tf.TensorArray, l2: tf.Tensor, alpha: tf.Tensor
          ) -> tuple[tf.Tensor, ...]:
    """Layer i's Adam update from the gradient at its output.

    Returns (layer input, kernel before the update, params, moments, velocities).
    """
    layer_in, kernel = inputs.read(i), _item(params, 2 * i, 2)
    d_kernel = tf.matmul(layer_in, grad, transpose_a=True) + (2.0 * l2) * kernel
    for k, g, rank in ((2 * i, d_kernel, 2), (2 * i + 1, tf.reduce_sum(grad, 0), 1)):
        m, v = _item(moments, k, rank), _item(velocities, k, rank)
        m = m + (g - m) * (1.0 - _BETA_1)
        v = v + (tf.square(g) - v) * (1.0 - _BETA_2)
        params = _with_item(params, k, _item(params, k, rank)
                            - alpha * m / (tf.sqrt(v) + _EPSILON))
        moments, velocities = _with_item(moments, k, m), _with_item(velocities, k, v)
    return layer_in, kernel, params, moments, velocities


def _backward(grad: tf.Tensor, params: tf.Tensor, moments: tf.Tensor, velocities: tf.Tensor,
              inputs: tf.TensorArray, n_layers: tf.Tensor, rate: tf.Tensor, l2: tf.Tensor,
              alpha: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Back-propagates grad (at the logits) from the last layer to the first, updating each."""
    keep = 1.0 - rate

    def layer(i, grad, params, moments, velocities):
        layer_in, kernel, params, moments, velocities = _adam(
            i, grad, params, moments, velocities, inputs, l2, alpha)
        # Through dropout and the previous relu: layer_in is above 0 exactly where a unit
        # was both kept and active.
        grad = tf.where(layer_in > 0, tf.matmul(grad, kernel, transpose_b=True) / keep,
                        tf.zeros_like(layer_in))
        return i - 1, grad, params, moments, velocities

    _, grad, params, moments, velocities = tf.while_loop(
        lambda i, *_: i > 0, layer, [n_layers - 1, grad, params, moments, velocities],
        shape_invariants=[_SCALAR, _MATRIX, _SCALAR, _SCALAR, _SCALAR])
    # The first layer's input is the features: no gradient to carry further.
    *_, params, moments, velocities = _adam(0, grad, params, moments, velocities, inputs, l2,
                                            alpha)
    return params, moments, velocities


def _smoothed(logits: tf.Tensor, labels: tf.Tensor, per_example: tf.Tensor,
              d_logits: tf.Tensor, smoothing: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Cross-entropy and its gradient against (1 - s) * one-hot + s / classes, as Keras'
    CategoricalCrossentropy(label_smoothing=s) computes them."""
    n_classes = tf.shape(logits)[1]
    mean_log_prob = tf.reduce_mean(tf.nn.log_softmax(logits), axis=1)
    loss = per_example * (1.0 - smoothing) - smoothing * mean_log_prob
    target_shift = tf.one_hot(labels, n_classes) - 1.0 / tf.cast(n_classes, tf.float32)
    return loss, d_logits + smoothing * target_shift


def _train_steps(params: tf.Tensor, moments: tf.Tensor, velocities: tf.Tensor, step: tf.Tensor,
                 x: tf.Tensor, y: tf.Tensor, weights: tf.Tensor, order: tf.Tensor,
                 first: tf.Tensor, count: tf.Tensor, batch_size: tf.Tensor,
                 learning_rate: tf.Tensor, rate: tf.Tensor, l2: tf.Tensor, seed: tf.Tensor,
                 smoothing: tf.Tensor) -> tuple[Any, ...]:
    """Batches first..first+count-1 of `order`: forward, backward, Adam. Pure: returns state.

    params, moments and velocities are TensorLists [kernel 0, bias 0, kernel 1, ...]. Returns
    (params, moments, velocities, step, sum of batch losses times batch sizes, correct
    answers, examples seen).
    """
    n = tf.shape(order)[0]
    n_layers = tf.raw_ops.TensorListLength(input_handle=params) // 2

    def one_batch(b, params, moments, velocities, step, loss_sum, correct, seen):
        idx = order[b * batch_size:tf.minimum((b + 1) * batch_size, n)]
        xb, yb, wb = tf.gather(x, idx), tf.gather(y, idx), tf.gather(weights, idx)
        size = tf.cast(tf.shape(idx)[0], tf.float32)
        logits, inputs, penalty = _forward(params, n_layers, xb, rate, tf.stack([seed, step]))
        # The op behind sparse cross-entropy also returns its gradient (softmax - one-hot).
        per_example, d_logits = tf.raw_ops.SparseSoftmaxCrossEntropyWithLogits(
            features=logits, labels=yb)
        per_example, d_logits = tf.cond(
            smoothing > 0.0, lambda: _smoothed(logits, yb, per_example, d_logits, smoothing),
            lambda: (per_example, d_logits))
        # Keras' "sum over batch size": weighted losses summed, divided by the count.
        loss = tf.reduce_sum(per_example * wb) / size + l2 * penalty
        t = tf.cast(step + 1, tf.float32)
        alpha = learning_rate * tf.sqrt(1.0 - _BETA_2 ** t) / (1.0 - _BETA_1 ** t)
        grad = d_logits * tf.expand_dims(wb / size, 1)
        params, moments, velocities = _backward(grad, params, moments, velocities, inputs,
                                                n_layers, rate, l2, alpha)
        hits = tf.cast(tf.equal(tf.argmax(logits, axis=1, output_type=yb.dtype), yb), tf.float32)
        # Accuracy unweighted, like fit's with class weights.
        return (b + 1, params, moments, velocities, step + 1, loss_sum + loss * size,
                correct + tf.reduce_sum(hits), seen + tf.shape(idx)[0])

    _, *state = tf.while_loop(
        lambda b, *_: b < first + count, one_batch,
        [first, params, moments, velocities, step, tf.constant(0.0), tf.constant(0.0),
         tf.constant(0)])
    return tuple(state)


_float, _int, _list = (tf.TensorSpec([], tf.float32), tf.TensorSpec([], tf.int32),
                       tf.TensorSpec([], tf.variant))
_rows = tf.TensorSpec([None], tf.int32)
# Loops written as tf.while_loop, without autograph: autograph's conversion of the source
# dominated the trace (docs/benchmarks.md, design choices).
_compiled_steps = tf.function(_train_steps, autograph=False, input_signature=[
    _list, _list, _list, _int, tf.TensorSpec([None, None], tf.float32), _rows,
    tf.TensorSpec([None], tf.float32), _rows, _int, _int, _int, _float, _float, _float, _int,
    _float,
])


def _evaluate(params: tf.Tensor, x: tf.Tensor, y: tf.Tensor, l2: tf.Tensor) -> tuple[Any, ...]:
    """Inference on (x, y): (summed cross-entropy, correct answers, L2 penalty).

    As Keras reports them: the cross-entropy of the softmax probabilities clipped to 1e-7,
    and l2 * sum(k^2) over the kernels.
    """
    n_layers = tf.raw_ops.TensorListLength(input_handle=params) // 2

    def forward(i, h, logits, penalty):
        logits, squares = _dense(params, i, h)
        return i + 1, tf.nn.relu(logits), logits, penalty + squares

    _, _, logits, penalty = tf.while_loop(
        lambda i, *_: i < n_layers, forward, [tf.constant(0), x, tf.zeros([0, 0]),
                                              tf.constant(0.0)],
        shape_invariants=[_SCALAR, _MATRIX, _MATRIX, _SCALAR])
    probs = tf.nn.softmax(logits)
    picked = tf.gather(probs, y, axis=1, batch_dims=1)
    cross_entropy = -tf.reduce_sum(tf.math.log(tf.clip_by_value(picked, 1e-7, 1.0)))
    hits = tf.equal(tf.argmax(probs, axis=1, output_type=y.dtype), y)
    return cross_entropy, tf.reduce_sum(tf.cast(hits, tf.float32)), l2 * penalty


# Validation through the Keras model took about ten times as long an epoch.
_compiled_evaluate = tf.function(_evaluate, autograph=False, input_signature=[
    _list, tf.TensorSpec([None, None], tf.float32), _rows, _float,
])


def tracing_counts() -> dict[str, int]:
    """Times the compiled training steps and validation pass were traced in this process.

    1 each after any number of heads of any shapes (0 before the first): what keeps a
    second training fast.
    """
    return {"steps": _compiled_steps.experimental_get_tracing_count(),
            "evaluate": _compiled_evaluate.experimental_get_tracing_count()}


def fit_head(
    head: keras.Model,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray | None,
    y_val: np.ndarray | None,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    dropout: float,
    l2: float,
    seed: int,
    label_smoothing: float = 0.0,
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

    With x_val and y_val None (a refit on every labelled row, core.training.head_search) the epoch
    logs hold only loss and accuracy. label_smoothing s trains against
    (1 - s) * one-hot + s / classes; 0 is plain sparse cross-entropy, computed as before.
    """
    if y_val is not None and len(y_val) == 0:
        raise ValueError("fit_head needs validation rows (or none at all, x_val=y_val=None)")
    layers = dense_layers(head)
    state = _initial_state(layers)
    data = _Data.of(x_train, y_train, x_val, y_val, class_weight)
    settings = _Settings.of(batch_size, learning_rate, dropout, l2, seed, label_smoothing)
    n_batches = math.ceil(len(y_train) / batch_size)
    rng = np.random.default_rng(seed)
    callback_list = keras.callbacks.CallbackList(list(callbacks), model=head, epochs=epochs,
                                                 steps=n_batches, verbose=0)
    head.stop_training = False
    callback_list.on_train_begin()
    for epoch in range(epochs):
        callback_list.on_epoch_begin(epoch)
        order = tf.constant(rng.permutation(len(y_train)).astype(np.int32))
        state, totals = _run_epoch(state, data, settings, order, n_batches, head,
                                   callback_list)
        _publish(layers, state[0])
        if head.stop_training and totals[2] < len(y_train):
            break  # cancelled mid-epoch: no epoch end to report
        callback_list.on_epoch_end(epoch, _epoch_logs(totals, state[0], data, settings))
        if head.stop_training:
            break
    callback_list.on_train_end()


@dataclasses.dataclass(frozen=True)
class _Data:
    """The training and validation rows as tensors, with each training row's class weight."""

    x: tf.Tensor
    y: tf.Tensor
    weights: tf.Tensor
    x_val: tf.Tensor | None
    y_val: tf.Tensor | None

    @classmethod
    def of(cls, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray | None,
           y_val: np.ndarray | None, class_weight: dict[int, float] | None) -> _Data:
        weights = np.ones(len(y_train), np.float32)
        if class_weight:
            weights = np.asarray([class_weight[int(label)] for label in y_train], np.float32)
        has_val = x_val is not None and y_val is not None
        return cls(tf.constant(x_train, tf.float32), tf.constant(y_train, tf.int32),
                   tf.constant(weights),
                   tf.constant(x_val, tf.float32) if has_val else None,
                   tf.constant(y_val, tf.int32) if has_val else None)


@dataclasses.dataclass(frozen=True)
class _Settings:
    """The settings as tensors, not Python numbers: a new value would trace the steps again."""

    batch_size: tf.Tensor
    learning_rate: tf.Tensor
    rate: tf.Tensor
    l2: tf.Tensor
    seed: tf.Tensor
    smoothing: tf.Tensor

    @classmethod
    def of(cls, batch_size: int, learning_rate: float, dropout: float, l2: float,
           seed: int, smoothing: float) -> _Settings:
        return cls(tf.constant(int(batch_size)), tf.constant(learning_rate, tf.float32),
                   tf.constant(dropout, tf.float32), tf.constant(l2, tf.float32),
                   tf.constant(int(seed), tf.int32), tf.constant(smoothing, tf.float32))


def _initial_state(layers: list[keras.layers.Dense]) -> tuple[tf.Tensor, ...]:
    """(params, moments, velocities, step): the layers' weights and Adam's zeroed moments."""
    initial = [tf.convert_to_tensor(np.asarray(w), tf.float32) for layer in layers
               for w in (layer.kernel, layer.bias)]
    return (_as_list(initial), _as_list([tf.zeros_like(p) for p in initial]),
            _as_list([tf.zeros_like(p) for p in initial]), tf.constant(0))


def _run_epoch(state: tuple[tf.Tensor, ...], data: _Data, settings: _Settings,
               order: tf.Tensor, n_batches: int, head: keras.Model,
               callback_list: keras.callbacks.CallbackList
               ) -> tuple[tuple[tf.Tensor, ...], np.ndarray]:
    """One epoch in calls of STEPS_PER_CALL batches, with a batch-end call after each.

    Returns the new state and (summed loss, correct answers, examples seen); stops early
    when a callback set head.stop_training.
    """
    params, moments, velocities, step = state
    totals = np.zeros(3)
    for first in range(0, n_batches, STEPS_PER_CALL):
        count = min(STEPS_PER_CALL, n_batches - first)
        params, moments, velocities, step, *sums = _compiled_steps(
            params, moments, velocities, step, data.x, data.y, data.weights, order,
            tf.constant(first), tf.constant(count), settings.batch_size,
            settings.learning_rate, settings.rate, settings.l2, settings.seed,
            settings.smoothing,
        )
        totals += [float(s) for s in sums]
        callback_list.on_train_batch_end(first + count - 1)
        if head.stop_training:
            break
    return (params, moments, velocities, step), totals


def _publish(layers: list[keras.layers.Dense], params: tf.Tensor) -> None:
    """Writes the trained weights into the Keras layers."""
    for i, layer in enumerate(layers):
        layer.kernel.assign(_item(params, 2 * i))
        layer.bias.assign(_item(params, 2 * i + 1))


def _epoch_logs(totals: np.ndarray, params: tf.Tensor, data: _Data,
                settings: _Settings) -> dict[str, float]:
    """The epoch's loss and accuracy, and the validation pass's, as fit logs them."""
    loss_sum, correct, seen = totals
    logs = {"loss": loss_sum / seen, "accuracy": correct / seen}
    if data.x_val is None:
        return logs
    val_sum, val_correct, penalty = (float(v) for v in _compiled_evaluate(
        params, data.x_val, data.y_val, settings.l2))
    n_val = int(data.y_val.shape[0])
    return {**logs, "val_loss": val_sum / n_val + penalty, "val_accuracy": val_correct / n_val}
