"""A process ended from outside (a cluster task stopped by force) leaves its run "running";
core.runs.writer.close_runs_left_by records the end of exactly the runs it was writing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.runs.writer import close_runs_left_by

WORKER = {"pid": 4242, "hostname": "node-b", "pid_started": "77"}


def _write_runs(runs_dir: Path, runs: dict[str, dict]) -> None:
    for run_id, recorded in runs.items():
        (runs_dir / run_id).mkdir(parents=True)
        (runs_dir / run_id / "status.json").write_text(json.dumps(recorded))


def test_the_killed_process_run_is_closed_and_no_other(tmp_path: Path) -> None:
    runs = {"mine": {"status": "running", **WORKER},
            "other-process": {"status": "running", **WORKER, "pid": 4343},
            "other-machine": {"status": "running", **WORKER, "hostname": "node-c"},
            "done-before": {"status": "completed", **WORKER}}
    _write_runs(tmp_path, runs)
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / "status.json").write_text("{not json")

    assert close_runs_left_by(tmp_path, WORKER, "cancelled", "why") == ["mine"]
    read = {r: json.loads((tmp_path / r / "status.json").read_text()) for r in runs}
    assert read["mine"]["status"] == "cancelled" and read["mine"]["error"] == "why"
    assert read["mine"]["finished"] == read["mine"]["updated"]
    assert {read[r]["status"] for r in ("other-process", "other-machine")} == {"running"}
    assert read["done-before"]["status"] == "completed"
    assert (tmp_path / "damaged" / "status.json").read_text() == "{not json"


def test_without_a_known_worker_nothing_is_closed(tmp_path: Path) -> None:
    _write_runs(tmp_path, {"mine": {"status": "running", **WORKER}})
    assert close_runs_left_by(tmp_path, None, "cancelled", "why") == []
    assert close_runs_left_by(tmp_path, {"hostname": "node-b"}, "cancelled", "why") == []
    with pytest.raises(ValueError):
        close_runs_left_by(tmp_path, WORKER, "running", "why")
