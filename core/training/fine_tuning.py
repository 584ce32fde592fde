"""Fine-tuning the top of the base: the whole classifier, its unfrozen layers, weight averaging."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import pandas as pd

from core import device
from core.config import TrainConfig
from core.data import batches
from core.errors import Cancelled
from core.features import augmentation, backbones
from core.progress import EventSink, ProgressEvent, StopCheck
from core.training.callback import ProgressCallback, early_stopping
from core.training.head import class_weight_for

log = logging.getLogger(__name__)

PHASE = "fine-tuning"
# Fine-tuning batches are slow on a CPU, so report some batches, not only epochs.
EVENT_EVERY_BATCHES = 5


class WeightAveraging(keras.callbacks.Callback):
    """Stochastic weight averaging: training ends with the mean of the epoch-end weights.

    Averages the trainable weights at the end of every epoch from `first_epoch` (0-based) on
    and writes the mean into the model when training ends. With BatchNorm frozen there are no
    batch statistics to recompute, so the averaged model is ready as it is. Fine-tuning on a
    thousand photos lands on weights that differ by a few points of test accuracy from seed to
    seed; their average is steadier and usually better than any one of them.
    """

    def __init__(self, first_epoch: int = 1) -> None:
        super().__init__()
        self.first_epoch = first_epoch
        self.averaged = 0
        self._mean: list[np.ndarray] | None = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.averaged, self._mean = 0, None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if epoch < self.first_epoch:
            return
        current = [np.array(w, dtype=np.float32) for w in self.model.trainable_weights]
        self.averaged += 1
        if self._mean is None:
            self._mean = current
        else:
            for mean, value in zip(self._mean, current):
                mean += (value - mean) / self.averaged

    def on_train_end(self, logs: dict | None = None) -> None:
        if self._mean is None:
            return  # too few epochs to average: the last weights stay
        for weight, mean in zip(self.model.trainable_weights, self._mean):
            weight.assign(mean.astype(weight.dtype))


def unfreeze_top(base: Any, n_layers: int) -> int:
    """Makes the top n_layers of the base trainable, BatchNorm excepted; returns how many."""
    inner = backbones.nested_base(base)
    base.trainable = True
    inner.trainable = True
    layers = inner.layers
    cut = max(0, len(layers) - n_layers)
    unfrozen = 0
    for i, layer in enumerate(layers):
        # Frozen BatchNorm runs in inference mode in Keras 3, keeping ImageNet statistics.
        trainable = i >= cut and not isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = trainable
        unfrozen += int(trainable and bool(layer.weights))
    return unfrozen


def assemble_model(base: Any, head: Any, input_size: int, augmenter: Any | None = None) -> Any:
    """Raw RGB (S,S,3) -> [augmentation] -> base (inference mode) -> head -> probabilities.

    The model fine-tuning trains, and the one every run saves (without augmentation).
    """
    inputs = keras.Input((input_size, input_size, 3), name="image")
    x = augmenter(inputs) if augmenter is not None else inputs
    feats = base(x, training=False)
    outputs = head(feats)
    return keras.Model(inputs, outputs, name="classifier")


@dataclass
class FineTuned:
    """What fine_tune returns.

    Attributes:
        base: The base with its top layers trained.
        model: The whole classifier (with the augmentation layers when augmenting).
        averaged_epochs: Epochs averaged into the final weights (0: the best or last epoch).
    """

    base: Any
    model: Any
    averaged_epochs: int


def ending_callbacks(config: TrainConfig, validated: bool = True
                     ) -> tuple[list[Any], WeightAveraging | None]:
    """Early stopping, and either the averaged weights or the best epoch's at the end.

    Without held-out validation photos there is nothing to stop on or to pick a best epoch
    by: every epoch runs, and the weights are the average (or the last epoch's).
    """
    if not validated:
        if not config.fine_tune_averaging:
            return [], None
        averaging = WeightAveraging(first_epoch=1)
        return [averaging], averaging
    if not config.fine_tune_averaging:
        return early_stopping(config.early_stopping_patience), None
    # The average replaces restoring one epoch; stopping early still ends the phase.
    averaging = WeightAveraging(first_epoch=1)
    return [*early_stopping(config.early_stopping_patience, restore_best=False),
            averaging], averaging


def fine_tune(spec: Any, resolved: Any, head: Any, config: TrainConfig, train: pd.DataFrame,
              val: pd.DataFrame | None, *, n_classes: int, info: Any, batch: int, on_event: EventSink,
              should_stop: StopCheck,
              on_epoch_row: Callable[[dict[str, Any]], None]) -> FineTuned:
    """Trains a fresh base's top layers together with the trained head, on the photos.

    Args:
        spec, resolved: The base and its weights (a new copy is built: the frozen base that
            features come from is shared and never changed).
        head: The trained head; it goes on training here.
        config: The run's options (layers, epochs, learning rate, augmentation, averaging).
        train, val: Split rows (path, label_index). val None: no photo the head has not
            seen is left to validate on (the head search trained on validation photos), so
            no curve is called "validation".
        n_classes: Number of classes (for class weights).
        info: The device (core.device.detect()); a GPU gets its strategy and mixed precision.
        batch: Batch size that fits the device (training.batch_sizes).
        on_event, should_stop: Progress events and cooperative cancel.
        on_epoch_row: Receives each epoch's history row.

    Raises:
        Cancelled: should_stop() asked to stop.
    """
    strategy = device.distribution_strategy(info)
    previous_policy = keras.mixed_precision.global_policy()
    if device.use_mixed_precision(info):
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        with strategy.scope():
            base = backbones.build_base(spec, resolved)
            unfrozen = unfreeze_top(base, config.fine_tune_layers)
            augmenter = augmentation.make_augmenter(config.seed) if config.augments else None
            model = assemble_model(base, head, spec.input_size, augmenter)
            model.compile(optimizer=keras.optimizers.Adam(config.fine_tune_learning_rate),
                          loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
    log.info("Fine-tuning %d layers with weights", unfrozen)
    if batch < config.batch_size:
        on_event(ProgressEvent(
            phase=PHASE, message=f"Batch size {config.batch_size} does not fit the GPU's "
            f"memory for fine-tuning; using {batch}",
        ))
    train_ds = batches.make_tf_dataset(
        train["path"].tolist(), train["label_index"].tolist(), spec.input_size, batch,
        shuffle=True, seed=config.seed,
    )
    val_ds = None if val is None else batches.make_tf_dataset(
        val["path"].tolist(), val["label_index"].tolist(), spec.input_size, batch,
    )
    callback = ProgressCallback(
        on_event, should_stop, phase=PHASE, total_epochs=config.fine_tune_epochs,
        steps_per_epoch=math.ceil(len(train) / batch), batch_event_every=EVENT_EVERY_BATCHES,
        on_epoch_row=on_epoch_row,
    )
    ending, averaging = ending_callbacks(config, validated=val_ds is not None)
    model.fit(
        train_ds, validation_data=val_ds, epochs=config.fine_tune_epochs, verbose=0,
        shuffle=False,  # make_tf_dataset reshuffles every epoch itself
        class_weight=class_weight_for(train["label_index"].to_numpy(), n_classes,
                                      config.class_weights),
        callbacks=[callback, *ending],
    )
    if callback.cancelled:
        raise Cancelled()
    return FineTuned(base, model, averaging.averaged if averaging else 0)
