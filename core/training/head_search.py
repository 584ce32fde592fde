"""Cross-validated search over the head's settings on cached features (train + validation).

With the features cached, one head trains in well under a second, so the settings of the
head (L2, dropout, learning rate, label smoothing, a hidden layer or none, the cached
augmented views or not) can be chosen by k-fold cross-validation on train + validation
together instead of being fixed. The search is successive halving under a budget in
seconds: random settings (today's manual default always first), as many as a model of a
fit's seconds puts in the budget (so a seed always chooses the same head), are tried on one
fold, the best third go on to three folds, the best third of those to all folds (the
manual setting always goes on, as the baseline); on the clock, no fit starts once the
budget is spent (a slower machine then stops sooner). The best setting is chosen unless it
leads the manual one by no more than the noise of the folds (one standard error of the
paired fold differences), a rule that keeps chance leads from replacing a sound default.
Each fold
trains until its held-out loss stops improving (the early-stopping rule of a manual run),
which also gives the number of epochs of the refit. The test split never reaches this
module: the trainer passes train + validation only.

The result keeps every setting tried with its cross-validated accuracy (mean and spread
over the folds it reached), the chosen one, the out-of-fold probabilities of the chosen one
(the unsure threshold is chosen on them), and its mean validation curve per epoch.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np

from core.config import TrainConfig
from core.data import splits
from core.progress import EventSink, ProgressEvent, StopCheck, never_stop
from core.training import head as head_training
from core.training.head_space import (
    ETA,
    MAX_SETTINGS,
    PLAN_SHARE,
    SETTINGS_EXAMINED,
    HeadSetting,
    plan_seconds,
    predicted_fit_seconds,
    scaled_budget,
    settings_to_try,
)

log = logging.getLogger(__name__)

PHASE = "searching head"
DEFAULT_FOLDS = 5
# Progress events at most this often (each is appended to the run's events log).
_EVENT_EVERY_SECONDS = 0.25


@dataclass
class Trial:
    """One setting and what its folds gave."""

    setting: HeadSetting
    accuracies: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    best_epochs: list[int] = field(default_factory=list)
    curves: list[list[tuple[float, float]]] = field(default_factory=list)
    fold_probs: dict[int, np.ndarray] = field(default_factory=dict)

    @property
    def folds_done(self) -> int:
        return len(self.accuracies)

    @property
    def mean_accuracy(self) -> float:
        return float(np.mean(self.accuracies)) if self.accuracies else float("nan")

    @property
    def spread(self) -> float:
        """Standard deviation of the fold accuracies (0 with one fold)."""
        return float(np.std(self.accuracies)) if self.accuracies else float("nan")

    @property
    def mean_loss(self) -> float:
        return float(np.mean(self.losses)) if self.losses else float("inf")

    def rank_key(self) -> tuple[float, float, float]:
        """Sorts best first: most folds, then highest mean accuracy, then lowest loss."""
        return (-self.folds_done, -self.mean_accuracy, self.mean_loss)


@dataclass
class SearchResult:
    """What a search tried and chose.

    Attributes:
        trials: Every setting tried, in the order tried.
        chosen: The best trial (most folds, then mean accuracy, then held-out loss), or the
            manual setting when the best leads it by no more than the folds' noise.
        folds: Folds of the cross-validation.
        fold_of_row: Fold of each row of the searched features.
        refit_epochs: Epochs of the refit: the chosen setting's mean best epoch.
        oof_probs: [N, C] out-of-fold probabilities of the chosen setting; rows of folds
            it did not reach are NaN.
        stopped: "finished", "budget" or "cancelled".
        seconds: Wall time of the search.
        budget_seconds: The budget on the clock (the search_seconds option).
        plan_seconds: The modelled seconds the plan filled (a share of the budget scaled
            down on small data).
    """

    trials: list[Trial]
    chosen: Trial
    folds: int
    fold_of_row: np.ndarray
    refit_epochs: int
    oof_probs: np.ndarray
    stopped: str
    seconds: float
    budget_seconds: float
    plan_seconds: float

    def oof_rows(self) -> np.ndarray:
        """Indices of the rows that have an out-of-fold prediction."""
        return np.flatnonzero(~np.isnan(self.oof_probs).any(axis=1))

    def cv_curve(self) -> list[dict[str, float]]:
        """Per epoch, the chosen setting's held-out loss and accuracy averaged over folds."""
        rows = []
        longest = max((len(c) for c in self.chosen.curves), default=0)
        for epoch in range(longest):
            points = [c[epoch] for c in self.chosen.curves if len(c) > epoch]
            rows.append({"val_loss": float(np.mean([p[0] for p in points])),
                         "val_accuracy": float(np.mean([p[1] for p in points]))})
        return rows

    def summary(self) -> dict[str, Any]:
        """The command line's head_search: {"tried", "chosen", "cv_accuracy"}."""
        return {"tried": len(self.trials), "chosen": self.chosen.setting.to_dict(),
                "cv_accuracy": round(self.chosen.mean_accuracy, 6)}

    def table(self) -> list[dict[str, Any]]:
        """One row per setting tried, best first."""
        rows = []
        for trial in sorted(self.trials, key=Trial.rank_key):
            rows.append({**trial.setting.to_dict(), "folds": trial.folds_done,
                         "cv_accuracy": round(trial.mean_accuracy, 6),
                         "cv_spread": round(trial.spread, 6),
                         "cv_loss": round(trial.mean_loss, 6),
                         "epochs": round(float(np.mean(trial.best_epochs)), 1),
                         "chosen": trial is self.chosen})
        return rows

    def to_dict(self) -> dict[str, Any]:
        """What a run stores (metrics.json "head_search" and head_search.json)."""
        return {**self.summary(), "cv_spread": round(self.chosen.spread, 6),
                "folds": self.folds, "chosen_folds": self.chosen.folds_done,
                "refit_epochs": self.refit_epochs, "stopped": self.stopped,
                "seconds": round(self.seconds, 3), "budget_seconds": round(self.budget_seconds, 3),
                "plan_seconds": round(self.plan_seconds, 3),
                "table": self.table()}


class CrossValidatedLogs(keras.callbacks.Callback):
    """Adds a cross-validated curve's val_loss and val_accuracy to each epoch's logs.

    A refit on train + validation has no held-out rows; the callbacks after this one see,
    as validation, the searched setting's held-out curve at the same epoch.
    """

    def __init__(self, curve: list[dict[str, float]]) -> None:
        super().__init__()
        self.curve = curve

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None and self.curve:
            logs.update(self.curve[min(epoch, len(self.curve) - 1)])


def refit(head: keras.Model, features: np.ndarray, labels: np.ndarray,
          result: SearchResult, config: TrainConfig,
          callbacks: Sequence[keras.callbacks.Callback] = ()) -> None:
    """Trains build_head's model of the chosen setting on every searched row, in place.

    Args:
        head: A new head of the chosen setting's shape (build_head of setting.apply(config)).
        features: [V, N, D] as given to search().
        labels: [N] as given to search().
        result: The search's result: the setting, its epochs and its cross-validated curve.
        config: Batch size, class weights and seed.
        callbacks: Keras callbacks; their epoch logs carry the cross-validated val_loss and
            val_accuracy (CrossValidatedLogs runs first).
    """
    setting = result.chosen.setting
    views = np.asarray(features, np.float32)
    views = views[np.newaxis] if views.ndim == 2 else views
    n_views = len(views) if setting.views else 1
    x = views[:n_views].reshape(-1, views.shape[-1])
    y = np.tile(np.asarray(labels), n_views)
    head_training.fit_head(
        head, x, y, None, None, epochs=result.refit_epochs, batch_size=config.batch_size,
        learning_rate=setting.learning_rate, dropout=setting.dropout, l2=setting.l2,
        seed=config.seed, label_smoothing=setting.label_smoothing,
        class_weight=head_training.class_weight_for(y, head.output_shape[-1],
                                                    config.class_weights),
        callbacks=[CrossValidatedLogs(result.cv_curve()), *callbacks])


class _FoldRecorder(keras.callbacks.Callback):
    """Early stopping on held-out loss (as keras.callbacks.EarlyStopping with min_delta 0),
    the curve, the best epoch's weights, and cancel between batches."""

    def __init__(self, patience: int, should_stop: StopCheck) -> None:
        super().__init__()
        self.patience = patience
        self.should_stop = should_stop
        self.cancelled = False
        self.curve: list[tuple[float, float]] = []
        self.best: tuple[int, float, float] | None = None  # (epoch, loss, accuracy)
        self.best_weights: list[np.ndarray] | None = None
        self._wait = 0

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.should_stop():
            self.cancelled = True
            self.model.stop_training = True

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        loss, accuracy = float(logs["val_loss"]), float(logs["val_accuracy"])
        self.curve.append((loss, accuracy))
        # Without patience a manual run keeps the last epoch; so does its fold.
        if self.patience <= 0 or self.best is None or loss < self.best[1]:
            self.best = (epoch + 1, loss, accuracy)
            self.best_weights = [np.array(w) for w in self.model.get_weights()]
            self._wait = 0
            return
        self._wait += 1
        if self._wait >= self.patience:
            self.model.stop_training = True


class _Search:
    """One search; search() is its public face."""

    def __init__(self, views: np.ndarray, labels: np.ndarray, n_classes: int,
                 config: TrainConfig, fold_of_row: np.ndarray, budget: float, plan: float,
                 on_event: EventSink | None, should_stop: StopCheck,
                 clock: Callable[[], float]) -> None:
        self.views, self.labels, self.n_classes = views, labels, n_classes
        self.config = config
        self.fold_of_row = fold_of_row
        self.folds = int(fold_of_row.max()) + 1
        self.plan_budget = plan
        self.budget, self.on_event, self.should_stop, self.clock = (budget, on_event,
                                                                    should_stop, clock)
        self.trials: list[Trial] = []
        self.heads: dict[tuple[int, ...], keras.Model] = {}
        self.fits = 0
        self.started = clock()
        self._last_event = -math.inf

    def elapsed(self) -> float:
        return self.clock() - self.started

    def plan(self, settings: Iterator[HeadSetting], rungs: list[int]) -> list[Trial]:
        """The settings of the first rung: in order, each that still fits the modelled
        seconds (a costly one that does not is skipped for cheaper ones after it)."""
        train_rows = int(round(len(self.labels) * (self.folds - 1) / self.folds))
        costs: list[float] = []
        pool: list[Trial] = []
        for examined, setting in enumerate(settings):
            if len(pool) >= MAX_SETTINGS or examined >= SETTINGS_EXAMINED:
                break
            cost = predicted_fit_seconds(setting, train_rows, len(self.views), self.config)
            if pool and plan_seconds([*costs, cost], rungs) > self.plan_budget * PLAN_SHARE:
                continue
            costs.append(cost)
            pool.append(Trial(setting))
        return pool

    def run(self, settings: Iterator[HeadSetting]) -> str:
        """Successive halving over the settings, in order; returns why it stopped."""
        rungs = sorted({1, min(3, self.folds), self.folds})
        pool = self.plan(settings, rungs)
        for trial in pool:
            self.trials.append(trial)
            stopped = self._extend(trial, rungs[0])
            if stopped:
                return stopped
        baseline = pool[0]
        for target in rungs[1:]:
            pool = sorted(pool, key=Trial.rank_key)[:max(1, math.ceil(len(pool) / ETA))]
            if baseline not in pool:  # the manual setting is measured on every fold
                pool.append(baseline)
            for trial in pool:
                stopped = self._extend(trial, target)
                if stopped:
                    return stopped
        return "finished"

    def _extend(self, trial: Trial, target: int) -> str | None:
        """Fits the trial's next folds up to `target`; "budget"/"cancelled" when it stops."""
        while trial.folds_done < target:
            if self.should_stop():
                return "cancelled"
            if self.elapsed() >= self.budget:
                return "budget"
            if not self._fit_fold(trial, trial.folds_done):
                return "cancelled"
            self.fits += 1
            self._report()
        return None

    def _head(self, setting: HeadSetting, seed: int) -> keras.Model:
        """A head of the setting's shape with fresh Glorot-uniform weights drawn from seed."""
        head = self.heads.get(setting.hidden_units)
        if head is None:
            head = head_training.build_head(self.views.shape[-1], self.n_classes,
                                            setting.apply(self.config))
            self.heads[setting.hidden_units] = head
        rng = np.random.default_rng(seed)
        for layer in head_training.dense_layers(head):
            fan_in, fan_out = layer.kernel.shape
            limit = math.sqrt(6.0 / (fan_in + fan_out))
            layer.kernel.assign(rng.uniform(-limit, limit, (fan_in, fan_out)).astype("float32"))
            layer.bias.assign(np.zeros(fan_out, "float32"))
        return head

    def _fit_fold(self, trial: Trial, fold: int) -> bool:
        """Trains the trial's setting with `fold` held out; False when cancelled."""
        cfg, setting = self.config, trial.setting
        held = self.fold_of_row == fold
        n_views = len(self.views) if setting.views else 1
        x_train = self.views[:n_views, ~held].reshape(-1, self.views.shape[-1])
        y_train = np.tile(self.labels[~held], n_views)
        x_val, y_val = self.views[0, held], self.labels[held]
        seed = cfg.seed + 1000 * fold
        head = self._head(setting, seed)
        recorder = _FoldRecorder(cfg.early_stopping_patience, self.should_stop)
        head_training.fit_head(
            head, x_train, y_train, x_val, y_val, epochs=cfg.epochs, batch_size=cfg.batch_size,
            learning_rate=setting.learning_rate, dropout=setting.dropout, l2=setting.l2,
            seed=seed, label_smoothing=setting.label_smoothing,
            class_weight=head_training.class_weight_for(y_train, self.n_classes,
                                                        cfg.class_weights),
            callbacks=[recorder])
        if recorder.cancelled or recorder.best is None:
            return False
        head.set_weights(recorder.best_weights)
        probs = np.asarray(head(x_val, training=False))
        trial.fold_probs[fold] = probs
        epoch, _, accuracy = recorder.best
        trial.accuracies.append(accuracy)
        # Held-out cross-entropy without the L2 term, comparable across settings.
        picked = np.clip(probs[np.arange(len(y_val)), y_val], 1e-7, 1.0)
        trial.losses.append(float(-np.log(picked).mean()))
        trial.best_epochs.append(epoch)
        trial.curves.append(recorder.curve)
        return True

    def best(self) -> Trial:
        return min(self.trials, key=Trial.rank_key)

    def choose(self) -> Trial:
        """The best trial, unless it beats the first (the manual setting) on the same folds
        by no more than one standard error of the paired fold differences: a lead within
        the noise of the folds is not worth leaving the tested default for."""
        best, baseline = self.best(), self.trials[0]
        if best is baseline or baseline.folds_done < best.folds_done:
            return best
        n = best.folds_done
        diff = np.asarray(best.accuracies[:n]) - np.asarray(baseline.accuracies[:n])
        error = float(np.std(diff, ddof=1) / math.sqrt(n)) if n > 1 else 0.0
        return best if float(diff.mean()) > error else baseline

    def _report(self, force: bool = False) -> None:
        now = self.elapsed()
        if self.on_event is None or (not force and now - self._last_event < _EVENT_EVERY_SECONDS):
            return
        self._last_event = now
        best = self.best()
        self.on_event(ProgressEvent(
            phase=PHASE, step=int(min(now, self.plan_budget) * 1000),
            total_steps=int(self.plan_budget * 1000),
            eta_seconds=max(0.0, self.plan_budget * PLAN_SHARE - now),
            metrics={"settings_tried": float(len(self.trials)), "fold_fits": float(self.fits),
                     "best_cv_accuracy": best.mean_accuracy},
            message=(f"Tried {len(self.trials)} head settings ({self.fits} fold fits); best "
                     f"so far: {best.mean_accuracy:.3f} over {best.folds_done} fold"
                     f"{'s' if best.folds_done != 1 else ''} ({best.setting.describe()})"),
        ))


def search(
    features: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    *,
    n_classes: int,
    config: TrainConfig,
    groups: Sequence[Any] | np.ndarray | None = None,
    folds: int = DEFAULT_FOLDS,
    budget_seconds: float | None = None,
    on_event: EventSink | None = None,
    should_stop: StopCheck | None = None,
    clock: Callable[[], float] = time.monotonic,
    settings: Sequence[HeadSetting] | None = None,
) -> SearchResult | None:
    """Chooses the head's settings by stratified k-fold cross-validation under a time budget.

    Args:
        features: [V, N, D] features of the N train + validation rows, view 0 the photos
            themselves and views 1.. their cached augmented copies; or [N, D] (no views).
            Never the test rows.
        labels: [N] class indices.
        n_classes: Number of classes.
        config: Epochs (the most per fold), batch size, patience, class weights, seed, and
            the manual settings tried first.
        groups: [N] group names (identical photos, an audit's near-duplicates): one group's
            rows always share a fold. None: every row its own group.
        folds: Folds wanted; fewer when the rarest class has fewer groups.
        budget_seconds: No fold fit starts after this many seconds, and the plan fills a
            share of them; by default config.search_seconds on the clock and, for the plan,
            the same scaled down on small data (scaled_budget), so a small dataset finishes
            sooner yet never meets the clock on a loaded machine.
        on_event: Gets "searching head" ProgressEvents (at most four a second).
        should_stop: Polled between batches; the search then stops and keeps the best so far.
        clock: Seconds, monotonic (tests pass a fake one).
        settings: The settings to try, in order; by default settings_to_try (the manual
            setting of config first, then random ones of SPACE).

    Returns:
        The SearchResult; None when there are too few rows for two folds per class or
        cancel came before any fold ended.
    """
    views = np.asarray(features, np.float32)
    if views.ndim == 2:
        views = views[np.newaxis]
    y = np.asarray(labels, np.int64)
    k = splits.fold_count(y, None if groups is None else np.asarray(groups), folds)
    if k < 2:
        log.info("Head search skipped: a class has fewer than 2 groups of photos")
        return None
    fold_of_row = splits.stratified_folds(y, k, config.seed,
                                          None if groups is None else np.asarray(groups))
    budget = float(config.search_seconds if budget_seconds is None else budget_seconds)
    plan = (scaled_budget(config.search_seconds, len(y)) if budget_seconds is None
            else budget)
    runner = _Search(views, y, n_classes, config, fold_of_row, budget, plan, on_event,
                     should_stop or never_stop, clock)
    if settings is None:
        settings = settings_to_try(HeadSetting.of_config(config, views=False), config.seed,
                                   views=len(views) > 1)
    stopped = runner.run(iter(settings))
    done = [t for t in runner.trials if t.folds_done]
    if not done:
        return None
    runner.trials = done
    chosen = runner.choose()
    runner._report(force=True)
    oof = np.full((len(y), n_classes), np.nan, np.float32)
    for fold, probs in chosen.fold_probs.items():
        oof[fold_of_row == fold] = probs
    log.info("Head search %s after %.1f s: %d settings, chosen %s (CV accuracy %.4f)",
             stopped, runner.elapsed(), len(done), chosen.setting.describe(),
             chosen.mean_accuracy)
    return SearchResult(
        trials=done, chosen=chosen, folds=k, fold_of_row=fold_of_row,
        refit_epochs=max(1, int(round(float(np.mean(chosen.best_epochs))))),
        oof_probs=oof, stopped=stopped, seconds=runner.elapsed(), budget_seconds=budget,
        plan_seconds=plan)

