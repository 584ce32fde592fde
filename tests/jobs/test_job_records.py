"""A damaged job record (valid JSON, wrong types) left by a server that died is dropped with
a warning when the next server takes over: the Train page keeps loading."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from app_helpers import page

from core.jobs.manager import JobManager


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def record(**changes: Any) -> dict[str, Any]:
    return {"job_id": "job-1", "title": "Training", "kind": "train", "subject": "",
            "device": "local", "state": "running", "position": None,
            "cancel_requested": False, "submitted": 1.0, "started": 2.0, "finished": None,
            "error": None, "pid": dead_pid(), "hostname": socket.gethostname(),
            "pid_started": None, **changes}


DAMAGE = [{"started": "abc"}, {"submitted": "yesterday"}, {"title": ["x"]},
          {"position": "first"}, {"job_id": 7}, {"stored_kwargs": "x", "state": "queued"}]


@pytest.mark.parametrize("changes", DAMAGE)
def test_a_damaged_job_record_is_dropped_with_a_warning(
        studio_home: Path, changes: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    folder = studio_home / "jobs"
    folder.mkdir(parents=True)
    (folder / "job-1.json").write_text(json.dumps(record(**changes)))
    manager = JobManager(studio_home)
    try:
        manager.resume()
        assert manager.jobs() == []
    finally:
        manager.shutdown(timeout=10)
    assert not (folder / "job-1.json").exists()
    assert "dropped the job record" in caplog.text


def test_a_good_record_of_a_dead_server_is_still_taken_over(studio_home: Path) -> None:
    folder = studio_home / "jobs"
    folder.mkdir(parents=True)
    (folder / "job-1.json").write_text(json.dumps(record()))
    manager = JobManager(studio_home)
    try:
        manager.resume()
        [job] = manager.jobs()
        assert job.state == "interrupted"
    finally:
        manager.shutdown(timeout=10)


def test_the_train_page_loads_with_a_damaged_job_record(studio_home: Path) -> None:
    folder = studio_home / "jobs"
    folder.mkdir(parents=True)
    (folder / "job-1.json").write_text(json.dumps(record(started="abc")))
    at = page("2_Train").run()
    assert not at.exception, at.exception
