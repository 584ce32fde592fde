"""Progress of any long work (ingest, extraction, training, audit, export): one event type.

Every job reports through one plain callable, on_event(ProgressEvent), and is cancelled
through should_stop(); the job manager, the pages' monitors and the command line read that
one shape. core.training.callback adapts Keras' hooks to it; PhaseProgress turns counts of
done and total steps into throttled events with a time estimate.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

PHASES = (
    "preparing",
    "extracting features",
    "searching head",
    "training head",
    "fine-tuning",
    "training top blocks",
    "evaluating",
    "saving",
)
"""A training run's phases, in order."""
UNPACKING, CHECKING = "unpacking", "checking photos"  # ingest
AUDITING = "auditing"
EXPORTING, VERIFYING = "exporting", "verifying"


@dataclass(frozen=True)
class ProgressEvent:
    """One step of progress of a job.

    Attributes:
        phase: What is being done: one of PHASES for training, UNPACKING or CHECKING for
            ingest, AUDITING, EXPORTING or VERIFYING.
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

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProgressEvent:
        """Inverse of to_dict; unknown keys are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


EventSink = Callable[[ProgressEvent], None]
StopCheck = Callable[[], bool]


def never_stop() -> bool:
    """The should_stop of a run nobody can cancel."""
    return False


class PhaseProgress:
    """Reports counts of one phase's steps as ProgressEvents, at most every `every` seconds.

    The first and the last count are always reported; the time estimate assumes the
    remaining steps take as long as the ones done.

    Args:
        on_event: Where the events go (None: nowhere).
        phase: The events' phase.
        noun: What a step is, for the message ("photos" -> "Checking photos: 12 of 40 photos").
        every: Fewest seconds between two reported counts.
        clock: Monotonic seconds (tests pass a fake one).
    """

    def __init__(self, on_event: EventSink | None, phase: str, noun: str = "", *,
                 every: float = 0.5, clock: Callable[[], float] = time.monotonic) -> None:
        self.on_event, self.phase, self.noun = on_event, phase, noun
        self.every, self.clock = every, clock
        self.started = clock()
        self._last: float | None = None

    def __call__(self, done: int, total: int, message: str | None = None) -> None:
        """Reports `done` of `total` steps (throttled; the first and the last always)."""
        if self.on_event is None:
            return
        now = self.clock()
        if self._last is not None and 0 < done < total and now - self._last < self.every:
            return
        self._last = now
        elapsed = now - self.started
        eta = elapsed / done * (total - done) if done and total >= done else None
        if message is None:
            message = f"{self.phase.capitalize()}: {done:,} of {total:,} {self.noun}".rstrip()
        self.on_event(ProgressEvent(phase=self.phase, step=done, total_steps=total,
                                    eta_seconds=eta, message=message))
