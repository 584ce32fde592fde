"""Background jobs owned by the server process: one FIFO worker per device, status, cancel,
and resuming after a restart the jobs a dead server left queued."""

from __future__ import annotations

import collections
import itertools
import json
import logging
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from core import schema
from core.errors import AppError, Cancelled, JobError
from core.files import own_process_facts, process_alive, read_json, write_text_atomic
from core.jobs import schemas as job_schemas
from core.jobs.executors import Executor, JobInterrupted, LocalExecutor
from core.jobs.job import FINAL_STATES, JobStatus, _Job, result_value
from core.jobs.kinds import JobKind
from core.progress import ProgressEvent
from core.status import (
    ACTIVE,
    CANCELLED,
    COMPLETED,
    FAILED,
    INTERRUPTED,
    QUEUED,
    RUNNING,
)

logger = logging.getLogger(__name__)

ACTIVE_STATES = ACTIVE

DEFAULT_DEVICE = "default"
JOBS_DIRNAME = "jobs"


class JobManager:
    """Runs submitted work in background threads, one job at a time per device, FIFO.

    The manager belongs to the server process (the UI keeps one in st.cache_resource), so a
    job outlives the script run, page or browser session that submitted it. Workers start on
    the first submit; nothing runs at construction. Ended jobs stay queryable (the newest
    `keep_finished` of them). A JSON record of each job is kept in `<home>/jobs/` from its
    submission on; for a job of a resumable kind it holds the encoded arguments, so that
    resume() in a restarted server runs the jobs a dead one left queued.
    """

    def __init__(self, home: str | Path, *, max_events: int = 5000, keep_finished: int = 200,
                 kinds: Mapping[str, JobKind] | None = None, executor: Executor | None = None):
        """Creates an idle manager.

        Args:
            home: The studio home; jobs are recorded under <home>/jobs/.
            max_events: Most events kept per job; older ones are dropped and counted.
            keep_finished: Most ended jobs kept in memory; the oldest are forgotten.
            kinds: Job kinds that survive a restart (core.jobs.kinds.resumable_kinds()).
            executor: Where jobs run (core.jobs.executors.make_executor()); this process
                when None.
        """
        if max_events < 1 or keep_finished < 1:
            raise ValueError("max_events and keep_finished must be at least 1")
        self.home = Path(home)
        self._max_events = max_events
        self._keep_finished = keep_finished
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._jobs: dict[str, _Job] = {}
        self._queues: dict[str, collections.deque[str]] = {}
        self._workers: dict[str, threading.Thread] = {}
        self._shutting_down = False
        self._counter = itertools.count(1)
        self._kinds = dict(kinds or {})
        self.executor: Executor = executor or LocalExecutor()

    # ----------------------------------------------------------------- public API

    def submit(
        self,
        fn: Callable[..., Any],
        *,
        title: str,
        kind: str = "train",
        subject: str = "",
        device: str = DEFAULT_DEVICE,
        **kwargs: Any,
    ) -> str:
        """Queues fn(on_event=..., should_stop=..., **kwargs) and returns the new job's id.

        Args:
            fn: The work; called in a worker thread with on_event and should_stop added.
            title: Shown in job lists.
            kind: Kind of work, for filtering ("train" by default).
            subject: What the job works on (a dataset key, a run id), for finding it with
                jobs(subject=...) from any session and after a restart.
            device: Queue to run on; jobs on the same device run one at a time, in order.
            **kwargs: Passed to fn unchanged.

        Raises:
            JobError: When the manager is shutting down or kwargs clash with on_event or
                should_stop.
            ClusterError: When the configured cluster cannot be reached (nothing is queued).
        """
        if not callable(fn):
            raise JobError(f"A job needs a callable to run; got {type(fn).__name__}.")
        clash = {"on_event", "should_stop"} & set(kwargs)
        if clash:
            raise JobError(f"Do not pass {', '.join(sorted(clash))}: the job manager supplies it.")
        self.executor.check()  # a configured cluster that cannot be reached says so now
        stored = self._stored_kwargs(kind, fn, kwargs)
        with self._lock:
            if self._shutting_down:
                raise JobError("The job manager is shutting down; start the job again later.")
            job_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{next(self._counter):04d}-" \
                     f"{uuid.uuid4().hex[:6]}"
            job = _Job(
                job_id=job_id, title=str(title), kind=str(kind), subject=str(subject),
                device=str(device), fn=fn, kwargs=dict(kwargs),
                events=collections.deque(maxlen=self._max_events), submitted=time.time(),
                stored_kwargs=stored,
            )
            self._enqueue_locked(job)
        logger.info("job %s queued on %s: %s", job_id, device, title)
        return job_id

    def status(self, job_id: str) -> JobStatus:
        """A snapshot of one job.

        Raises:
            JobError: When no job has that id (never submitted, or forgotten long ago).
        """
        with self._lock:
            return self._snapshot(self._get(job_id))

    def jobs(self, *, kind: str | None = None, subject: str | None = None,
             active_only: bool = False) -> list[JobStatus]:
        """Snapshots of every known job in submission order, optionally filtered."""
        with self._lock:
            return [
                self._snapshot(job) for job in self._jobs.values()
                if (kind is None or job.kind == kind)
                and (subject is None or job.subject == subject)
                and (not active_only or job.state in ACTIVE_STATES)
            ]

    def cancel(self, job_id: str) -> bool:
        """Cancels a job from any thread or session.

        A queued job is taken off its queue and marked cancelled at once. A running job is
        asked to stop: its should_stop() returns True from now on, and it ends when its
        function next checks. Returns False when the job had already ended.

        Raises:
            JobError: When no job has that id.
        """
        with self._lock:
            job = self._get(job_id)
            if job.state == QUEUED:
                self._queues[job.device].remove(job_id)
                job.stop.set()
                job.state = CANCELLED
                job.finished = time.time()
                job.fn, job.kwargs, job.stored_kwargs = None, {}, None
                self._record_locked(job)
                self._forget_old_locked()
                self._changed.notify_all()
                logger.info("job %s cancelled while queued", job_id)
                return True
            if job.state == RUNNING:
                job.stop.set()
                self._changed.notify_all()
                logger.info("job %s asked to stop", job_id)
                return True
            return False

    def wait(self, job_id: str, timeout: float | None = None) -> JobStatus:
        """Blocks until the job has ended or timeout seconds passed; returns its snapshot."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            job = self._get(job_id)
            while job.state not in FINAL_STATES:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                self._changed.wait(remaining)
            return self._snapshot(job)

    def shutdown(self, *, cancel_running: bool = True, timeout: float | None = 10.0) -> None:
        """Cancels queued jobs, optionally asks running ones to stop, and joins the workers."""
        with self._lock:
            self._shutting_down = True
            for queue in self._queues.values():
                while queue:
                    job = self._jobs[queue.popleft()]
                    job.state, job.finished = CANCELLED, time.time()
                    job.stop.set()
                    job.fn, job.kwargs, job.stored_kwargs = None, {}, None
                    self._record_locked(job)
            if cancel_running:
                for job in self._jobs.values():
                    if job.state == RUNNING:
                        job.stop.set()
            self._changed.notify_all()
            workers = list(self._workers.values())
        for worker in workers:
            worker.join(timeout)

    # ----------------------------------------------------------------- internals

    def _get(self, job_id: str) -> _Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise JobError(f"No job with id {job_id!r} is known to this server (it may have "
                           "ended before the server restarted); look for its run on the "
                           "Compare page.")
        return job

    def _snapshot(self, job: _Job) -> JobStatus:
        position = None
        if job.state == QUEUED:
            position = self._queues[job.device].index(job.job_id) + 1
        return JobStatus(
            job_id=job.job_id, title=job.title, kind=job.kind, subject=job.subject,
            device=job.device, state=job.state, position=position,
            cancel_requested=job.stop.is_set(), latest_event=job.latest_event,
            events=tuple(job.events), events_dropped=job.events_dropped, result=job.result,
            error=job.error, error_traceback=job.error_traceback, submitted=job.submitted,
            started=job.started, finished=job.finished,
        )

    def _ensure_worker(self, device: str) -> None:
        worker = self._workers.get(device)
        if worker is not None and worker.is_alive():
            return
        worker = threading.Thread(
            target=self._work, args=(device,), name=f"tl-studio-jobs-{device}", daemon=True
        )
        self._workers[device] = worker
        worker.start()

    def _work(self, device: str) -> None:
        """Worker loop: takes the oldest queued job of its device and runs it, forever."""
        while True:
            with self._lock:
                queue = self._queues[device]
                while not queue and not self._shutting_down:
                    self._changed.wait()
                if not queue:
                    return
                job = self._jobs[queue.popleft()]
                job.state, job.started = RUNNING, time.time()
                fn, kwargs = job.fn, job.kwargs
                self._record_locked(job)  # a restarted server sees it was running
                self._changed.notify_all()
            self._run(job, fn, kwargs)

    def _run(self, job: _Job, fn: Callable[..., Any] | None, kwargs: dict[str, Any]) -> None:
        def on_event(event: ProgressEvent) -> None:
            if not isinstance(event, ProgressEvent):  # one shape for every monitor
                raise TypeError(f"a job reports core.progress.ProgressEvent, not {event!r}")
            with self._lock:
                if len(job.events) == job.events.maxlen:
                    job.events_dropped += 1
                job.events.append(event)
                job.latest_event = event
                self._changed.notify_all()

        def should_stop() -> bool:
            return job.stop.is_set()

        state, result, error, trace = FAILED, None, None, None
        try:
            assert fn is not None
            result = self.executor.run(fn, kwargs, kind=job.kind, on_event=on_event,
                                       should_stop=should_stop)
            reported = str(result_value(result, "status", "") or "")
            if reported == FAILED:
                state = FAILED
                error = str(result_value(result, "error") or "The job reported that it failed.")
            elif reported == CANCELLED or (job.stop.is_set() and reported != COMPLETED):
                state = CANCELLED  # it returned early because should_stop() said so
            else:
                state = COMPLETED
        except Cancelled:
            state = CANCELLED
        except JobInterrupted as exc:  # its cluster node went away mid-job
            state, error = INTERRUPTED, str(exc)
            logger.info("job %s interrupted: %s", job.job_id, error)
        except AppError as exc:
            error = str(exc) or type(exc).__name__
            logger.info("job %s failed: %s", job.job_id, error)
        except Exception as exc:  # a bug in the job: keep everything for the run
            error = f"{type(exc).__name__}: {exc}"
            trace = traceback.format_exc()
            logger.exception("job %s crashed", job.job_id)
        finally:
            with self._lock:
                job.state, job.result, job.error, job.error_traceback = state, result, error, trace
                job.finished = time.time()
                job.fn, job.kwargs, job.stored_kwargs = None, {}, None
                self._record_locked(job)
                self._forget_old_locked()
                self._changed.notify_all()
            logger.info("job %s %s", job.job_id, state)

    def _forget_old_locked(self) -> None:
        ended = [j for j in self._jobs.values() if j.state in FINAL_STATES]
        for job in ended[: max(0, len(ended) - self._keep_finished)]:
            del self._jobs[job.job_id]

    def _record_locked(self, job: _Job) -> None:
        """Writes <home>/jobs/<job id>.json atomically; a failure to write is only logged.

        The record names this process (pid, host), so a restarted server can tell the jobs of
        a dead server from those of one still running on the same home.
        """
        record = {**self._snapshot(job).to_dict(), **own_process_facts()}
        if job.state == QUEUED and job.stored_kwargs is not None:
            record["stored_kwargs"] = job.stored_kwargs
        folder = self.home / JOBS_DIRNAME
        try:
            folder.mkdir(parents=True, exist_ok=True)
            write_text_atomic(folder / f"{job.job_id}.json",
                              json.dumps(record, indent=2, default=str) + "\n")
        except OSError:
            logger.warning("could not record job %s under %s", job.job_id, folder,
                           exc_info=True)

    # ----------------------------------------------------------------- restart

    def resume(self) -> list[str]:
        """Takes over the jobs a server process that died left on this home.

        Its queued jobs of a resumable kind are queued again, in their first order, under
        their ids; a job it was running is marked interrupted (its run, whose process died,
        reads as interrupted too); a queued job that cannot be re-created is marked
        interrupted, saying to start it again. Jobs of a server still running are left alone.

        Returns:
            The ids of the jobs queued again.
        """
        resumed = []
        for record in self._orphaned_records():
            with self._lock:
                if self._shutting_down or record["job_id"] in self._jobs:
                    continue
                job = self._restored_job(record)
                if job.state == QUEUED:
                    self._enqueue_locked(job)
                    resumed.append(job.job_id)
                else:
                    self._jobs[job.job_id] = job
                    self._record_locked(job)
                    self._forget_old_locked()
        if resumed:
            logger.info("resumed %d queued job(s) of a previous server: %s", len(resumed),
                        ", ".join(resumed))
        return resumed

    def _orphaned_records(self) -> list[dict[str, Any]]:
        """Records of queued or running jobs whose server process is gone, oldest first."""
        records = []
        for path in (self.home / JOBS_DIRNAME).glob("*.json"):
            try:
                record = read_json(path)
            except (OSError, ValueError):
                logger.warning("skipping the unreadable job record %s", path)
                continue
            problem = schema.valid(record, job_schemas.JOB_RECORD, path.name)
            if problem is not None:  # a damaged record must not break every page load
                schema.set_aside(path, f"dropped the job record: {problem}")
                continue
            if isinstance(record, dict) and record.get("state") in ACTIVE_STATES \
                    and isinstance(record.get("job_id"), str) and not process_alive(record):
                records.append(record)
        return sorted(records, key=lambda r: (float(r.get("submitted") or 0), r["job_id"]))

    def _restored_job(self, record: Mapping[str, Any]) -> _Job:
        job = _Job(
            job_id=record["job_id"], title=str(record.get("title", "")),
            kind=str(record.get("kind", "")), subject=str(record.get("subject", "")),
            device=str(record.get("device", DEFAULT_DEVICE)),
            fn=None, kwargs={}, events=collections.deque(maxlen=self._max_events),
            submitted=float(record.get("submitted") or time.time()),
            started=record.get("started"),
        )
        kind = self._kinds.get(job.kind)
        stored = record.get("stored_kwargs")
        if record.get("state") == RUNNING:
            job.error = ("The server stopped while this job was running; what it had done is "
                         "kept as an interrupted run. Start it again.")
        elif kind is None or not isinstance(stored, dict):
            job.error = ("The server restarted before this job started, and it cannot be "
                         "re-created. Start it again.")
        else:
            try:
                job.fn, job.kwargs = kind.resolve(), kind.decode(stored)
                job.stored_kwargs = dict(stored)
                return job
            except Exception as exc:
                job.error = (f"The server restarted before this job started, and its stored "
                             f"settings cannot be used any more ({exc}). Start it again.")
        job.state, job.finished = INTERRUPTED, time.time()
        return job

    def _enqueue_locked(self, job: _Job) -> None:
        self._jobs[job.job_id] = job
        self._queues.setdefault(job.device, collections.deque()).append(job.job_id)
        self._record_locked(job)
        self._ensure_worker(job.device)
        self._changed.notify_all()

    def _stored_kwargs(self, kind: str, fn: Callable[..., Any],
                       kwargs: Mapping[str, Any]) -> dict[str, Any] | None:
        """kwargs encoded by the job's kind, or None when the job cannot outlive the server."""
        job_kind = self._kinds.get(kind)
        if job_kind is None or not job_kind.made_by(fn):
            return None
        try:
            return job_kind.encode(kwargs)
        except (TypeError, ValueError, KeyError, AttributeError):
            logger.warning("job of kind %s cannot be stored; it will not survive a restart",
                           kind, exc_info=True)
            return None
