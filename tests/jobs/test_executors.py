"""Executors behind the job queue, without a cluster: the choice, the home check, the states."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO_ROOT

from core.errors import AppError
from core.jobs.executors import (
    RAY_ADDRESS_ENV_VAR,
    RAY_RESOURCES_ENV_VAR,
    ClusterError,
    JobInterrupted,
    LocalExecutor,
    home_check,
    ray_address,
    ray_resources,
)
from core.jobs.manager import JobManager
from core.runs import placement
from core.status import FAILED, INTERRUPTED


@pytest.fixture(autouse=True)
def no_cluster_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(RAY_ADDRESS_ENV_VAR, raising=False)
    monkeypatch.delenv(RAY_RESOURCES_ENV_VAR, raising=False)


def test_the_address_comes_from_the_flag_then_the_environment_then_the_secrets(
        monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = {"studio": {"ray_address": " 10.0.0.5:6379 "}}
    assert ray_address() == ""
    assert ray_address({"studio": None}) == ""
    assert ray_address(secrets) == "10.0.0.5:6379"
    monkeypatch.setenv(RAY_ADDRESS_ENV_VAR, "head:6379")
    assert ray_address(secrets) == "head:6379"
    assert ray_address(secrets, override="other:1") == "other:1"


def test_custom_resources_are_a_json_object_or_a_clear_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert ray_resources() == {}
    monkeypatch.setenv(RAY_RESOURCES_ENV_VAR, '{"studio": 1}')
    assert ray_resources() == {"studio": 1.0}
    monkeypatch.setenv(RAY_RESOURCES_ENV_VAR, "studio=1")
    with pytest.raises(ClusterError, match="JSON object"):
        ray_resources()


def test_without_an_address_the_executor_is_local_and_ray_is_never_imported(
        tmp_path: Path) -> None:
    # A fresh process: the CLI module, the executor choice and a job through the manager.
    code = textwrap.dedent(f"""
        import sys
        import core.__main__
        from core.jobs.executors import make_executor
        from core.jobs.manager import JobManager
        executor = make_executor({str(tmp_path)!r})
        manager = JobManager({str(tmp_path)!r}, executor=executor)
        job = manager.submit(lambda on_event, should_stop: 42, title="t")
        status = manager.wait(job, 30)
        print(type(executor).__name__, status.state, status.result, "ray" in sys.modules)
    """)
    env = {"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["LocalExecutor", "completed", "42", "False"]


def test_a_configured_address_without_ray_installed_says_what_to_install(
        tmp_path: Path) -> None:
    code = textwrap.dedent(f"""
        import sys
        sys.modules["ray"] = None  # as if Ray were not installed
        from core.jobs.executors import make_executor
        executor = make_executor({str(tmp_path)!r}, address="10.0.0.5:6379")
        try:
            executor.check()
        except Exception as exc:
            print(type(exc).__name__, exc)
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ClusterError")
    assert "pip install -r requirements-cluster.txt" in done.stdout
    assert "'10.0.0.5:6379'" in done.stdout


def test_the_cli_with_ray_missing_fails_clearly_and_trains_nothing(
        tmp_path: Path, small_dataset: Path) -> None:
    code = ("import sys; sys.modules['ray'] = None; from core.__main__ import main; "
            f"sys.exit(main(['--home', {str(tmp_path / 'home')!r}, 'train', "
            f"{str(small_dataset)!r}, '--weights', 'none', '--ray', '10.0.0.5:6379']))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 2
    assert "error: " in done.stderr and "requirements-cluster.txt" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "home" / "runs").exists()


def test_the_local_executor_calls_the_job_here_and_places_it_locally() -> None:
    seen: dict[str, Any] = {}

    def job(on_event, should_stop, value):
        on_event({"phase": "x"})
        seen["placement"] = placement.current()
        return value * 2

    events: list[Any] = []
    assert LocalExecutor().run(job, {"value": 4}, kind="train", on_event=events.append,
                               should_stop=lambda: False) == 8
    assert events == [{"phase": "x"}]
    assert seen["placement"]["backend"] == "local"
    with placement.running_on({"backend": "ray", "node_id": "n1", "node_address": "a"}):
        assert placement.current()["node_id"] == "n1"
    assert placement.current()["backend"] == "local"


class _FailingExecutor:
    """Raises one given error for every job, as a cluster executor would."""

    name = "test"

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.checks = 0

    def check(self) -> None:
        self.checks += 1

    def describe(self) -> str:
        return "nowhere"

    def run(self, fn, kwargs, *, kind, on_event, should_stop):
        raise self.error


def test_a_job_whose_node_went_away_ends_interrupted_with_the_message(tmp_path: Path) -> None:
    executor = _FailingExecutor(JobInterrupted("The cluster's node abc at 10.0.0.7 stopped"))
    manager = JobManager(tmp_path, executor=executor)
    job = manager.submit(lambda on_event, should_stop: None, title="t")
    status = manager.wait(job, 30)
    assert status.state == INTERRUPTED
    assert "node abc at 10.0.0.7" in status.error
    assert status.error_traceback is None
    assert executor.checks == 1
    record = json.loads((tmp_path / "jobs" / f"{job}.json").read_text())
    assert record["state"] == INTERRUPTED
    manager.shutdown()


def test_an_unreachable_cluster_refuses_the_job_at_submit(tmp_path: Path) -> None:
    class Unreachable(_FailingExecutor):
        def check(self) -> None:
            raise ClusterError("Cannot reach the Ray cluster at 'x:1'")

    manager = JobManager(tmp_path, executor=Unreachable(AppError("unused")))
    with pytest.raises(ClusterError, match="Cannot reach"):
        manager.submit(lambda on_event, should_stop: None, title="t")
    assert manager.jobs() == []
    manager.shutdown()


def test_a_cluster_error_during_the_job_fails_it_without_a_traceback(tmp_path: Path) -> None:
    manager = JobManager(tmp_path, executor=_FailingExecutor(ClusterError("went away")))
    status = manager.wait(manager.submit(lambda on_event, should_stop: None, title="t"), 30)
    assert (status.state, status.error, status.error_traceback) == (FAILED, "went away", None)
    manager.shutdown()


def test_the_home_check_passes_only_where_the_servers_home_is_seen(tmp_path: Path) -> None:
    home = tmp_path / "home"
    token = home_check.write_check(home)
    node = {"node_id": "0123456789abcdef", "node_address": "10.0.0.7"}
    home_check.verify(home, token, node)  # the same folder: fine

    other = tmp_path / "other-home"  # a node that mounted something else at that path
    other.mkdir()
    with pytest.raises(home_check.HomeNotShared) as sees_another:
        home_check.verify(other, token, node)
    assert "0123456789ab at 10.0.0.7" in str(sees_another.value)
    assert str(other) in str(sees_another.value) and "another folder" in str(sees_another.value)

    with pytest.raises(home_check.HomeNotShared) as missing:
        home_check.verify(tmp_path / "nowhere", token, node)
    assert "cannot see" in str(missing.value) and str(tmp_path / "nowhere") in str(missing.value)

    home_check.remove_check(home, token)
    with pytest.raises(home_check.HomeNotShared):
        home_check.verify(home, token, node)


def test_a_rerun_jobs_curves_start_again_from_its_new_attempt() -> None:
    from core.progress import ProgressEvent
    from core.runs import history

    def epoch(n: int, accuracy: float) -> ProgressEvent:
        return ProgressEvent(phase="training head", epoch=n, epoch_end=True,
                             metrics={"loss": 1.0, "accuracy": accuracy})

    first = [ProgressEvent(phase="preparing"), epoch(1, 0.1), epoch(2, 0.2)]
    notice = ProgressEvent(phase="preparing", message="The machine running this job ... was lost")
    second = [ProgressEvent(phase="preparing"), epoch(1, 0.7)]
    rows = history.from_events([*first, notice, *second])
    assert rows["epoch"].tolist() == [1]
    assert rows["accuracy"].tolist() == [0.7]
    assert history.from_events(first)["accuracy"].tolist() == [0.1, 0.2]



def test_a_run_left_by_a_lost_node_on_another_machine_is_recorded_failed(
        tmp_path: Path) -> None:
    """On this machine the run store sees a lost attempt's process is gone (interrupted); on
    another machine it cannot, so the executor records the run's end with the reason."""
    import socket

    pytest.importorskip("ray")
    from core.jobs.executors.ray_executor import close_lost_attempt

    elsewhere = {"pid": 4242, "hostname": "another-machine", "pid_started": "7"}
    here = {**elsewhere, "hostname": socket.gethostname()}
    for run_id, worker in (("remote", elsewhere), ("local", here)):
        (tmp_path / "runs" / run_id).mkdir(parents=True)
        (tmp_path / "runs" / run_id / "status.json").write_text(
            json.dumps({"status": "running", **worker}))

    assert close_lost_attempt(tmp_path, {"node_id": "b", "worker": elsewhere}, "lost") == \
        ["remote"]
    assert close_lost_attempt(tmp_path, {"node_id": "a", "worker": here}, "lost") == []
    assert close_lost_attempt(tmp_path, None, "lost") == []
    remote = json.loads((tmp_path / "runs" / "remote" / "status.json").read_text())
    local = json.loads((tmp_path / "runs" / "local" / "status.json").read_text())
    assert (remote["status"], remote["error"]) == ("failed", "lost")
    assert local["status"] == "running"
