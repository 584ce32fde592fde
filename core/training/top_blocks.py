"""Training the base's top blocks and the head on cached block activations.

The bottom of the base is frozen during fine-tuning anyway, so the tensor entering its top
blocks is computed once per photo and view and cached (core.features.activations); each epoch
then runs only the top blocks, forward and backward, instead of the whole base. The top's
layers are the layers of a fresh copy of the base, so when training ends that copy is the
whole trained network: pretrained bottom, trained top.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from core.config import TrainConfig
from core.errors import Cancelled
from core.progress import EventSink, StopCheck
from core.training import fine_tuning
from core.training.callback import ProgressCallback
from core.training.head import class_weight_for

log = logging.getLogger(__name__)

PHASE = "training top blocks"
EVENT_EVERY_BATCHES = 10


class CachedTensors(keras.utils.PyDataset):
    """Batches of cached float16 tensors (flattened) as float32 [B, *shape], with labels.

    Only one batch at a time is converted to float32, so memory holds the float16 tensors
    once. Training order is reshuffled every epoch from the seed.
    """

    def __init__(self, tensors: np.ndarray, labels: np.ndarray, shape: tuple[int, ...],
                 batch_size: int, *, shuffle: bool = False, seed: int = 0,
                 sample_weight: np.ndarray | None = None) -> None:
        super().__init__()
        self.tensors, self.labels, self.shape = tensors, labels, shape
        self.batch_size, self.shuffle = batch_size, shuffle
        self.sample_weight = sample_weight
        self._rng = np.random.default_rng(seed)
        self._order = np.arange(len(tensors))
        if shuffle:
            self._rng.shuffle(self._order)

    def __len__(self) -> int:
        return math.ceil(len(self.tensors) / self.batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, ...]:
        rows = np.sort(self._order[index * self.batch_size:(index + 1) * self.batch_size])
        x = self.tensors[rows].astype(np.float32).reshape((len(rows), *self.shape))
        if self.sample_weight is not None:
            return x, self.labels[rows], self.sample_weight[rows]
        return x, self.labels[rows]

    def on_epoch_end(self) -> None:
        if self.shuffle:
            self._rng.shuffle(self._order)


def unfreeze(top: keras.Model) -> int:
    """Makes the top's layers trainable, BatchNorm excepted (inference mode, ImageNet
    statistics, as Keras' fine-tuning guide says); returns the layers with weights unfrozen."""
    top.trainable = True
    unfrozen = 0
    for layer in top.layers:
        trainable = not isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = trainable
        unfrozen += int(trainable and bool(layer.weights))
    return unfrozen


def classifier_on_tensors(top: keras.Model, head: Any, shape: tuple[int, ...]) -> keras.Model:
    """Boundary tensor -> top blocks -> head -> probabilities (the top's layers shared)."""
    inputs = keras.Input(shape, name="activation")
    return keras.Model(inputs, head(top(inputs, training=False)), name="top_classifier")


def predict(model: keras.Model, tensors: np.ndarray, shape: tuple[int, ...],
            batch_size: int = 64) -> np.ndarray:
    """model's outputs on cached float16 tensors, batch by batch, float32."""
    out = [np.asarray(model(tensors[i:i + batch_size].astype(np.float32).reshape(
        (-1, *shape)), training=False), np.float32)
        for i in range(0, len(tensors), batch_size)]
    return np.concatenate(out) if out else np.zeros((0,), np.float32)


@dataclass
class TopBlocksResult:
    """What train_top_blocks returns.

    Attributes:
        model: Boundary tensor -> probabilities (top blocks + head, trained).
        unfrozen_layers: Layers with weights that trained.
        epochs: Epochs run.
        averaged_epochs: Epochs whose weights the result averages (0: one epoch's).
    """

    model: keras.Model
    unfrozen_layers: int
    epochs: int
    averaged_epochs: int = 0


def train_top_blocks(top: keras.Model, head: Any, shape: tuple[int, ...], config: TrainConfig,
                     train_x: np.ndarray, y_train: np.ndarray, val_x: np.ndarray,
                     y_val: np.ndarray, *, n_classes: int, on_event: EventSink,
                     should_stop: StopCheck,
                     on_epoch_row: Callable[[dict[str, Any]], None]) -> TopBlocksResult:
    """Trains the top blocks and the (already trained) head on cached tensors.

    Args:
        top: split_base's top of a fresh base copy; its layers train in place.
        head: The head trained on the frozen features; it goes on training.
        shape: One tensor's shape.
        config: tune_top_blocks_epochs, tune_top_blocks_learning_rate, batch size, class
            weights, early stopping patience, fine_tune_averaging, seed.
        train_x, y_train: Flattened float16 tensors of every training view, and labels.
        val_x, y_val: Validation tensors (the photos themselves) for early stopping.
        n_classes: For class weights.
        on_event, should_stop, on_epoch_row: Progress, cooperative cancel, history rows.

    Raises:
        Cancelled: should_stop() asked to stop.
    """
    unfrozen = unfreeze(top)
    model = classifier_on_tensors(top, head, shape)
    model.compile(optimizer=keras.optimizers.Adam(config.tune_top_blocks_learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    weights = class_weight_for(y_train, n_classes, config.class_weights)
    sample_weight = (np.asarray([weights[int(y)] for y in y_train], np.float32)
                     if weights else None)
    train_ds = CachedTensors(train_x, y_train, shape, config.batch_size, shuffle=True,
                             seed=config.seed, sample_weight=sample_weight)
    val_ds = CachedTensors(val_x, y_val, shape, config.batch_size)
    callback = ProgressCallback(
        on_event, should_stop, phase=PHASE, total_epochs=config.tune_top_blocks_epochs,
        steps_per_epoch=len(train_ds), batch_event_every=EVENT_EVERY_BATCHES,
        on_epoch_row=on_epoch_row)
    log.info("Training %d layers of the top blocks on cached activations", unfrozen)
    # As fine-tuning: the mean of the epochs' weights from the second on when
    # config.fine_tune_averaging (the top blocks memorise a thousand photos within a few
    # epochs; the average generalises better than any one epoch), else the best epoch's.
    ending, averaging = fine_tuning.ending_callbacks(config)
    model.fit(train_ds, validation_data=val_ds, epochs=config.tune_top_blocks_epochs,
              verbose=0, callbacks=[callback, *ending])
    if callback.cancelled:
        raise Cancelled()
    top.trainable = False
    return TopBlocksResult(model, unfrozen, callback.epochs_done,
                           averaging.averaged if averaging else 0)


class CachedTop:
    """One run's top-block stage: a fresh base cut at the boundary, its activation extractor,
    the frozen features computed from the cached tensors, training and the saved network.

    Attributes:
        base: A fresh copy of the base (build_base); its top layers are the ones trained, so
            after training it is the whole trained network.
        boundary: The cut layer (activations.boundary_layer of config.tune_top_blocks).
        shape: One photo's tensor at the boundary.
        top: Boundary tensor -> pooled features (the base's own layers).
        extractor: Runs the bottom (TFLite when faithful, else Keras); fingerprint names the cut.
    """

    def __init__(self, spec: Any, resolved: Any, top_blocks: int, *, home: Any,
                 should_stop: StopCheck | None = None) -> None:
        from core.features import activations, backbones

        self.spec, self.resolved, self.home = spec, resolved, home
        self.top_blocks = top_blocks
        self.base = backbones.build_base(spec, resolved)
        self.boundary = activations.boundary_layer(backbones.nested_base(self.base), top_blocks)
        self.shape = activations.activation_shape(self.base, self.boundary)
        _, self.top = activations.split_base(self.base, self.boundary)
        self.extractor = activations.make_extractor(
            spec, self.base, resolved.fingerprint, self.boundary, home=home,
            should_stop=should_stop)
        self.trained: TopBlocksResult | None = None

    def check_budget(self, tensors: int) -> int:
        """Bytes the run's tensors take; raises ActivationBudgetError over the budget."""
        from core.features import activations

        return activations.check_budget(tensors, self.shape, top_blocks=self.top_blocks)

    def extract(self, paths: list[str], shas: list[str], **kwargs: Any) -> tuple[np.ndarray, Any]:
        """activations.extract_activations for these photos (float16 [views, N, dim])."""
        from core.features import activations

        return activations.extract_activations(
            self.extractor, self.resolved.fingerprint, self.boundary, paths, shas, **kwargs)

    def pooled(self, tensors: np.ndarray) -> np.ndarray:
        """The frozen base's pooled features of flattened tensors (the top before training)."""
        if len(tensors) == 0:
            return np.zeros((0, int(self.top.output_shape[-1])), np.float32)
        return predict(self.top, tensors, self.shape, batch_size=128)

    def pooled_features(self, acts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """extraction-shaped features ({name}_views [V, N, D] and {name}) from the tensors of
        the training run's parts (train, val, test): what the head trains on."""
        out: dict[str, np.ndarray] = {}
        for name in ("train", "val", "test"):
            views = acts[f"{name}_views"]
            pooled = self.pooled(views.reshape(-1, views.shape[-1]))
            out[f"{name}_views"] = pooled.reshape(len(views), views.shape[1], -1)
            out[name] = pooled if name == "train" else out[f"{name}_views"][0]
        return out

    def train(self, head: Any, config: TrainConfig, acts: dict[str, np.ndarray],
              y_train: np.ndarray, y_val: np.ndarray, **kwargs: Any) -> TopBlocksResult:
        """train_top_blocks on every training view (view-major) and the validation photos."""
        train_views = acts["train_views"]
        self.trained = train_top_blocks(
            self.top, head, self.shape, config, train_views.reshape(-1, train_views.shape[-1]),
            np.tile(y_train, len(train_views)), acts["val_views"][0], y_val, **kwargs)
        return self.trained

    def describe(self) -> dict[str, Any]:
        """What the run record says about this stage."""
        return {"top_blocks": self.top_blocks, "boundary": self.boundary,
                "tensor_shape": list(self.shape),
                "tensor_kb": round(int(np.prod(self.shape)) * 2 / 1024, 1),
                "unfrozen_layers": self.trained.unfrozen_layers if self.trained else 0,
                "epochs": self.trained.epochs if self.trained else 0,
                "averaged_epochs": self.trained.averaged_epochs if self.trained else 0,
                "backend": self.extractor.backend,
                "measured_for_base": bool(self.spec.top_blocks_measured)}
