"""Head training on a frozen base, optional fine-tuning, progress events and cancel."""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd

from core import backbones, device, evaluation, features, head_training, images
from core.config import TrainConfig, studio_home
from core.errors import Cancelled, ConfigError, DatasetError
from core.runs import RunStore, RunWriter

log = logging.getLogger(__name__)

PHASES = (
    "preparing",
    "extracting features",
    "training head",
    "fine-tuning",
    "evaluating",
    "saving",
)

# Feature-extraction progress is reported every this many images at most.
_EXTRACT_EVENT_EVERY = 32
# Fine-tuning batches are slow on a CPU, so report some batches, not only epochs.
_FINE_TUNE_EVENT_EVERY_BATCHES = 5
# history.csv is rewritten at most this often while training, and always at the end.
_HISTORY_WRITE_EVERY_SECONDS = 1.0


@dataclass(frozen=True)
class ProgressEvent:
    """One step of progress of a training run.

    Attributes:
        phase: One of PHASES.
        step: Steps done in this phase: images for extraction, epochs for head training,
            batches for fine-tuning (slow enough to show progress within an epoch).
        total_steps: Steps this phase will take at most.
        epoch: Epoch number (1-based) within the phase, when training.
        total_epochs: Most epochs of the phase, when training.
        metrics: Latest metrics (loss, accuracy, val_loss, val_accuracy...).
        eta_seconds: Estimated seconds until the phase ends, when known.
        message: A sentence for people.
        epoch_end: True on the one event sent when an epoch ends (its metrics are final).
        time: Unix time the event was made.
    """

    phase: str
    step: int = 0
    total_steps: int = 0
    epoch: int | None = None
    total_epochs: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    eta_seconds: float | None = None
    message: str = ""
    time: float = field(default_factory=time.time)
    epoch_end: bool = False

    @property
    def fraction(self) -> float:
        """Share of this phase done, 0..1."""
        return min(1.0, self.step / self.total_steps) if self.total_steps else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return dataclasses.asdict(self)


EventSink = Callable[[ProgressEvent], None]
StopCheck = Callable[[], bool]


def _never_stop() -> bool:
    return False


@dataclass
class TrainResult:
    """What a training run produced.

    Attributes:
        run_id: Id of the run folder.
        run_dir: The run folder.
        status: completed or cancelled.
        test_accuracy: Accuracy on the test split (None when cancelled).
        best_val_accuracy: Best validation accuracy over all epochs.
        epochs_run: Epochs trained, head and fine-tune together.
        seconds: Wall time of features, training (head + fine-tune) and total.
        evaluation: Test-split evaluation, None when cancelled.
    """

    run_id: str
    run_dir: Path
    status: str
    test_accuracy: float | None
    best_val_accuracy: float | None
    epochs_run: int
    seconds: dict[str, float]
    evaluation: evaluation.EvalResult | None = None

    def to_dict(self) -> dict[str, Any]:
        """The command line's JSON contract."""
        return {
            "run_id": self.run_id,
            "run_dir": str(self.run_dir),
            "status": self.status,
            "test_accuracy": self.test_accuracy,
            "best_val_accuracy": self.best_val_accuracy,
            "epochs_run": self.epochs_run,
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
        }


class ProgressCallback(keras.callbacks.Callback):
    """Adapts Keras hooks to ProgressEvents, per-epoch history rows and cooperative cancel."""

    def __init__(
        self,
        on_event: EventSink,
        should_stop: StopCheck | None = None,
        *,
        phase: str,
        total_epochs: int,
        steps_per_epoch: int | None = None,
        on_epoch_row: Callable[[dict[str, Any]], None] | None = None,
        batch_event_every: int = 0,
    ) -> None:
        super().__init__()
        self.on_event = on_event
        self.should_stop = should_stop or _never_stop
        self.phase = phase
        self.total_epochs = total_epochs
        self.steps_per_epoch = steps_per_epoch
        self.on_epoch_row = on_epoch_row
        self.batch_event_every = batch_event_every
        self.cancelled = False
        self.epochs_done = 0
        self._phase_start = time.monotonic()
        self._epoch_start = self._phase_start
        self._epoch = 0

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._phase_start = time.monotonic()
        self.on_event(ProgressEvent(
            phase=self.phase, step=0, total_steps=self.total_epochs, epoch=0,
            total_epochs=self.total_epochs, message=f"{self.phase.capitalize()}: starting",
        ))

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = epoch
        self._epoch_start = time.monotonic()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.should_stop():
            # Keras 3 checks stop_training after every batch, so cancel lands within one.
            self.cancelled = True
            self.model.stop_training = True
            return
        every = self.batch_event_every
        if every and (batch + 1) % every == 0 and self.steps_per_epoch:
            done = self._epoch + (batch + 1) / self.steps_per_epoch
            elapsed = time.monotonic() - self._phase_start
            eta = elapsed / done * (self.total_epochs - done) if done else None
            step, total = self._steps(self._epoch, batch + 1)
            self.on_event(ProgressEvent(
                phase=self.phase, step=step, total_steps=total,
                epoch=self._epoch + 1, total_epochs=self.total_epochs,
                metrics=_floats(logs), eta_seconds=eta,
                message=f"Epoch {self._epoch + 1}/{self.total_epochs}, "
                        f"batch {batch + 1}/{self.steps_per_epoch}",
            ))

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.cancelled:
            return
        self.epochs_done = epoch + 1
        metrics = _floats(logs)
        seconds = time.monotonic() - self._epoch_start
        if self.on_epoch_row:
            self.on_epoch_row({"phase_epoch": epoch + 1, "seconds": seconds, **metrics})
        elapsed = time.monotonic() - self._phase_start
        eta = elapsed / (epoch + 1) * (self.total_epochs - epoch - 1)
        step, total = self._steps(epoch + 1, 0)
        self.on_event(ProgressEvent(
            phase=self.phase, step=step, total_steps=total,
            epoch=epoch + 1, total_epochs=self.total_epochs, metrics=metrics,
            eta_seconds=eta, message=_epoch_message(epoch + 1, self.total_epochs, metrics),
            epoch_end=True,
        ))

    def _steps(self, epochs_done: int, batches_done: int) -> tuple[int, int]:
        """(step, total_steps): batches when their count per epoch is known, else epochs."""
        if self.steps_per_epoch:
            per = self.steps_per_epoch
            return epochs_done * per + batches_done, self.total_epochs * per
        return epochs_done, self.total_epochs


def _floats(logs: dict | None) -> dict[str, float]:
    return {k: float(v) for k, v in (logs or {}).items() if _is_number(v)}


def _is_number(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _epoch_message(epoch: int, total: int, metrics: dict[str, float]) -> str:
    parts = [f"Epoch {epoch}/{total}"]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        if key in metrics:
            parts.append(f"{key} {metrics[key]:.3f}")
    return ", ".join(parts)


def labels_of(split_df: pd.DataFrame) -> list[str]:
    """Class names in label_index order."""
    pairs = split_df[["label_index", "label"]].drop_duplicates().sort_values("label_index")
    if list(pairs["label_index"]) != list(range(len(pairs))):
        raise DatasetError(
            "Label indices must run 0..N-1 with one name each; re-ingest the dataset."
        )
    return pairs["label"].tolist()


def _seed(seed: int, *, tensorflow: bool) -> None:
    """Seeds Python's and NumPy's generators, and TensorFlow's and Keras' when asked.

    The head on cached features draws only from Python's generator (its initial weights; its
    dropout and batch order take explicit seeds). Seeding TensorFlow also clears its kernel
    cache, so the head's compiled steps were set up again in every run (0.15-0.25 s); only
    fine-tuning (tf.data, augmentation, Keras' generator) needs TensorFlow seeded.
    """
    if tensorflow:
        keras.utils.set_random_seed(seed)
        return
    random.seed(seed)
    np.random.seed(seed)


def _check_split(split_df: pd.DataFrame) -> None:
    required = {"path", "label", "label_index", "sha256", "split"}
    missing = required - set(split_df.columns)
    if missing:
        raise DatasetError(
            f"The split table lacks columns {sorted(missing)}; build it with datasets.split()."
        )
    for name in ("train", "val", "test"):
        if not (split_df["split"] == name).any():
            raise DatasetError(
                f"The {name} split is empty; add images or change the split shares."
            )
    if split_df["label_index"].nunique() < 2:
        raise DatasetError("Training needs at least 2 classes; add another class folder.")


def class_weight_for(y: np.ndarray, n_classes: int, mode: str) -> dict[int, float] | None:
    """Balanced weights n / (k * count) as in scikit-learn, or None when off."""
    if mode == "off":
        return None
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    weights = len(y) / (n_classes * np.maximum(counts, 1.0))
    return {i: float(w) for i, w in enumerate(weights)}


def batch_sizes(info: Any, input_size: int, config: TrainConfig) -> tuple[int, int]:
    """(feature-extraction batch, fine-tuning batch) that fit the device.

    On a GPU, inference takes the largest batch its memory allows; fine-tuning keeps the
    chosen batch size unless it would not fit. On a CPU both are the chosen batch size.
    """
    chosen = config.batch_size
    if info.kind != "gpu":
        return chosen, chosen
    extract = device.suggest_batch_size(info, input_size, training=False, default=chosen)
    fits = device.suggest_batch_size(info, input_size, training=True, default=chosen)
    return max(extract, chosen), min(chosen, fits)


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


def _compile(model: Any, learning_rate: float) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )


def _early_stopping(patience: int, *, restore_best: bool = True) -> list[Any]:
    if patience <= 0:
        return []
    return [keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=patience, restore_best_weights=restore_best, verbose=0,
    )]


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
    """Raw RGB (S,S,3) -> [augmentation] -> base (inference mode) -> head -> probabilities."""
    inputs = keras.Input((input_size, input_size, 3), name="image")
    x = augmenter(inputs) if augmenter is not None else inputs
    feats = base(x, training=False)
    outputs = head(feats)
    return keras.Model(inputs, outputs, name="classifier")


def _count_params(model: Any) -> dict[str, int]:
    trainable = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    total = int(model.count_params())
    return {"total": total, "trainable": trainable, "non_trainable": total - trainable}


class _Trainer:
    """One training run from split table to saved run; train() is its public face."""

    def __init__(
        self,
        split_df: pd.DataFrame,
        config: TrainConfig,
        home: Path,
        on_event: EventSink | None,
        should_stop: StopCheck | None,
        dataset_info: dict[str, Any] | None,
    ) -> None:
        self.df = split_df.reset_index(drop=True)
        self.config = config
        self.home = home
        self.user_on_event = on_event
        self.should_stop = should_stop or _never_stop
        self.dataset_info = dataset_info or {}
        self.labels = labels_of(self.df)
        self.history_rows: list[dict[str, Any]] = []
        self.seconds = {"features": 0.0, "training": 0.0, "total": 0.0}
        self.writer: RunWriter | None = None
        self.cache_stats: dict[str, int] = {"hits": 0, "misses": 0}
        self.extract_batch = self.fine_tune_batch = config.batch_size
        self.weight_averaging: WeightAveraging | None = None
        self._history_written = 0.0

    def emit(self, event: ProgressEvent) -> None:
        if self.writer is not None:
            self.writer.append_event(event.to_dict())
        if self.user_on_event is not None:
            self.user_on_event(event)

    def check_stop(self) -> None:
        if self.should_stop():
            raise Cancelled()

    def part(self, name: str) -> pd.DataFrame:
        return self.df[self.df["split"] == name]

    def run(self) -> TrainResult:
        started = time.monotonic()
        store = RunStore(self.home)
        self.device_info = device.detect()
        self.writer = store.create(
            self.config, self.labels, self.df, self.dataset_info,
            device={**self.device_info.to_dict(), "summary": self.device_info.summary()},
        )
        try:
            result = self._run_stages(started)
        except Cancelled:
            self.seconds["total"] = time.monotonic() - started
            self._write_history()
            self.writer.set_status("cancelled")
            self.emit(ProgressEvent(phase="saving", message="Cancelled: the run is kept as is."))
            return TrainResult(
                run_id=self.writer.run_id, run_dir=self.writer.run_dir, status="cancelled",
                test_accuracy=None, best_val_accuracy=self._best_val(),
                epochs_run=len(self.history_rows), seconds=self.seconds,
            )
        except BaseException as exc:
            self._write_history()
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            self.writer.set_status("failed", error=str(exc) or detail,
                                   traceback=traceback.format_exc())
            raise
        return result

    def _run_stages(self, started: float) -> TrainResult:
        cfg = self.config
        self.emit(ProgressEvent(phase="preparing", message="Checking the base and its weights"))
        _check_split(self.df)
        spec = backbones.get_spec(cfg.backbone, hub_handle=cfg.hub_handle,
                                  hub_input_size=cfg.hub_input_size)
        resolved = backbones.resolve_weights(spec, cfg.weights, seed=cfg.seed,
                                             hub_handle=cfg.hub_handle)
        info = self.device_info

        # Stage 1: features of every image (train views too when augmenting).
        t0 = time.monotonic()
        # The backend (TFLite conversion and check) is prepared only if a feature is missing.
        extractor = features.make_extractor(spec, resolved, home=self.home, defer_backend=True)
        self.extract_batch, self.fine_tune_batch = batch_sizes(info, spec.input_size, cfg)
        feats = self._extract_all(extractor)
        self.seconds["features"] = time.monotonic() - t0
        # Seeded here, after the base: building one draws random numbers, and the base may
        # come built from an earlier run; the head must start the same either way.
        _seed(cfg.seed, tensorflow=cfg.fine_tune_layers > 0)

        # Stage 2: the head on cached features.
        t1 = time.monotonic()
        head = self._train_head(feats, extractor.feature_dim)
        base = None
        fine_tuned = False
        if cfg.fine_tune_layers > 0:
            base, model = self._fine_tune(spec, resolved, head, info)
            fine_tuned = True
        self.seconds["training"] = time.monotonic() - t1

        # Stage 3: evaluate on the test split, choose the unsure threshold on validation.
        self.emit(ProgressEvent(phase="evaluating", message="Measuring on the test photos"))
        if fine_tuned:
            val_probs = self._predict_images(model, self.part("val"), spec.input_size)
            test_probs = self._predict_images(model, self.part("test"), spec.input_size)
        else:
            # One eager call each: predict() would trace a function for two small matrices.
            val_probs = np.asarray(head(feats["val"], training=False))
            test_probs = np.asarray(head(feats["test"], training=False))
        test = self.part("test")
        result = evaluation.evaluate_probabilities(
            test_probs, test["label_index"].to_numpy(), self.labels, test["path"].tolist()
        )
        y_val = self.part("val")["label_index"].to_numpy()
        threshold = evaluation.choose_unsure_threshold(val_probs, y_val)
        self.check_stop()

        # Stage 4: one exported model, raw RGB in, probabilities out.
        self.emit(ProgressEvent(phase="saving", message="Saving the model"))
        frozen_base = None
        if base is None:
            # The extractor's Keras base computed (or was checked against) every feature.
            # It is the process's shared frozen base, so its saved weights can be reused.
            base = frozen_base = extractor.keras_model
            if base is None:
                base = backbones.build_base(spec, resolved)
        base.trainable = False
        export = assemble_model(base, head, spec.input_size)
        self.writer.save_model(export, frozen_base=frozen_base)
        self._write_history()
        self.seconds["total"] = time.monotonic() - started
        params = _count_params(export)
        metrics = {
            "test": result.to_dict(),
            "test_accuracy": result.accuracy,
            "best_val_accuracy": self._best_val(),
            "epochs_run": len(self.history_rows),
            "unsure_threshold": threshold,
            "seconds": self.seconds,
            # "pending": every feature came from the cache, the base never ran.
            "feature_backend": "cache" if extractor.backend == "pending" else extractor.backend,
            "feature_cache": self.cache_stats,
            "params": params,
            "depth": spec.depth,
            "input_size": spec.input_size,
            "fine_tuned": fine_tuned,
            # Epochs whose weights the fine-tuned model averages (0: one epoch's weights).
            "fine_tune_averaged_epochs": (self.weight_averaging.averaged
                                          if self.weight_averaging else 0),
            # The saved model's own: with averaging, no single epoch's history row shows it.
            "final_val_accuracy": float((val_probs.argmax(axis=1) == y_val).mean()),
            "device": info.to_dict(),
        }
        self.writer.write_metrics(metrics)
        self.writer.set_status("completed")
        self.emit(ProgressEvent(
            phase="saving", step=1, total_steps=1, metrics={"test_accuracy": result.accuracy},
            message=f"Done: test accuracy {result.accuracy:.3f}",
        ))
        return TrainResult(
            run_id=self.writer.run_id, run_dir=self.writer.run_dir, status="completed",
            test_accuracy=result.accuracy, best_val_accuracy=self._best_val(),
            epochs_run=len(self.history_rows), seconds=self.seconds, evaluation=result,
        )

    def _extract_all(self, extractor: Any) -> dict[str, np.ndarray]:
        cfg = self.config
        views_for_train = cfg.augment_views if cfg.augments else 0
        jobs: list[tuple[str, list[int], pd.DataFrame]] = [
            # Every view of a training photo in one pass: each photo is decoded once.
            ("train", list(range(views_for_train + 1)), self.part("train")),
            ("val", [0], self.part("val")),
            ("test", [0], self.part("test")),
        ]
        total = sum(len(views) * len(rows) for _, views, rows in jobs)
        done_before = 0
        started = time.monotonic()
        out: dict[str, np.ndarray] = {}
        hits = misses = 0

        for name, views, rows in jobs:
            offset = done_before
            last = [0]
            note = " (training photos with their augmented views)" if len(views) > 1 else ""

            def progress(done: int, _total: int, offset: int = offset, last: list = last,
                         note: str = note) -> None:
                overall = offset + done
                if overall - last[0] < _EXTRACT_EVENT_EVERY and done != _total:
                    return
                last[0] = overall
                elapsed = time.monotonic() - started
                eta = elapsed / overall * (total - overall) if overall else None
                self.emit(ProgressEvent(
                    phase="extracting features", step=overall, total_steps=total,
                    eta_seconds=eta, message=f"Features of {overall}/{total} images{note}",
                ))

            matrices, stats = features.extract_views(
                extractor, rows["path"].tolist(), rows["sha256"].tolist(), home=self.home,
                views=views, batch_size=self.extract_batch, on_progress=progress,
                should_stop=self.should_stop,
            )
            hits += stats.hits
            misses += stats.misses
            # View-major rows: _train_head tiles the labels once per view.
            out[name] = matrices.reshape(-1, matrices.shape[-1])
            done_before += len(views) * len(rows)
        self.cache_stats = {"hits": hits, "misses": misses}
        return out

    def _train_head(self, feats: dict[str, np.ndarray], feature_dim: int) -> Any:
        cfg = self.config
        n_views = len(feats["train"]) // max(len(self.part("train")), 1)
        y_train = np.tile(self.part("train")["label_index"].to_numpy(), n_views)
        head = build_head(feature_dim, len(self.labels), cfg)
        callback = ProgressCallback(
            self.emit, self.should_stop, phase="training head", total_epochs=cfg.epochs,
            on_epoch_row=lambda row: self._add_history("head", row),
        )
        head_training.fit_head(
            head, feats["train"], y_train, feats["val"], self.part("val")["label_index"].to_numpy(),
            epochs=cfg.epochs, batch_size=cfg.batch_size, learning_rate=cfg.learning_rate,
            dropout=cfg.dropout, l2=cfg.l2, seed=cfg.seed,
            class_weight=class_weight_for(y_train, len(self.labels), cfg.class_weights),
            callbacks=[callback, *_early_stopping(cfg.early_stopping_patience)],
        )
        if callback.cancelled:
            raise Cancelled()
        return head

    def _fine_tune(self, spec: Any, resolved: Any, head: Any, info: Any) -> tuple[Any, Any]:
        cfg = self.config
        train, val = self.part("train"), self.part("val")
        strategy = device.distribution_strategy(info)
        mixed = device.use_mixed_precision(info)
        previous_policy = keras.mixed_precision.global_policy()
        if mixed:
            keras.mixed_precision.set_global_policy("mixed_float16")
        try:
            with strategy.scope():
                base = backbones.build_base(spec, resolved)
                unfrozen = unfreeze_top(base, cfg.fine_tune_layers)
                augmenter = features.make_augmenter(cfg.seed) if cfg.augments else None
                model = assemble_model(base, head, spec.input_size, augmenter)
                _compile(model, cfg.fine_tune_learning_rate)
        finally:
            keras.mixed_precision.set_global_policy(previous_policy)
        log.info("Fine-tuning %d layers with weights", unfrozen)
        batch = self.fine_tune_batch
        if batch < cfg.batch_size:
            self.emit(ProgressEvent(
                phase="fine-tuning", message=f"Batch size {cfg.batch_size} does not fit the GPU's "
                f"memory for fine-tuning; using {batch}",
            ))
        train_ds = images.make_tf_dataset(
            train["path"].tolist(), train["label_index"].tolist(), spec.input_size, batch,
            shuffle=True, seed=cfg.seed,
        )
        val_ds = images.make_tf_dataset(
            val["path"].tolist(), val["label_index"].tolist(), spec.input_size, batch,
        )
        steps = math.ceil(len(train) / batch)
        callback = ProgressCallback(
            self.emit, self.should_stop, phase="fine-tuning", total_epochs=cfg.fine_tune_epochs,
            steps_per_epoch=steps, batch_event_every=_FINE_TUNE_EVENT_EVERY_BATCHES,
            on_epoch_row=lambda row: self._add_history("fine-tune", row),
        )
        model.fit(
            train_ds, validation_data=val_ds, epochs=cfg.fine_tune_epochs, verbose=0,
            shuffle=False,  # make_tf_dataset reshuffles every epoch itself
            class_weight=class_weight_for(train["label_index"].to_numpy(), len(self.labels),
                                          cfg.class_weights),
            callbacks=[callback, *self._fine_tune_ending()],
        )
        if callback.cancelled:
            raise Cancelled()
        return base, model

    def _fine_tune_ending(self) -> list[Any]:
        """Early stopping, and either the averaged weights or the best epoch's at the end."""
        cfg = self.config
        if not cfg.fine_tune_averaging:
            return _early_stopping(cfg.early_stopping_patience)
        # The average replaces restoring one epoch; stopping early still ends the phase.
        self.weight_averaging = WeightAveraging(first_epoch=1)
        return [*_early_stopping(cfg.early_stopping_patience, restore_best=False),
                self.weight_averaging]

    def _predict_images(self, model: Any, rows: pd.DataFrame, size: int) -> np.ndarray:
        ds = images.make_tf_dataset(rows["path"].tolist(), None, size, self.fine_tune_batch)
        return model.predict(ds, verbose=0)

    def _add_history(self, phase: str, row: dict[str, Any]) -> None:
        self.history_rows.append({"epoch": len(self.history_rows) + 1, "phase": phase, **row})
        # Head epochs take milliseconds: rewriting the file after each would cost more than
        # the epochs. Every run's end (completed, cancelled or failed) writes it in full.
        if time.monotonic() - self._history_written >= _HISTORY_WRITE_EVERY_SECONDS:
            self._write_history()

    def _write_history(self) -> None:
        if self.writer is None:
            return
        self._history_written = time.monotonic()
        columns = ["epoch", "phase", "phase_epoch", "loss", "accuracy", "val_loss",
                   "val_accuracy", "seconds"]
        frame = pd.DataFrame(self.history_rows)
        for col in columns:
            if col not in frame.columns:
                frame[col] = pd.Series(dtype="float64")
        self.writer.write_history(frame[columns + [c for c in frame.columns
                                                   if c not in columns]])

    def _best_val(self) -> float | None:
        values = [r["val_accuracy"] for r in self.history_rows if "val_accuracy" in r]
        return max(values) if values else None


def train(
    split_df: pd.DataFrame,
    config: TrainConfig | None = None,
    *,
    home: str | Path | None = None,
    on_event: EventSink | None = None,
    should_stop: StopCheck | None = None,
    dataset_info: dict[str, Any] | None = None,
) -> TrainResult:
    """Trains a classifier on a split dataset and saves it as a run.

    Args:
        split_df: Index with a "split" column (train/val/test), from datasets.split().
        config: Training options; TrainConfig() when None.
        home: Studio home (runs and caches); $TL_STUDIO_HOME or ~/.tl-studio when None.
        on_event: Called with every ProgressEvent.
        should_stop: Polled every batch; returning True cancels cooperatively.
        dataset_info: Facts about the dataset stored with the run (name, source, counts).

    Returns:
        A TrainResult; status "cancelled" when should_stop() asked for it.

    Raises:
        AppError: for problems a user can fix (weights, dataset, options); the run is then
            kept with status "failed" and the message.
    """
    if config is None:
        config = TrainConfig()
    if not isinstance(config, TrainConfig):
        raise ConfigError("config must be a TrainConfig.")
    trainer = _Trainer(split_df, config, studio_home(home), on_event, should_stop, dataset_info)
    return trainer.run()
