"""The training run: features, the head, optional fine-tuning, evaluation, saving, cancel."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core import device, files, status
from core.config import TrainConfig, studio_home
from core.data import batches, splits, upload_space
from core.errors import AppError, Cancelled, ConfigError, DiskFullError
from core.features import backbones
from core.features import extraction as features
from core.features import weights as base_weights
from core.progress import EventSink, ProgressEvent, StopCheck, never_stop
from core.runs import evaluation
from core.runs.history import FINE_TUNE, HEAD, history_frame
from core.runs.store import RunStore, RunWriter
from core.training import familiarity as familiarity_score
from core.training import fine_tuning, head_search, top_blocks
from core.training import head as head_training
from core.training.callback import ProgressCallback, early_stopping
from core.training.head import build_head, class_weight_for
from core.training.preparation import _check_split, _count_params, _seed, batch_sizes, labels_of
from core.training.result import TrainResult

log = logging.getLogger(__name__)

# Feature-extraction progress is reported every this many images at most.
_EXTRACT_EVENT_EVERY = 32
SEARCH_SKIPPED = ("Too few photos per class to cross-validate (a class needs 2 on training "
                  "and validation together): the manual head settings were used.")
# history.csv is rewritten at most this often while training, and always at the end.
_HISTORY_WRITE_EVERY_SECONDS = 1.0


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
        self.should_stop = should_stop or never_stop
        self.dataset_info = dataset_info or {}
        self.labels = labels_of(self.df)
        self.history_rows: list[dict[str, Any]] = []
        self.seconds = {"features": 0.0, "training": 0.0, "total": 0.0}
        self.search: head_search.SearchResult | None = None
        self.writer: RunWriter | None = None
        self.cache_stats: dict[str, int] = {"hits": 0, "misses": 0}
        self.extract_batch = self.fine_tune_batch = config.batch_size
        self.fine_tune_averaged = 0  # epochs averaged into the fine-tuned weights
        self.fine_tune_rate: dict[str, Any] | None = None  # set when fine-tuning runs
        self._history_written = 0.0
        self.cached_top: top_blocks.CachedTop | None = None  # tune_top_blocks > 0

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
        cfg = self.config
        # Everything that can be checked is checked before the run folder exists, so a bad
        # option (unknown base, unusable weights or handle) leaves no failed run behind.
        self.emit(ProgressEvent(phase="preparing", message="Checking the base and its weights"))
        _check_split(self.df)
        self.spec = backbones.get_spec(cfg.backbone, hub_handle=cfg.hub_handle,
                                       hub_input_size=cfg.hub_input_size)
        self.resolved = base_weights.resolve_weights(self.spec, cfg.weights, seed=cfg.seed,
                                                     hub_handle=cfg.hub_handle)
        self.device_info = device.detect()
        self.writer = store.create(
            self.config, self.labels, self.df, self.dataset_info,
            device={**self.device_info.to_dict(), "summary": self.device_info.summary()},
        )
        try:
            with contextlib.ExitStack() as holding:  # the photos stay while they are read
                for folder in upload_space.upload_folders(self.df["path"], self.home):
                    holding.enter_context(upload_space.hold(folder))
                result = self._run_stages(started)
        except Cancelled:
            self.seconds["total"] = time.monotonic() - started
            self._write_history()
            self.writer.set_status(status.CANCELLED)
            self.emit(ProgressEvent(phase="saving", message="Cancelled: the run is kept as is."))
            return TrainResult(
                run_id=self.writer.run_id, run_dir=self.writer.run_dir, status=status.CANCELLED,
                test_accuracy=None, best_val_accuracy=self._best_val(),
                epochs_run=len(self.history_rows), seconds=self.seconds,
                head_search=self.search.summary() if self.search else None,
            )
        except BaseException as exc:
            if isinstance(exc, OSError) and not isinstance(exc, AppError) \
                    and exc.errno in files.FULL_ERRNOS:
                # A full disk is a message, not a bug: which disk, how much is free.
                exc = files.disk_full(self.writer.run_dir)
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            try:  # on a full disk these writes may fail too: what was saved stays
                self._write_history()
                self.writer.set_status(status.FAILED, error=str(exc) or detail,
                                       traceback=traceback.format_exc())
            except OSError:
                log.warning("Cannot record the failure of run %s", self.writer.run_id,
                            exc_info=True)
            if isinstance(exc, DiskFullError):
                raise exc from None
            raise
        return result

    def _run_stages(self, started: float) -> TrainResult:
        spec, resolved = self.spec, self.resolved
        self.check_stop()  # each stage starts only if nobody asked to stop meanwhile
        # The backend (TFLite conversion and check) is prepared only if a feature is missing.
        if self.config.tune_top_blocks > 0:
            self.cached_top = top_blocks.CachedTop(spec, resolved, self.config.tune_top_blocks,
                                                   home=self.home, should_stop=self.should_stop)
            extractor = self.cached_top.extractor
        else:
            extractor = features.make_extractor(spec, resolved, home=self.home,
                                                defer_backend=True, should_stop=self.should_stop)
        self.check_stop()
        t0 = time.monotonic()
        self.extract_batch, self.fine_tune_batch = batch_sizes(self.device_info,
                                                               spec.input_size, self.config)
        feats = self._extract_all(extractor)
        if self.cached_top is not None:  # the head trains on the frozen top's features
            self.activations = feats
            feats = self.cached_top.pooled_features(feats)
        self.seconds["features"] = time.monotonic() - t0
        self.check_stop()
        # Seeded here, after the base: building one draws random numbers, and the base may
        # come built from an earlier run; the head must start the same either way.
        _seed(self.config.seed, tensorflow=self.config.fine_tune_layers > 0
              or self.config.tune_top_blocks > 0)
        if self.config.head == "search":
            t_search = time.monotonic()
            self.search = self._search_head(feats)
            self.seconds["search"] = time.monotonic() - t_search  # only when it ran
            self.check_stop()
        t1 = time.monotonic()
        feature_dim = int(feats["test"].shape[-1])  # pooled, also with cached activations
        if self.search is not None:
            head = self._refit_head(feats, feature_dim)
        else:
            head = self._train_head(feats, feature_dim)
        tuned = None  # (base, model) when fine-tuned
        if self.config.fine_tune_layers > 0:
            tuned = self._fine_tune(spec, resolved, head, self.device_info)
        elif self.cached_top is not None:
            tuned = self._train_top_blocks(head)
        self.seconds["training"] = time.monotonic() - t1
        self.check_stop()
        val_probs, result, threshold = self._evaluate(spec, head, feats, tuned)
        self.check_stop()
        familiar = self._familiarity(feats, tuned, spec.input_size)
        self.check_stop()
        export = self._save_model(spec, resolved, extractor, head, tuned)
        self.seconds["total"] = time.monotonic() - started
        self._write_metrics(spec, extractor, export, result, val_probs, threshold,
                            fine_tuned=tuned is not None and self.cached_top is None,
                            familiar=familiar)
        self.writer.set_status(status.COMPLETED)
        self.emit(ProgressEvent(
            phase="saving", step=1, total_steps=1, metrics={"test_accuracy": result.accuracy},
            message=f"Done: test accuracy {result.accuracy:.3f}",
        ))
        return TrainResult(
            run_id=self.writer.run_id, run_dir=self.writer.run_dir, status=status.COMPLETED,
            test_accuracy=result.accuracy, best_val_accuracy=self._best_val(),
            epochs_run=len(self.history_rows), seconds=self.seconds, evaluation=result,
            head_search=self.search.summary() if self.search else None,
        )

    def _evaluate(self, spec: Any, head: Any, feats: dict[str, np.ndarray],
                  tuned: tuple[Any, Any] | None) -> tuple[np.ndarray, Any, float]:
        """Test-split evaluation and the unsure threshold chosen on validation.

        Returns:
            (validation probabilities, the test EvalResult, the unsure threshold).
        """
        self.emit(ProgressEvent(phase="evaluating", message="Measuring on the test photos"))
        if self.cached_top is not None:
            shape = self.cached_top.shape
            val_probs = top_blocks.predict(tuned[1], self.activations["val_views"][0], shape)
            test_probs = top_blocks.predict(tuned[1], self.activations["test"], shape)
        elif tuned is not None:
            val_probs = self._predict_images(tuned[1], self.part("val"), spec.input_size)
            test_probs = self._predict_images(tuned[1], self.part("test"), spec.input_size)
        else:
            # One eager call each: predict() would trace a function for two small matrices.
            val_probs = np.asarray(head(feats["val"], training=False))
            test_probs = np.asarray(head(feats["test"], training=False))
        test = self.part("test")
        result = evaluation.evaluate_probabilities(
            test_probs, test["label_index"].to_numpy(), self.labels, test["path"].tolist()
        )
        if self.search is not None:
            # Validation trained the head: the threshold comes from out-of-fold predictions.
            rows = self.search.oof_rows()
            val_probs, y_val = self.search.oof_probs[rows], self.searched_labels[rows]
        else:
            y_val = self.part("val")["label_index"].to_numpy()
        self.val_labels = y_val
        return val_probs, result, evaluation.choose_unsure_threshold(val_probs, y_val)

    def _familiarity(self, feats: dict[str, np.ndarray], tuned: tuple[Any, Any] | None,
                     size: int) -> dict[str, Any]:
        """'None of these' from the features the head reads, stored with the run: the cached
        ones, or the fine-tuned base's for a bounded subsample (core.training.familiarity)."""
        self.emit(ProgressEvent(phase="evaluating", message="Learning what the known classes "
                                "look like (for 'none of these')"))
        t0 = time.monotonic()
        both = pd.concat([self.part("train"), self.part("val")]).reset_index(drop=True)
        test = self.part("test")
        if self.cached_top is not None:  # its top trained in place: pool the cached tensors
            acts = self.activations
            x = self.cached_top.pooled(np.concatenate([acts["train_views"][0],
                                                       acts["val_views"][0]]))
            x_test = self.cached_top.pooled(acts["test"])
        elif tuned is None:
            x, x_test = np.concatenate([feats["train_views"][0], feats["val_views"][0]]), \
                feats["test"]
        else:
            both = familiarity_score.bounded_rows(both, self.config.seed)
            x = self._predict_images(tuned[0], both, size)
            x_test = self._predict_images(tuned[0], test, size)
        familiar = familiarity_score.fit_rows(both, x, seed=self.config.seed)
        familiar.measure_test(x_test, test["path"].tolist())
        self.writer.save_familiarity(familiar)
        self.seconds["familiarity"] = time.monotonic() - t0
        return familiar.facts()

    def _save_model(self, spec: Any, resolved: Any, extractor: Any, head: Any,
                    tuned: tuple[Any, Any] | None) -> Any:
        """Saves one model, raw RGB in, probabilities out; returns it."""
        self.emit(ProgressEvent(phase="saving", message="Saving the model"))
        frozen_base = None
        if tuned is not None:
            base = tuned[0]
        else:
            # The extractor's Keras base computed (or was checked against) every feature.
            # It is the process's shared frozen base, so its saved weights can be reused.
            base = frozen_base = extractor.keras_model
            if base is None:
                base = backbones.build_base(spec, resolved)
        base.trainable = False
        export = fine_tuning.assemble_model(base, head, spec.input_size)
        self.writer.save_model(export, frozen_base=frozen_base)
        self._write_history()
        return export

    def _write_metrics(self, spec: Any, extractor: Any, export: Any, result: Any,
                       val_probs: np.ndarray, threshold: float, *, fine_tuned: bool,
                       familiar: dict[str, Any] | None = None) -> None:
        y_val = self.val_labels
        self.writer.write_metrics({
            "test": result.to_dict(),
            "test_accuracy": result.accuracy,
            "best_val_accuracy": self._best_val(),
            "epochs_run": len(self.history_rows),
            "unsure_threshold": threshold,
            "familiarity": familiar,
            "seconds": self.seconds,
            # "pending": every feature came from the cache, the base never ran.
            "feature_backend": "cache" if extractor.backend == "pending" else extractor.backend,
            "feature_cache": self.cache_stats,
            "params": _count_params(export),
            "depth": spec.depth,
            "input_size": spec.input_size,
            "fine_tuned": fine_tuned,
            "training_mode": ("top blocks on cached activations" if self.cached_top
                              else "fine-tuned" if fine_tuned else "frozen base"),
            "top_blocks": self.cached_top.describe() if self.cached_top else None,
            # Epochs whose weights the fine-tuned model averages (0: one epoch's weights).
            "fine_tune_averaged_epochs": self.fine_tune_averaged,
            # {"value", "source"}: the rate fine-tuning used and where it came from.
            "fine_tune_learning_rate": self.fine_tune_rate,
            # The saved model's own: with averaging, no single epoch's history row shows it.
            # With the head search, validation trained the head: this is then the chosen
            # setting's out-of-fold accuracy (its cross-validated estimate).
            "final_val_accuracy": (float((val_probs.argmax(axis=1) == y_val).mean())
                                   if len(y_val) else None),
            "head_search": (self.search.to_dict() if self.search
                            else {"skipped": SEARCH_SKIPPED} if self.config.head == "search"
                            else None),
            "device": self.device_info.to_dict(),
        })

    def _extract_all(self, extractor: Any) -> dict[str, np.ndarray]:
        cfg = self.config
        views_for_train = cfg.augment_views if cfg.augments else 0
        # The search trains folds on validation photos too, so they need their views.
        views_for_val = views_for_train if cfg.head == "search" else 0
        jobs: list[tuple[str, list[int], pd.DataFrame]] = [
            # Every view of a training photo in one pass: each photo is decoded once.
            ("train", list(range(views_for_train + 1)), self.part("train")),
            ("val", list(range(views_for_val + 1)), self.part("val")),
            ("test", [0], self.part("test")),
        ]
        total = sum(len(views) * len(rows) for _, views, rows in jobs)
        if self.cached_top is not None:  # refused before any work when it cannot fit
            self.cached_top.check_budget(total)
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

            extract = (self.cached_top.extract if self.cached_top is not None
                       else functools.partial(features.extract_views, extractor))
            matrices, stats = extract(
                rows["path"].tolist(), rows["sha256"].tolist(), home=self.home,
                views=views, batch_size=self.extract_batch, on_progress=progress,
                should_stop=self.should_stop,
            )
            hits += stats.hits
            misses += stats.misses
            # View-major rows: _train_head tiles the labels once per view.
            views_first = matrices.reshape(len(views), len(rows), -1)
            out[f"{name}_views"] = views_first
            out[name] = (views_first.reshape(-1, views_first.shape[-1]) if name == "train"
                         else views_first[0])
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
            on_epoch_row=lambda row: self._add_history(HEAD, row),
        )
        head_training.fit_head(
            head, feats["train"], y_train, feats["val"], self.part("val")["label_index"].to_numpy(),
            epochs=cfg.epochs, batch_size=cfg.batch_size, learning_rate=cfg.learning_rate,
            dropout=cfg.dropout, l2=cfg.l2, seed=cfg.seed,
            class_weight=class_weight_for(y_train, len(self.labels), cfg.class_weights),
            callbacks=[callback, *early_stopping(cfg.early_stopping_patience)],
        )
        if callback.cancelled:
            raise Cancelled()
        return head

    def _search_head(self, feats: dict[str, np.ndarray]) -> head_search.SearchResult | None:
        """Cross-validated search on train + validation (never test); its record is saved."""
        train, val = self.part("train"), self.part("val")
        n_views = min(len(feats["train_views"]), len(feats["val_views"]))
        views = np.concatenate([feats["train_views"][:n_views], feats["val_views"][:n_views]],
                               axis=1)
        self.searched_labels = np.concatenate([train["label_index"].to_numpy(),
                                               val["label_index"].to_numpy()])
        both = pd.concat([train, val])
        column = splits.GROUP_COLUMN if splits.GROUP_COLUMN in both.columns else "sha256"
        self.emit(ProgressEvent(phase=head_search.PHASE, message="Searching the head's "
                                "settings by cross-validation on train + validation"))
        result = head_search.search(
            views, self.searched_labels, n_classes=len(self.labels), config=self.config,
            groups=both[column].astype(str).to_numpy(), on_event=self.emit,
            should_stop=self.should_stop)
        if result is None:
            self.emit(ProgressEvent(phase=head_search.PHASE, message=SEARCH_SKIPPED))
            return None
        self.writer.write_head_search(result.to_dict())
        return result

    def _refit_head(self, feats: dict[str, np.ndarray], feature_dim: int) -> Any:
        """The searched setting trained on train + validation (head_search.refit).

        Its history rows hold the refit's training loss and accuracy, and as validation
        the chosen setting's held-out loss and accuracy at that epoch averaged over the
        folds: the validation photos are training photos now.
        """
        search = self.search
        head = build_head(feature_dim, len(self.labels),
                          search.chosen.setting.apply(self.config))
        callback = ProgressCallback(
            self.emit, self.should_stop, phase="training head",
            total_epochs=search.refit_epochs,
            on_epoch_row=lambda row: self._add_history(HEAD, row),
        )
        views = np.concatenate([feats["train_views"], feats["val_views"]], axis=1)
        head_search.refit(head, views, self.searched_labels, search, self.config,
                          callbacks=[callback])
        if callback.cancelled:
            raise Cancelled()
        return head

    def _fine_tune(self, spec: Any, resolved: Any, head: Any, info: Any) -> tuple[Any, Any]:
        # The rate is resolved against the head's rate this run used, and recorded.
        head_rate = (self.search.chosen.setting.learning_rate if self.search is not None
                     else self.config.learning_rate)
        rate, source = self.config.fine_tune_rate(head_rate, searched=self.search is not None)
        self.fine_tune_rate = {"value": rate, "source": source}
        config = dataclasses.replace(self.config, fine_tune_learning_rate=rate)
        tuned = fine_tuning.fine_tune(
            spec, resolved, head, config, self.part("train"),
            # The search trained the head on the validation photos: none is held out now.
            None if self.search is not None else self.part("val"),
            n_classes=len(self.labels), info=info, batch=self.fine_tune_batch,
            on_event=self.emit, should_stop=self.should_stop,
            on_epoch_row=lambda row: self._add_history(FINE_TUNE, row))
        self.fine_tune_averaged = tuned.averaged_epochs
        return tuned.base, tuned.model

    def _train_top_blocks(self, head: Any) -> tuple[Any, Any]:
        """Top blocks + head on the cached tensors; returns (trained base, tensor model)."""
        trained = self.cached_top.train(
            head, self.config, self.activations, self.part("train")["label_index"].to_numpy(),
            self.part("val")["label_index"].to_numpy(), n_classes=len(self.labels),
            on_event=self.emit, should_stop=self.should_stop,
            on_epoch_row=lambda row: self._add_history(FINE_TUNE, row))
        self.fine_tune_averaged = trained.averaged_epochs
        return self.cached_top.base, trained.model

    def _predict_images(self, model: Any, rows: pd.DataFrame, size: int) -> np.ndarray:
        ds = batches.make_tf_dataset(rows["path"].tolist(), None, size, self.fine_tune_batch)
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
        self.writer.write_history(history_frame(self.history_rows))

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
        split_df: Index with a "split" column (train/val/test), from splits.split().
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
