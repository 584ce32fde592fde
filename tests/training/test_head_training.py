"""The compiled head loop against Keras' own fit, and its callbacks, seeds and cancel."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from core.config import TrainConfig
from core.training import head as head_training
from core.training.head import build_head, class_weight_for


def _data(n: int, dim: int = 24, classes: int = 3, seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    centres = rng.normal(size=(classes, dim)).astype(np.float32)
    x = np.abs(centres[y] + rng.normal(scale=1.5, size=(n, dim))).astype(np.float32)
    return x, y


def _head(config: TrainConfig, dim: int = 24, classes: int = 3) -> keras.Model:
    keras.utils.set_random_seed(config.seed)
    return build_head(dim, classes, config)


def _weights(model: keras.Model) -> list[np.ndarray]:
    return [np.asarray(w) for w in model.weights]


class _Record(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.logs: list[dict] = []
        self.weights: list[list[np.ndarray]] = []
        self.calls: list[str] = []

    def on_train_begin(self, logs=None) -> None:
        self.calls.append("train_begin")

    def on_train_batch_end(self, batch, logs=None) -> None:
        self.calls.append("batch_end")

    def on_epoch_end(self, epoch, logs=None) -> None:
        self.calls.append("epoch_end")
        self.logs.append(dict(logs))
        self.weights.append(_weights(self.model))

    def on_train_end(self, logs=None) -> None:
        self.calls.append("train_end")


@pytest.mark.parametrize("hidden", [(), (16,), (16, 8, 4)])
def test_same_weights_and_losses_as_keras_fit_on_the_same_batches(hidden) -> None:
    x, y = _data(90)
    x_val, y_val = _data(30, seed=1)
    config = TrainConfig(hidden_units=hidden, dropout=0.0, l2=1e-3, learning_rate=1e-2,
                         batch_size=8, class_weights="balanced", seed=3)
    weights = class_weight_for(y, 3, "balanced")
    ours, reference = _head(config), _head(config)
    reference.set_weights(ours.get_weights())
    record = _Record()
    head_training.fit_head(ours, x, y, x_val, y_val, epochs=3, batch_size=8,
                           learning_rate=1e-2, dropout=0.0, l2=1e-3, seed=3,
                           class_weight=weights, callbacks=[record])

    # Keras fit on the batches fit_head drew: the same order per epoch, no shuffling of its own.
    reference.compile(optimizer=keras.optimizers.Adam(1e-2),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(3)
    keras_logs = []
    for _ in range(3):
        order = rng.permutation(len(y))
        history = reference.fit(x[order], y[order], batch_size=8, epochs=1, shuffle=False,
                                class_weight=weights, validation_data=(x_val, y_val),
                                verbose=0)
        keras_logs.append({k: v[0] for k, v in history.history.items()})

    for mine, theirs in zip(_weights(ours), _weights(reference)):
        np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-5)
    for mine, theirs in zip(record.logs, keras_logs):
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert mine[key] == pytest.approx(theirs[key], rel=1e-4, abs=1e-5), key


@pytest.mark.parametrize("hidden", [(), (16,), (16, 8)])
def test_gradients_through_dropout_match_automatic_differentiation(hidden) -> None:
    # fit cannot share dropout masks with fit_head, so the reference is a GradientTape on the
    # same masks: fit_head's documented draws, uniform noise from (seed, step) folded with
    # the layer's index, a unit kept where the noise is at least the rate.
    x, y = _data(50)
    rate, l2, seed, batch = 0.4, 1e-3, 7, 16
    config = TrainConfig(hidden_units=hidden, dropout=rate, l2=l2, seed=seed)
    ours = _head(config)
    variables = [tf.Variable(w) for w in ours.get_weights()]
    weights = class_weight_for(y, 3, "balanced")
    head_training.fit_head(ours, x, y, x, y, epochs=2, batch_size=batch, learning_rate=1e-2,
                           dropout=rate, l2=l2, seed=seed, class_weight=weights)

    optimizer = keras.optimizers.Adam(1e-2)
    rng, step = np.random.default_rng(seed), 0
    for _ in range(2):
        order = rng.permutation(len(y))
        for start in range(0, len(y), batch):
            idx = order[start:start + batch]
            h = tf.constant(x[idx])
            with tf.GradientTape() as tape:
                for i in range(len(variables) // 2):
                    draw_seed = tf.random.experimental.stateless_fold_in([seed, step], i)
                    noise = tf.random.stateless_uniform(tf.shape(h), seed=draw_seed)
                    h = tf.where(noise >= rate, h / (1 - rate), 0.0)
                    h = h @ variables[2 * i] + variables[2 * i + 1]
                    if i < len(variables) // 2 - 1:
                        h = tf.nn.relu(h)
                per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(y[idx], h)
                example_weights = [weights[int(label)] for label in y[idx]]
                loss = tf.reduce_mean(per_example * example_weights)
                loss += l2 * tf.add_n([tf.reduce_sum(k ** 2) for k in variables[::2]])
            optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
            step += 1
    for mine, theirs in zip(_weights(ours), variables):
        np.testing.assert_allclose(mine, theirs.numpy(), rtol=1e-4, atol=1e-5)


def test_one_trace_for_every_head() -> None:
    # Depths, widths, class counts, feature sizes and row counts all differ.
    for dim, classes, units, n in [(24, 3, (16,), 60), (10, 5, (), 45), (33, 2, (64, 9, 5), 50),
                                   (12, 4, (7, 3), 40)]:
        x, y = _data(n, dim=dim, classes=classes)
        head = _head(TrainConfig(hidden_units=units), dim=dim, classes=classes)
        before = _weights(head)
        head_training.fit_head(head, x, y, x, y, epochs=1, batch_size=8, learning_rate=1e-3,
                               dropout=0.2, l2=1e-4, seed=0)
        assert all(np.isfinite(w).all() for w in _weights(head))
        assert all(not np.array_equal(a, b) for a, b in zip(before, _weights(head)))
    assert head_training.tracing_counts() == {"steps": 1, "evaluate": 1}


def test_dropout_and_order_follow_the_seed() -> None:
    x, y = _data(60)

    def trained(seed: int) -> list[np.ndarray]:
        config = TrainConfig(hidden_units=(8,), dropout=0.5, seed=0)
        head = _head(config)
        head_training.fit_head(head, x, y, x, y, epochs=2, batch_size=8, learning_rate=1e-2,
                               dropout=0.5, l2=0.0, seed=seed)
        return _weights(head)

    first, again, other = trained(1), trained(1), trained(2)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert any(not np.allclose(a, c) for a, c in zip(first, other))


def test_callbacks_get_fits_calls_and_early_stopping_restores_the_best_epoch() -> None:
    x, y = _data(60)
    x_val, y_val = _data(40, seed=5)
    config = TrainConfig(dropout=0.0, seed=0)
    head = _head(config)
    record = _Record()
    # A large learning rate overfits quickly, so validation loss turns up and stops the run.
    stopper = keras.callbacks.EarlyStopping(monitor="val_loss", patience=2,
                                            restore_best_weights=True)
    head_training.fit_head(head, x, y, x_val, y_val, epochs=40, batch_size=4,
                           learning_rate=0.5, dropout=0.0, l2=0.0, seed=0,
                           callbacks=[record, stopper])
    epochs = len(record.logs)
    assert 3 <= epochs < 40
    assert record.calls[0] == "train_begin" and record.calls[-1] == "train_end"
    # 15 batches an epoch, one batch_end per call of up to STEPS_PER_CALL batches.
    calls_per_epoch = math.ceil(15 / head_training.STEPS_PER_CALL)
    assert record.calls.count("batch_end") == epochs * calls_per_epoch
    best = int(np.argmin([logs["val_loss"] for logs in record.logs]))
    for mine, kept in zip(_weights(head), record.weights[best]):
        np.testing.assert_array_equal(mine, kept)


def test_stopping_mid_epoch_reports_no_partial_epoch(monkeypatch) -> None:
    monkeypatch.setattr(head_training, "STEPS_PER_CALL", 2)
    x, y = _data(64)
    record = _Record()

    class StopAtThirdCall(keras.callbacks.Callback):
        calls = 0

        def on_train_batch_end(self, batch, logs=None) -> None:
            StopAtThirdCall.calls += 1
            if StopAtThirdCall.calls == 3:
                self.model.stop_training = True

    head = _head(TrainConfig())
    head_training.fit_head(head, x, y, x, y, epochs=5, batch_size=8, learning_rate=1e-3,
                           dropout=0.5, l2=0.0, seed=0, callbacks=[record, StopAtThirdCall()])
    # 8 batches an epoch in calls of 2: the third call is inside the first epoch.
    assert record.calls.count("epoch_end") == 0
    assert record.calls.count("batch_end") == 3
    assert record.calls[-1] == "train_end"


def test_no_validation_rows_is_refused_before_training() -> None:
    x, y = _data(16)
    head = _head(TrainConfig())
    before = _weights(head)
    with pytest.raises(ValueError, match="validation rows"):
        head_training.fit_head(head, x, y, x[:0], y[:0], epochs=1, batch_size=8,
                               learning_rate=1e-3, dropout=0.0, l2=0.0, seed=0)
    for a, b in zip(before, _weights(head)):
        np.testing.assert_array_equal(a, b)


def test_label_smoothing_matches_keras_categorical_crossentropy() -> None:
    x, y = _data(60)
    x_val, y_val = _data(20, seed=1)
    config = TrainConfig(hidden_units=(16,), dropout=0.0, l2=1e-3, learning_rate=1e-2,
                         batch_size=8, seed=3)
    ours, reference = _head(config), _head(config)
    reference.set_weights(ours.get_weights())
    head_training.fit_head(ours, x, y, x_val, y_val, epochs=2, batch_size=8,
                           learning_rate=1e-2, dropout=0.0, l2=1e-3, seed=3,
                           label_smoothing=0.2)
    reference.compile(optimizer=keras.optimizers.Adam(1e-2),
                      loss=keras.losses.CategoricalCrossentropy(label_smoothing=0.2))
    one_hot = np.eye(3, dtype=np.float32)[y]
    rng = np.random.default_rng(3)
    for _ in range(2):
        order = rng.permutation(len(y))
        reference.fit(x[order], one_hot[order], batch_size=8, epochs=1, shuffle=False,
                      verbose=0)
    for mine, theirs in zip(_weights(ours), _weights(reference)):
        np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-5)


def test_refit_without_validation_rows_logs_training_metrics_only() -> None:
    x, y = _data(40)
    record = _Record()
    head_training.fit_head(_head(TrainConfig()), x, y, None, None, epochs=2, batch_size=8,
                           learning_rate=1e-3, dropout=0.5, l2=1e-4, seed=0,
                           callbacks=[record])
    assert [set(logs) for logs in record.logs] == [{"loss", "accuracy"}] * 2
