"""Tests of the background job manager with plain Python callables."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from core.errors import Cancelled, DatasetError, JobError
from core.jobs.job import JobStatus, result_dict, result_value
from core.jobs.manager import JobManager
from core.progress import ProgressEvent

WAIT = 10.0  # seconds; generous for a shared 2-core machine


def FakeEvent(phase: str, step: int) -> ProgressEvent:
    return ProgressEvent(phase=phase, step=step, time=0.0)


@dataclass
class FakeResult:
    status: str
    error: str | None = None


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[JobManager]:
    jm = JobManager(tmp_path / "home")
    yield jm
    jm.shutdown(timeout=WAIT)


def wait_for(predicate, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def blocker(gate: threading.Event, started: threading.Event | None = None):
    """A job function that waits for gate (or a cancel) and returns 'done'."""

    def fn(*, on_event, should_stop, **kwargs):
        if started is not None:
            started.set()
        while not gate.wait(0.01):
            if should_stop():
                raise Cancelled()
        return "done"

    return fn


def test_jobs_run_one_at_a_time_in_submission_order(manager: JobManager) -> None:
    order: list[int] = []
    active = {"now": 0, "most": 0}
    lock = threading.Lock()

    def work(*, on_event, should_stop, n: int) -> int:
        with lock:
            active["now"] += 1
            active["most"] = max(active["most"], active["now"])
            order.append(n)
        time.sleep(0.02)
        with lock:
            active["now"] -= 1
        return n * 10

    ids = [manager.submit(work, title=f"job {n}", n=n) for n in range(6)]
    finals = [manager.wait(job_id, WAIT) for job_id in ids]
    assert order == list(range(6))
    assert active["most"] == 1
    assert [s.state for s in finals] == ["completed"] * 6
    assert [s.result for s in finals] == [0, 10, 20, 30, 40, 50]
    for earlier, later in zip(finals, finals[1:], strict=False):
        assert earlier.finished <= later.started
    assert all(s.started >= s.submitted and s.elapsed >= 0.015 for s in finals)


def test_queue_positions_and_cancelling_a_queued_job(manager: JobManager) -> None:
    gate, started = threading.Event(), threading.Event()
    first = manager.submit(blocker(gate, started), title="first")
    assert started.wait(WAIT)
    queued = [manager.submit(blocker(gate), title=f"q{i}") for i in range(3)]

    assert manager.status(first).state == "running"
    assert manager.status(first).position is None
    assert [manager.status(j).position for j in queued] == [1, 2, 3]
    assert all(manager.status(j).state == "queued" for j in queued)

    assert manager.cancel(queued[0]) is True
    cancelled = manager.status(queued[0])
    assert cancelled.state == "cancelled" and cancelled.position is None
    assert cancelled.started is None and cancelled.finished is not None
    assert [manager.status(j).position for j in queued[1:]] == [1, 2]

    gate.set()
    assert [manager.wait(j, WAIT).state for j in [first, *queued[1:]]] == ["completed"] * 3
    # a cancelled queued job never ran and stays cancelled
    assert manager.status(queued[0]).state == "cancelled"
    assert manager.status(queued[0]).started is None


def test_cancel_a_running_job_is_cooperative(manager: JobManager) -> None:
    started = threading.Event()
    job = manager.submit(blocker(threading.Event(), started), title="long")
    assert started.wait(WAIT)
    assert manager.cancel(job) is True
    final = manager.wait(job, WAIT)
    assert final.state == "cancelled"
    assert final.cancel_requested is True
    assert final.error is None
    # cancelling an ended job changes nothing
    assert manager.cancel(job) is False
    assert manager.status(job).state == "cancelled"


def test_job_returning_early_after_cancel_is_cancelled_not_completed(
    manager: JobManager,
) -> None:
    started = threading.Event()

    def polite(*, on_event, should_stop):
        started.set()
        while not should_stop():
            time.sleep(0.01)
        return "stopped early"

    job = manager.submit(polite, title="polite")
    assert started.wait(WAIT)
    manager.cancel(job)
    final = manager.wait(job, WAIT)
    assert final.state == "cancelled"
    assert final.result == "stopped early"


def test_result_status_decides_cancelled_and_failed(manager: JobManager) -> None:
    cancelled = manager.submit(lambda **_: FakeResult("cancelled"), title="c")
    failed = manager.submit(lambda **_: FakeResult("failed", "disk full"), title="f")
    done = manager.submit(lambda **_: {"status": "completed"}, title="d")
    assert manager.wait(cancelled, WAIT).state == "cancelled"
    final_failed = manager.wait(failed, WAIT)
    assert final_failed.state == "failed" and final_failed.error == "disk full"
    assert manager.wait(done, WAIT).state == "completed"


def test_failures_are_captured_and_the_worker_keeps_going(manager: JobManager) -> None:
    def user_mistake(**_):
        raise DatasetError("The dataset has only one class; add a second class folder.")

    def bug_in_job(**_):
        raise ValueError("shapes (3,) and (4,) differ")

    first = manager.submit(user_mistake, title="user mistake")
    second = manager.submit(bug_in_job, title="bug")
    third = manager.submit(lambda **_: 42, title="fine")

    app_error = manager.wait(first, WAIT)
    assert app_error.state == "failed"
    assert app_error.error == "The dataset has only one class; add a second class folder."
    assert app_error.error_traceback is None

    crash = manager.wait(second, WAIT)
    assert crash.state == "failed"
    assert crash.error == "ValueError: shapes (3,) and (4,) differ"
    assert "bug_in_job" in crash.error_traceback
    assert "Traceback" in crash.error_traceback

    assert manager.wait(third, WAIT).result == 42


def test_event_stream_is_kept_in_order_and_bounded(tmp_path: Path) -> None:
    jm = JobManager(tmp_path, max_events=3)
    try:
        seen_mid_run: list[JobStatus] = []
        release = threading.Event()

        def emitter(*, on_event, should_stop, n: int):
            for step in range(n):
                on_event(FakeEvent("training head", step))
                if step == 4:
                    release.wait(WAIT)
            return "ok"

        job = jm.submit(emitter, title="events", n=10)
        wait_for(lambda: jm.status(job).latest_event is not None
                 and jm.status(job).latest_event.step == 4)
        seen_mid_run.append(jm.status(job))
        release.set()
        final = jm.wait(job, WAIT)
    finally:
        jm.shutdown(timeout=WAIT)

    mid = seen_mid_run[0]
    assert mid.state == "running"
    assert [e.step for e in mid.events] == [2, 3, 4]
    assert final.latest_event == FakeEvent("training head", 9)
    assert [e.step for e in final.events] == [7, 8, 9]
    assert final.events_dropped == 7
    assert final.to_dict()["latest_event"]["phase"] == "training head"
    assert ProgressEvent.from_dict(final.to_dict()["latest_event"]) == final.latest_event


def test_a_job_reporting_anything_but_a_progress_event_fails_with_the_reason(
        tmp_path: Path) -> None:
    jm = JobManager(tmp_path)
    try:
        job = jm.submit(lambda *, on_event, should_stop: on_event({"phase": "x"}), title="bad")
        final = jm.wait(job, WAIT)
    finally:
        jm.shutdown(timeout=WAIT)
    assert final.state == "failed" and "ProgressEvent" in (final.error or "")


def test_result_helpers_accept_dicts_objects_and_none() -> None:
    assert result_value({"status": "saving"}, "status") == "saving"
    assert result_value(FakeResult("failed", "disk"), "error") == "disk"
    assert result_value(None, "status", "waiting") == "waiting"
    assert result_dict({"a": 1}) == {"a": 1}
    assert result_dict(None) == {}
    assert result_dict(FakeResult("completed")) == {"status": "completed", "error": None}


def test_many_concurrent_submitters(manager: JobManager) -> None:
    per_thread, threads_n = 15, 8
    ran: list[tuple[int, int]] = []
    lock = threading.Lock()
    active = {"now": 0, "most": 0}
    ids: dict[int, list[str]] = {}
    barrier = threading.Barrier(threads_n)

    def work(*, on_event, should_stop, who: int, n: int):
        with lock:
            active["now"] += 1
            active["most"] = max(active["most"], active["now"])
            ran.append((who, n))
        on_event(ProgressEvent(phase=f"{who}", step=n))
        with lock:
            active["now"] -= 1
        return (who, n)

    def submitter(who: int) -> None:
        barrier.wait()
        ids[who] = [manager.submit(work, title=f"{who}-{n}", who=who, n=n)
                    for n in range(per_thread)]
        # status and jobs() are safe to call while others submit
        manager.jobs()
        manager.status(ids[who][0])

    threads = [threading.Thread(target=submitter, args=(w,)) for w in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)

    finals = {who: [manager.wait(j, WAIT) for j in job_ids] for who, job_ids in ids.items()}
    assert len(ran) == per_thread * threads_n
    assert active["most"] == 1
    for who, statuses in finals.items():
        assert [s.state for s in statuses] == ["completed"] * per_thread
        assert [s.result for s in statuses] == [(who, n) for n in range(per_thread)]
        # each submitter's jobs ran in the order it submitted them
        assert [n for w, n in ran if w == who] == list(range(per_thread))
    all_ids = [j for job_ids in ids.values() for j in job_ids]
    assert len(set(all_ids)) == len(all_ids)
    assert len(manager.jobs()) == len(all_ids)


def test_devices_have_separate_queues(manager: JobManager) -> None:
    gate, started = threading.Event(), threading.Event()
    busy = manager.submit(blocker(gate, started), title="gpu job", device="gpu:0")
    assert started.wait(WAIT)
    other = manager.submit(lambda **_: "cpu done", title="cpu job", device="cpu")
    assert manager.wait(other, WAIT).state == "completed"
    assert manager.status(busy).state == "running"
    gate.set()
    assert manager.wait(busy, WAIT).state == "completed"


def test_kwargs_are_passed_and_reserved_names_refused(manager: JobManager) -> None:
    got: dict[str, Any] = {}

    def fn(*, on_event, should_stop, split_df, config):
        got.update(split_df=split_df, config=config, stop=should_stop())
        return "ok"

    job = manager.submit(fn, title="t", split_df=[1, 2], config="c")
    assert manager.wait(job, WAIT).state == "completed"
    assert got == {"split_df": [1, 2], "config": "c", "stop": False}
    with pytest.raises(JobError, match="should_stop"):
        manager.submit(fn, title="t", should_stop=lambda: True)
    with pytest.raises(JobError, match="callable"):
        manager.submit("not a function", title="t")  # type: ignore[arg-type]


def test_unknown_job_ids_raise_a_clear_job_error(manager: JobManager) -> None:
    with pytest.raises(JobError, match="No job with id 'nope'"):
        manager.status("nope")
    with pytest.raises(JobError):
        manager.cancel("nope")


def test_jobs_filters_and_ended_jobs_stay_queryable(manager: JobManager) -> None:
    gate, started = threading.Event(), threading.Event()
    a = manager.submit(lambda **_: 1, title="a", kind="predict", subject="run-1")
    manager.wait(a, WAIT)
    b = manager.submit(blocker(gate, started), title="b", subject="run-1")
    assert started.wait(WAIT)
    c = manager.submit(blocker(gate), title="c")
    assert [s.job_id for s in manager.jobs()] == [a, b, c]
    assert [s.job_id for s in manager.jobs(active_only=True)] == [b, c]
    assert [s.job_id for s in manager.jobs(kind="predict")] == [a]
    assert [s.job_id for s in manager.jobs(subject="run-1")] == [a, b]
    assert [s.job_id for s in manager.jobs(subject="run-1", active_only=True)] == [b]
    assert manager.status(c).subject == "" and manager.status(a).to_dict()["subject"] == "run-1"
    gate.set()
    manager.wait(c, WAIT)
    assert manager.status(a).state == "completed" and manager.status(a).result == 1


def test_ended_jobs_are_recorded_on_disk(tmp_path: Path) -> None:
    jm = JobManager(tmp_path)
    try:
        def bug(**_):
            raise RuntimeError("boom")

        job = jm.submit(bug, title="crash")
        jm.wait(job, WAIT)
    finally:
        jm.shutdown(timeout=WAIT)
    record = json.loads((tmp_path / "jobs" / f"{job}.json").read_text())
    assert record["state"] == "failed"
    assert record["title"] == "crash"
    assert record["error"] == "RuntimeError: boom"
    assert "boom" in record["error_traceback"]


def test_keep_finished_forgets_only_the_oldest_ended_jobs(tmp_path: Path) -> None:
    jm = JobManager(tmp_path, keep_finished=2)
    try:
        ids = [jm.submit(lambda n=n, **_: n, title=str(n)) for n in range(4)]
        jm.wait(ids[-1], WAIT)
        wait_for(lambda: len(jm.jobs()) == 2)
        assert [s.job_id for s in jm.jobs()] == ids[2:]
        with pytest.raises(JobError):
            jm.status(ids[0])
    finally:
        jm.shutdown(timeout=WAIT)


def test_shutdown_cancels_waiting_and_running_jobs(tmp_path: Path) -> None:
    jm = JobManager(tmp_path)
    started = threading.Event()
    running = jm.submit(blocker(threading.Event(), started), title="running")
    assert started.wait(WAIT)
    waiting = jm.submit(blocker(threading.Event()), title="waiting")
    jm.shutdown(timeout=WAIT)
    assert jm.status(running).state == "cancelled"
    assert jm.status(waiting).state == "cancelled"
    with pytest.raises(JobError, match="shutting down"):
        jm.submit(lambda **_: 1, title="late")


def test_constructing_a_manager_starts_no_threads(tmp_path: Path) -> None:
    before = {t.name for t in threading.enumerate()}
    JobManager(tmp_path)
    after = {t.name for t in threading.enumerate()}
    assert not {n for n in after - before if n.startswith("tl-studio-jobs")}


# --- surviving a server restart -------------------------------------------------------------

KINDS_MODULE = '''
import time
from pathlib import Path


def hold(*, on_event, should_stop, seconds):
    time.sleep(seconds)
    return "held"


def write(*, on_event, should_stop, path, text):
    Path(path).write_text(text)
    return "written"
'''

SERVER_SCRIPT = '''
import sys
from pathlib import Path

from core.jobs.kinds import JobKind
from core.jobs.manager import JobManager
import kinds_for_test as k

kinds = {"hold": JobKind("hold", "kinds_for_test:hold"),
         "write": JobKind("write", "kinds_for_test:write")}
jm = JobManager(Path(sys.argv[1]), kinds=kinds)
running = jm.submit(k.hold, title="long", kind="hold", seconds=600)
while jm.status(running).state != "running":
    pass
first = jm.submit(k.write, title="first", kind="write", subject="a",
                  path=sys.argv[2] + "/a.txt", text="A")
jm.submit(k.write, title="second", kind="write", path=sys.argv[2] + "/b.txt", text="B")
jm.submit(lambda **_: 1, title="not resumable", kind="write")
print(running, flush=True)
sys.stdin.read()
'''


def test_queued_jobs_survive_a_server_restart(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import signal
    import subprocess
    import sys

    from core.jobs.kinds import JobKind

    (tmp_path / "kinds_for_test.py").write_text(KINDS_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    home, out = tmp_path / "home", tmp_path / "out"
    out.mkdir()
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo), str(tmp_path)])}
    server = subprocess.Popen([sys.executable, "-c", SERVER_SCRIPT, str(home), str(out)],
                              cwd=repo, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert server.stdout is not None
        running = server.stdout.readline().decode().strip()
        assert running
    finally:
        os.kill(server.pid, signal.SIGKILL)  # the server dies with one job running, 3 queued
        server.wait()
    assert not list(out.iterdir())

    kinds = {"hold": JobKind("hold", "kinds_for_test:hold"),
             "write": JobKind("write", "kinds_for_test:write")}
    jm = JobManager(home, kinds=kinds)
    try:
        resumed = jm.resume()
        assert [jm.status(j).title for j in resumed] == ["first", "second"]  # order kept
        assert [s.title for s in jm.jobs(subject="a")] == ["first"]  # found again by subject
        for job in resumed:
            assert jm.wait(job, WAIT).state == "completed"
        assert (out / "a.txt").read_text() == "A" and (out / "b.txt").read_text() == "B"
        by_title = {s.title: s for s in jm.jobs()}
        assert by_title["long"].job_id == running
        assert by_title["long"].state == "interrupted" and by_title["long"].done
        assert "stopped while this job was running" in by_title["long"].error
        assert by_title["not resumable"].state == "interrupted"
        assert "Start it again" in by_title["not resumable"].error
        assert jm.resume() == []  # taken over once
    finally:
        jm.shutdown(timeout=WAIT)
    record = json.loads((home / "jobs" / f"{running}.json").read_text())
    assert record["state"] == "interrupted"


def test_jobs_of_a_live_server_are_left_alone(tmp_path: Path) -> None:
    gate = threading.Event()
    first, second = JobManager(tmp_path), JobManager(tmp_path)  # two servers on one home
    try:
        job = first.submit(blocker(gate), title="busy")
        first.submit(blocker(gate), title="waiting")
        wait_for(lambda: first.status(job).state == "running")
        assert second.resume() == [] and second.jobs() == []
    finally:
        gate.set()
        first.shutdown(timeout=WAIT)
        second.shutdown(timeout=WAIT)


def test_a_training_job_is_stored_and_recreated() -> None:
    import pandas as pd

    from core.config import TrainConfig
    from core.jobs import kinds as job_kinds
    from core.training import pipeline as training

    split = pd.DataFrame({"path": ["/d/NA/1.png", "/d/b/2.png"], "label": ["NA", "b"],
                          "label_index": [0, 1], "sha256": ["0" * 64, "1" * 64],
                          "width": [48, 64], "height": [48, 64], "split": ["train", "test"]})
    kwargs = {"split_df": split, "config": TrainConfig(weights=None, epochs=3),
              "home": Path("/tmp/h"), "dataset_info": {"name": "pets"}}
    kind = job_kinds.resumable_kinds()["train"]
    assert kind.made_by(training.train) and kind.resolve() is training.train
    stored = json.loads(json.dumps(kind.encode(kwargs)))
    again = kind.decode(stored)
    pd.testing.assert_frame_equal(again["split_df"], split)
    assert again["config"] == kwargs["config"] and again["home"] == kwargs["home"]
    assert again["dataset_info"] == {"name": "pets"}


def test_an_export_job_is_stored_and_recreated() -> None:
    from core.export import exporter as export
    from core.jobs import kinds as job_kinds

    kind = job_kinds.resumable_kinds()["export"]
    assert kind.made_by(export.export_stored_run) and kind.resolve() is export.export_stored_run
    kwargs = {"home": "/tmp/h", "run_id": "20261203-093820-mobilenet_v2-69214e",
              "out_dir": "/tmp/h/exports", "formats": ["keras", "tflite_int8"]}
    assert kind.decode(json.loads(json.dumps(kind.encode(kwargs)))) == kwargs


def test_an_audit_job_is_stored_and_recreated_under_the_same_dataset_key(tmp_path: Path) -> None:
    from conftest import make_class_folders

    from core.audit import findings as audit
    from core.config import AuditConfig
    from core.data import datasets
    from core.jobs import kinds as job_kinds

    dataset = datasets.ingest(make_class_folders(tmp_path / "pets", {"cats": 3, "dogs": 2}))
    kwargs = {"dataset_or_index": dataset, "home": tmp_path / "home",
              "config": AuditConfig(folds=3, seed=7)}
    kind = job_kinds.resumable_kinds()["audit"]
    assert kind.made_by(audit.audit) and kind.resolve() is audit.audit
    again = kind.decode(json.loads(json.dumps(kind.encode(kwargs))))
    assert again["config"] == kwargs["config"] and again["home"] == kwargs["home"]
    assert audit.dataset_root(again["dataset_or_index"]) == dataset.root
    assert audit.dataset_key(again["dataset_or_index"]) == audit.dataset_key(dataset)
    assert audit.index_of(again["dataset_or_index"])["path"].tolist() == \
        dataset.index["path"].tolist()
