"""An export job interrupted by a server stop says so on the Export page, and the temporary
folder it left is removed."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

from app_helpers import page
from conftest import make_class_folders
from run_helpers import make_run, tiny_classifier

from core.jobs import kinds as job_kinds


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_an_interrupted_export_says_so_and_its_temporary_folder_is_removed(
        studio_home: Path, tmp_path: Path) -> None:
    data = make_class_folders(tmp_path / "data", {"cats": 6, "dogs": 6}, size=32)
    run = make_run(studio_home, data, tiny_classifier(2), train=False)
    pid = dead_pid()
    staging = studio_home / "exports" / f".exporting-{run.run_id}-{pid}-abc123"
    (staging / "saved_model").mkdir(parents=True)
    (staging / "model.keras").write_bytes(b"half")
    jobs = studio_home / "jobs"
    jobs.mkdir()
    (jobs / "job-x.json").write_text(json.dumps({
        "job_id": "job-x", "title": f"Export {run.run_id}", "kind": job_kinds.EXPORT.name,
        "subject": run.run_id, "device": "local", "state": "running", "submitted": 1.0,
        "started": 2.0, "pid": pid, "hostname": socket.gethostname(), "pid_started": None}))
    at = page("6_Export").run()
    assert not at.exception, at.exception
    assert any("interrupted" in str(w.value) for w in at.warning)
    assert not staging.exists()
