"""A background job as readers see it (JobStatus, a consistent snapshot) and as the manager
keeps it (_Job, mutable under the manager's lock); what a job function returned, read."""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from core.progress import ProgressEvent
from core.status import FINAL, INTERRUPTED, QUEUED

# A job is interrupted when the server process running it died (found after a restart).
FINAL_STATES = (*FINAL, INTERRUPTED)


def result_value(result: Any, name: str, default: Any = None) -> Any:
    """One field of what a job function returned (a result object or a mapping)."""
    if result is None:
        return default
    if isinstance(result, Mapping):
        return result.get(name, default)
    return getattr(result, name, default)


def result_dict(result: Any) -> dict[str, Any]:
    """A plain dict of a job's result (to_dict() when offered, else dataclass or mapping)."""
    if result is None:
        return {}
    if isinstance(result, Mapping):
        return dict(result)
    to_dict = getattr(result, "to_dict", None)
    if callable(to_dict):
        return dict(to_dict())
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        return dataclasses.asdict(result)
    return {"value": result}


@dataclass(frozen=True)
class JobStatus:
    """A consistent snapshot of one job, safe to read from any thread.

    Attributes:
        job_id: Identifier returned by submit().
        title: Human-readable title given at submit time.
        kind: Kind of work ("train" by default).
        subject: What the job works on (a dataset key, a run id), given at submit time so
            that any session finds the job of a subject again; "" when not given.
        device: Device queue the job runs on; one job at a time per device.
        state: queued, running, completed, cancelled, failed or interrupted (the server
            stopped while it ran, or before it started and it could not be re-created).
        position: For a queued job, 1 for the next job to start on its device; else None.
        cancel_requested: True once cancel() was called on a running job.
        latest_event: The last ProgressEvent the job reported, or None.
        events: Events received, oldest first (the oldest are dropped past the bound).
        events_dropped: How many old events were dropped to keep the bound.
        result: What the job function returned (completed or cancelled jobs), else None.
        error: For a failed job: an AppError's message, else "Type: message".
        error_traceback: The traceback of a failed job whose error was not an AppError.
        submitted: Epoch seconds when the job was submitted.
        started: Epoch seconds when it started running, or None.
        finished: Epoch seconds when it ended, or None.
    """

    job_id: str
    title: str
    kind: str
    subject: str
    device: str
    state: str
    position: int | None
    cancel_requested: bool
    latest_event: ProgressEvent | None
    events: tuple[ProgressEvent, ...]
    events_dropped: int
    result: Any
    error: str | None
    error_traceback: str | None
    submitted: float
    started: float | None
    finished: float | None

    @property
    def done(self) -> bool:
        """True once the job completed, was cancelled, failed or was interrupted."""
        return self.state in FINAL_STATES

    @property
    def elapsed(self) -> float:
        """Seconds the job has been running (or ran); 0 while queued."""
        if self.started is None:
            return 0.0
        end = self.finished if self.finished is not None else time.time()
        return max(0.0, end - self.started)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (events and result reduced to plain dicts)."""
        return {
            "job_id": self.job_id,
            "title": self.title,
            "kind": self.kind,
            "subject": self.subject,
            "device": self.device,
            "state": self.state,
            "position": self.position,
            "cancel_requested": self.cancel_requested,
            "latest_event": self.latest_event.to_dict() if self.latest_event else None,
            "events_received": len(self.events) + self.events_dropped,
            "result": result_dict(self.result) or None,
            "error": self.error,
            "error_traceback": self.error_traceback,
            "submitted": self.submitted,
            "started": self.started,
            "finished": self.finished,
        }


@dataclass
class _Job:
    """Mutable record of one job; only touched with the manager's lock held."""

    job_id: str
    title: str
    kind: str
    device: str
    fn: Callable[..., Any] | None
    kwargs: dict[str, Any]
    events: collections.deque[ProgressEvent]
    submitted: float
    subject: str = ""
    stored_kwargs: dict[str, Any] | None = None  # encoded by its JobKind: resumable
    state: str = QUEUED
    stop: threading.Event = dataclasses.field(default_factory=threading.Event)
    events_dropped: int = 0
    latest_event: ProgressEvent | None = None
    result: Any = None
    error: str | None = None
    error_traceback: str | None = None
    started: float | None = None
    finished: float | None = None
