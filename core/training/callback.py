"""The Keras callback that turns fit's hooks into ProgressEvents, and early stopping.

ProgressCallback adapts Keras' hooks (as fit and core.training.head.fit_head call them) to
on_event and should_stop, so the trainer, the command line and the pages never see Keras' logs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import keras

from core.progress import EventSink, ProgressEvent, StopCheck, never_stop


class ProgressCallback(keras.callbacks.Callback):
    """Adapts Keras hooks to ProgressEvents, per-epoch history rows and cooperative cancel.

    One instance serves one phase. Each training it sees starts afresh: on_train_begin
    resets what the previous one left (cancelled, epochs_done, the clocks), as Keras' own
    callbacks do.

    Attributes:
        cancelled: should_stop() asked to stop during the last training.
        epochs_done: Epochs the last training completed.
    """

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
        self.should_stop = should_stop or never_stop
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
        self.cancelled = False
        self.epochs_done = 0
        self._epoch = 0
        self._phase_start = self._epoch_start = time.monotonic()
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


def early_stopping(patience: int, *, restore_best: bool = True) -> list[Any]:
    """Keras' EarlyStopping on validation loss as a callback list; empty when patience is 0."""
    if patience <= 0:
        return []
    return [keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=patience, restore_best_weights=restore_best, verbose=0,
    )]
