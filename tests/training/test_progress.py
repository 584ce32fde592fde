"""core.progress: ProgressEvent and the Keras callback, its hooks called directly as Keras'
own progbar_logger_test does."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from core import progress
from core.progress import PHASES, ProgressEvent
from core.training.callback import ProgressCallback


def started(callback: ProgressCallback) -> ProgressCallback:
    callback.set_model(SimpleNamespace(stop_training=False))
    callback.on_train_begin()
    return callback


def test_progress_callback_hooks_called_directly() -> None:
    events: list[ProgressEvent] = []
    rows: list[dict] = []
    stop = {"now": False}
    callback = ProgressCallback(
        events.append, lambda: stop["now"], phase="fine-tuning", total_epochs=4,
        steps_per_epoch=10, batch_event_every=5, on_epoch_row=rows.append,
    )
    callback.set_model(SimpleNamespace(stop_training=False))
    callback.on_train_begin()
    callback.on_epoch_begin(0)
    for batch in range(10):
        callback.on_train_batch_end(batch, {"loss": 1.0 - batch / 20, "accuracy": 0.5})
    callback.on_epoch_end(0, {"loss": 0.5, "accuracy": 0.6, "val_loss": 0.7,
                              "val_accuracy": 0.55})
    batch_events = [e for e in events if "batch" in e.message]
    assert len(batch_events) == 2
    last = events[-1]
    # Fine-tuning counts batches, so the bar moves within an epoch.
    assert [e.fraction for e in batch_events] == [pytest.approx(5 / 40), pytest.approx(10 / 40)]
    assert (last.epoch, last.total_epochs, last.step, last.total_steps) == (1, 4, 10, 40)
    assert last.epoch_end and not any(e.epoch_end for e in batch_events)
    assert last.metrics["val_accuracy"] == pytest.approx(0.55)
    assert last.eta_seconds is not None and last.eta_seconds >= 0
    assert rows[0]["phase_epoch"] == 1 and rows[0]["val_loss"] == pytest.approx(0.7)

    stop["now"] = True
    callback.on_epoch_begin(1)
    callback.on_train_batch_end(0, {"loss": 0.4})
    assert callback.model.stop_training is True
    assert callback.cancelled
    n_events = len(events)
    callback.on_epoch_end(1, {"loss": 0.4})
    assert len(events) == n_events, "a cancelled epoch is not reported as finished"


def test_head_epochs_count_as_steps_and_bad_metrics_are_left_out() -> None:
    events: list[ProgressEvent] = []
    callback = started(ProgressCallback(events.append, phase="training head", total_epochs=3))
    first = events[0]
    assert (first.phase, first.step, first.total_steps, first.epoch) == ("training head", 0, 3, 0)
    assert "starting" in first.message and not first.epoch_end
    callback.on_epoch_begin(0)
    callback.on_epoch_end(0, {"loss": 0.5, "accuracy": float("nan"), "val_loss": "n/a",
                              "val_accuracy": 0.75})
    last = events[-1]
    assert (last.step, last.total_steps, last.fraction) == (1, 3, pytest.approx(1 / 3))
    assert last.metrics == {"loss": 0.5, "val_accuracy": 0.75}
    assert last.message == "Epoch 1/3, loss 0.500, val_accuracy 0.750"
    assert callback.epochs_done == 1


def test_every_training_starts_afresh() -> None:
    """State from a cancelled training does not leak into the next one (on_train_begin)."""
    events: list[ProgressEvent] = []
    stop = {"now": True}
    callback = started(ProgressCallback(events.append, lambda: stop["now"],
                                        phase="fine-tuning", total_epochs=2))
    callback.on_epoch_begin(0)
    callback.on_epoch_end(0, {"loss": 1.0})
    callback.on_epoch_begin(1)
    callback.on_train_batch_end(0, {})
    assert callback.cancelled and callback.epochs_done == 1
    stop["now"] = False
    started(callback)
    assert not callback.cancelled and callback.epochs_done == 0
    callback.on_epoch_begin(0)
    callback.on_epoch_end(0, {"loss": 0.9})
    assert events[-1].epoch_end and events[-1].epoch == 1 and callback.epochs_done == 1


def test_event_is_plain_data() -> None:
    event = ProgressEvent(phase=PHASES[1], step=3, total_steps=0, metrics={"loss": 1.5})
    assert event.fraction == 0.0  # no total known yet
    data = json.loads(json.dumps(event.to_dict()))
    assert data["phase"] == "extracting features" and data["metrics"] == {"loss": 1.5}
    assert ProgressEvent(phase="saving", step=5, total_steps=4).fraction == 1.0
    assert progress.never_stop() is False
