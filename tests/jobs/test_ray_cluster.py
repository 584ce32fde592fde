"""The studio's jobs on a real two-node Ray cluster on 127.0.0.1 (the cluster tier).

One cluster for the module (tests/jobs/ray_cluster.py): a head and a second node offering
the custom resource "worker2", so a job can be sent there. The fault tests run last, in this
order: a node dying under a job that another node can take (the second node is then started
again), a node dying under a job no other node can take, and the whole cluster going away
under a server-like process.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO_ROOT, make_class_folders

pytest.importorskip("ray", reason="ray is not installed: pip install -r requirements-cluster.txt")

from ray_cluster import WORKER_RESOURCE, RayCluster, free_port, two_node_cluster

from core.config import TrainConfig
from core.data import datasets
from core.jobs.executors import RAY_RESOURCES_ENV_VAR
from core.jobs.executors.ray_extraction import SPREAD_MIN_ENV_VAR

pytestmark = pytest.mark.cluster

ON_WORKER = json.dumps({WORKER_RESOURCE: 1})
TRAIN_FLAGS = ["--weights", "none", "--epochs", "3", "--batch-size", "8", "--seed", "5",
               "--head", "manual", "--json"]


@pytest.fixture(scope="module")
def cluster() -> Iterator[RayCluster]:
    from core.jobs.executors import ray_executor

    with two_node_cluster() as started:
        try:
            yield started
        finally:
            ray_executor.disconnect()  # this test process's driver, before the cluster stops


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_class_folders(tmp_path_factory.mktemp("cluster") / "data",
                              {"cats": 8, "dogs": 8, "fish": 8})


def run_cli(*args: str, home: Path, env: dict[str, str] | None = None,
            check: bool = True) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "TL_STUDIO_OFFLINE": "1", "TF_CPP_MIN_LOG_LEVEL": "2",
                **(env or {})}
    done = subprocess.run([sys.executable, "-m", "core", "--home", str(home), *args],
                          cwd=REPO_ROOT, env=full_env, capture_output=True, text=True,
                          timeout=600, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"exit {done.returncode}\n{done.stdout}\n{done.stderr}")
    return done


def test_predictions(run_dir: Path) -> list[str]:
    """The run's top label for each photo of its test split, in split order."""
    import pandas as pd

    from core.results.prediction import Predictor

    split = pd.read_csv(run_dir / "split.csv")
    paths = split.loc[split["split"] == "test", "path"].tolist()
    return [p.top_k[0][0] for p in Predictor.from_run(run_dir).predict(paths)]


test_predictions.__test__ = False  # a helper, not a test


@pytest.fixture(scope="module")
def cluster_run(cluster: RayCluster, photos: Path,
                tmp_path_factory: pytest.TempPathFactory) -> dict:
    home = tmp_path_factory.mktemp("cluster-home")
    # Extraction spread over the cluster from 1 photo on: the training task on the second
    # node first has both nodes fill the cache, then reads every vector from it.
    done = run_cli("train", str(photos), *TRAIN_FLAGS, "--ray", cluster.address, home=home,
                   env={RAY_RESOURCES_ENV_VAR: ON_WORKER, SPREAD_MIN_ENV_VAR: "1"})
    return {"home": home, "result": json.loads(done.stdout), "stderr": done.stderr}


def test_cli_training_runs_on_the_second_node_and_equals_a_local_run(
        cluster: RayCluster, cluster_run: dict, photos: Path,
        tmp_path_factory: pytest.TempPathFactory) -> None:
    remote = cluster_run["result"]
    placed = remote["executed_on"]
    assert placed["backend"] == "ray"
    assert placed["node_id"] == cluster.worker_node_id
    assert placed["node_address"]
    versions = json.loads((Path(remote["run_dir"]) / "versions.json").read_text())
    assert versions["executed_on"] == placed
    assert "[training head] Epoch 3/3" in cluster_run["stderr"]  # progress came back live
    metrics = json.loads((Path(remote["run_dir"]) / "metrics.json").read_text())
    assert metrics["feature_cache"]["misses"] == 0, metrics["feature_cache"]  # spread first

    local = json.loads(run_cli("train", str(photos), *TRAIN_FLAGS,
                               home=tmp_path_factory.mktemp("local-home")).stdout)
    assert local["executed_on"]["backend"] == "local"
    assert remote["status"] == local["status"] == "completed"
    assert remote["test_accuracy"] == local["test_accuracy"]
    assert test_predictions(Path(remote["run_dir"])) == test_predictions(Path(local["run_dir"]))


def test_an_unreachable_address_is_a_clear_error_and_nothing_runs_here(
        tmp_path: Path, photos: Path) -> None:
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    done = run_cli("train", str(photos), *TRAIN_FLAGS, "--ray", address,
                   home=tmp_path / "home", check=False)
    assert done.returncode == 2
    assert f"Cannot reach the Ray cluster at '{address}'" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "home" / "runs").exists()


def test_extraction_split_over_both_nodes_fills_the_cache_a_local_run_reuses(
        cluster: RayCluster, photos: Path, tmp_path: Path) -> None:
    from core.features import backbones
    from core.features import extraction as features
    from core.features import weights as base_weights
    from core.jobs.executors.ray_executor import RayExecutor

    home = tmp_path / "home"
    home.mkdir()
    index = datasets.ingest(photos, home=home).index
    config = TrainConfig(weights=None, seed=5)
    executor = RayExecutor(cluster.address, home=home)
    done = executor.extract_features(config, index["path"], index["sha256"], shards=2)
    assert done.nodes == {cluster.head_node_id, cluster.worker_node_id}
    assert done.misses == len(index)

    spec = backbones.get_spec(config.backbone)
    resolved = base_weights.resolve_weights(spec, None, seed=config.seed)
    extractor = features.make_extractor(spec, resolved, home=home, defer_backend=True)
    _, stats = features.extract(extractor, index["path"], index["sha256"], home=home)
    assert (stats.hits, stats.misses) == (len(index), 0)


def test_a_node_that_does_not_see_the_home_fails_the_job_naming_node_and_path(
        cluster: RayCluster, tmp_path: Path) -> None:
    import pandas as pd

    from core.errors import AppError
    from core.jobs.executors import home_check
    from core.jobs.executors.ray_executor import RayExecutor
    from core.training import pipeline as training

    home = tmp_path / "home"
    executor = RayExecutor(cluster.address, home=home, resources={WORKER_RESOURCE: 1})
    real_write = home_check.write_check
    try:  # the server's check file goes to another folder than the one the node reads
        home_check.write_check = lambda _home: real_write(tmp_path / "elsewhere")
        with pytest.raises(AppError) as failed:
            executor.run(training.train, {"split_df": pd.DataFrame(), "home": home},
                         kind="train", on_event=lambda e: None, should_stop=lambda: False)
    finally:
        home_check.write_check = real_write
    message = str(failed.value)
    assert cluster.worker_node_id[:12] in message and str(home) in message
    assert not (home / "runs").exists()  # nothing half-written


def test_the_train_page_runs_its_job_on_the_cluster(
        cluster: RayCluster, photos: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from app_helpers import current_dataset, page

    from core.jobs.executors import RAY_ADDRESS_ENV_VAR
    from core.runs.store import RunStore
    from core.status import COMPLETED
    from ui import resources, state, train_form

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("TL_STUDIO_HOME", str(home))
    monkeypatch.setenv("TL_STUDIO_OFFLINE", "1")
    monkeypatch.setenv(RAY_ADDRESS_ENV_VAR, cluster.address)
    monkeypatch.setenv(RAY_RESOURCES_ENV_VAR, ON_WORKER)
    at = page("2_Train")
    at.session_state[state.CURRENT] = current_dataset(photos, home)
    at.run()
    at.radio(key=state.TRAIN_WEIGHTS_KIND).set_value(train_form.WEIGHTS_RANDOM)
    at.number_input(key=f"{state.TRAIN_PREFIX}.epochs").set_value(2)
    at.number_input(key=f"{state.TRAIN_PREFIX}.batch_size").set_value(8)
    at.run()
    at.button(key=state.TRAIN_START).click().run()
    assert not at.exception, at.exception
    manager = resources.job_manager()
    assert manager.executor.name == "ray"
    (job,) = manager.jobs(kind="train")
    status = manager.wait(job.job_id, 300)
    assert status.state == COMPLETED, status.error
    assert any(getattr(e, "phase", None) == "training head" for e in status.events)
    run = RunStore(home).load(status.result.run_id)
    assert run.versions["executed_on"]["node_id"] == cluster.worker_node_id
    at.run()
    assert not at.exception, at.exception


def test_an_unreachable_cluster_is_said_on_the_train_page(
        photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from app_helpers import current_dataset, page, texts

    from core.jobs.executors import RAY_ADDRESS_ENV_VAR
    from ui import resources, state, train_form

    home = tmp_path / "home"
    home.mkdir()
    address = f"127.0.0.1:{free_port()}"
    monkeypatch.setenv("TL_STUDIO_HOME", str(home))
    monkeypatch.setenv("TL_STUDIO_OFFLINE", "1")
    monkeypatch.setenv(RAY_ADDRESS_ENV_VAR, address)
    at = page("2_Train")
    at.session_state[state.CURRENT] = current_dataset(photos, home)
    at.run()
    at.radio(key=state.TRAIN_WEIGHTS_KIND).set_value(train_form.WEIGHTS_RANDOM)
    at.run()
    at.button(key=state.TRAIN_START).click().run()
    assert not at.exception, at.exception
    errors = " ".join(texts(at.error))
    assert f"Cannot reach the Ray cluster at '{address}'" in errors
    assert "Traceback" not in errors
    assert resources.job_manager().jobs() == []


def wait_for_phase(manager, job: str, phase: str, timeout: float = 300) -> None:
    """Waits until the job has reported an event of `phase`; fails if it ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = manager.status(job)
        if any(getattr(e, "phase", None) == phase for e in status.events):
            return
        assert status.state in ("queued", "running"), (status.state, status.error)
        time.sleep(0.5)
    pytest.fail(f"job {job} never reached {phase}")


def long_config(epochs: int = 500) -> TrainConfig:
    """A head training long enough to be acted on mid-way on an idle machine: 500 epochs (the
    most) of batches of 2 (8 steps an epoch); 300 epochs of 8 once ended before a cancel
    sent at its first epoch took effect 3 s later."""
    return TrainConfig(weights=None, seed=5, epochs=epochs, batch_size=2, head="manual",
                       early_stopping_patience=0)


def run_statuses(home: Path) -> dict[str, dict]:
    """status.json of every run in a home, by run id."""
    return {p.parent.name: json.loads(p.read_text())
            for p in sorted((home / "runs").glob("*/status.json"))}


def process_gone(pid: int, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        stat = Path(f"/proc/{pid}/stat")
        if stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
            return True
        time.sleep(0.5)
    return False


def test_cancel_on_the_cluster_stops_the_task_and_the_queue_goes_on(
        cluster: RayCluster, cluster_run: dict, tmp_path: Path) -> None:
    """Cancel as the Train page does (manager.cancel): a job that cannot stop by itself has
    its task ended on the node, one that can stops by itself; both end cancelled, their runs
    read cancelled, and the job queued behind them runs to completion on the cluster."""
    import cluster_jobs
    import pandas as pd

    from core.jobs.executors.ray_executor import RayExecutor
    from core.jobs.manager import JobManager
    from core.status import CANCELLED, COMPLETED
    from core.training import pipeline as training

    cluster_jobs.register()
    home = tmp_path / "home"
    split = pd.read_csv(Path(cluster_run["result"]["run_dir"]) / "split.csv")
    executor = RayExecutor(cluster.address, home=home, resources={WORKER_RESOURCE: 1},
                           cancel_grace=3)
    manager = JobManager(home, executor=executor)
    try:
        stubborn = manager.submit(cluster_jobs.train_ignoring_stop, title="stubborn",
                                  split_df=split, config=long_config(), home=home)
        polite = manager.submit(training.train, title="polite", split_df=split,
                                config=long_config(), home=home)
        short = manager.submit(training.train, title="short", split_df=split,
                               config=long_config(epochs=2), home=home)

        wait_for_phase(manager, stubborn, "training head")
        assert manager.cancel(stubborn)
        ended = manager.wait(stubborn, 180)
        assert ended.state == CANCELLED, (ended.state, ended.error)
        (stubborn_run,) = [s for s in run_statuses(home).values()
                           if "stopped on the cluster" in str(s.get("error"))]
        assert stubborn_run["status"] == "cancelled"
        assert stubborn_run["pid"] != os.getpid()  # written by the task's worker process...
        assert process_gone(stubborn_run["pid"])  # ...which ray.cancel(force=True) ended

        wait_for_phase(manager, polite, "training head")
        assert manager.cancel(polite)
        ended = manager.wait(polite, 180)
        assert ended.state == CANCELLED, (ended.state, ended.error)
        assert ended.result.status == CANCELLED  # the task's training returned by itself
        polite_run = run_statuses(home)[ended.result.run_id]
        assert polite_run["status"] == "cancelled" and polite_run["pid"] != os.getpid()

        done = manager.wait(short, 300)
        assert done.state == COMPLETED, (done.state, done.error)
        assert done.result.executed_on["node_id"] == cluster.worker_node_id
        statuses = sorted(s["status"] for s in run_statuses(home).values())
        assert statuses == ["cancelled", "cancelled", "completed"]
    finally:
        manager.shutdown()


def test_a_node_dying_under_a_job_another_node_can_take_reruns_it_there(
        cluster: RayCluster, cluster_run: dict, tmp_path: Path) -> None:
    """The job may run on any node; the head's CPU is held so it starts on the second node,
    which is killed mid-training and the head freed: Ray reruns it from the start on the head,
    it completes, and the run and the Train page say it was rerun after the node was lost."""
    import cluster_jobs
    import pandas as pd
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from core.jobs.executors.ray_executor import RayExecutor
    from core.jobs.manager import JobManager
    from core.runs.store import RunStore
    from core.status import COMPLETED, INTERRUPTED
    from core.training import pipeline as training
    from ui import train_monitor

    cluster_jobs.register()
    home = tmp_path / "home"
    split = pd.read_csv(Path(cluster_run["result"]["run_dir"]) / "split.csv")
    executor = RayExecutor(cluster.address, home=home, retry_wait=180)
    executor.check()
    holder = cluster_jobs.CpuHolder.options(num_cpus=1, scheduling_strategy=(
        NodeAffinitySchedulingStrategy(cluster.head_node_id, soft=False))).remote()
    ray.get(holder.ready.remote(), timeout=120)
    manager = JobManager(home, executor=executor)
    lost_node = cluster.worker_node_id
    try:
        job = manager.submit(training.train, title="rerun", split_df=split,
                             config=long_config(epochs=300), home=home)
        wait_for_phase(manager, job, "training head")
        os.kill(cluster.worker_raylet_pid(), signal.SIGKILL)
        ray.kill(holder)
        status = manager.wait(job, 400)
        assert status.state == COMPLETED, (status.state, status.error)
        placed = status.result.executed_on
        assert placed["node_id"] == cluster.head_node_id
        assert placed["rerun_after_lost_node"]["node_id"] == lost_node
        said = [e.message for e in status.events if "was lost" in (e.message or "")]
        assert len(said) == 1 and lost_node[:12] in said[0], said
        page = train_monitor.rerun_text(placed)
        assert lost_node[:12] in page and cluster.head_node_id[:12] in page
        # Its run records the rerun; the first attempt's run reads interrupted.
        store = RunStore(home)
        versions = json.loads((Path(status.result.run_dir) / "versions.json").read_text())
        assert versions["executed_on"]["rerun_after_lost_node"]["node_id"] == lost_node
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            others = [s.status for s in store.list() if s.run_id != status.result.run_id]
            if others == [INTERRUPTED]:
                break
            time.sleep(1)
        assert others == [INTERRUPTED]
    finally:
        manager.shutdown()
        cluster.replace_worker()  # the next fault test kills a second node again


def test_the_second_node_dying_mid_job_interrupts_it_naming_the_node(
        cluster: RayCluster, cluster_run: dict) -> None:
    """Runs last: it kills the second node's raylet."""
    import pandas as pd

    from core.jobs.executors.ray_executor import RayExecutor
    from core.jobs.manager import JobManager
    from core.runs.store import RunStore
    from core.status import INTERRUPTED, RUNNING
    from core.training import pipeline as training

    home = cluster_run["home"]  # holds the earlier run trained on the cluster
    split = pd.read_csv(Path(cluster_run["result"]["run_dir"]) / "split.csv")
    executor = RayExecutor(cluster.address, home=home, resources={WORKER_RESOURCE: 1},
                           retry_wait=5)
    manager = JobManager(home, executor=executor)
    config = TrainConfig(weights=None, seed=5, epochs=300, batch_size=8, head="manual",
                         early_stopping_patience=0)
    job = manager.submit(training.train, title="long", split_df=split, config=config,
                         home=home)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        status = manager.status(job)
        if any(getattr(e, "phase", None) == "training head" for e in status.events):
            break
        assert status.state == RUNNING or status.state == "queued", status.error
        time.sleep(0.5)
    else:
        pytest.fail("the job never reached head training")
    os.kill(cluster.worker_raylet_pid(), signal.SIGKILL)
    status = manager.wait(job, 180)
    assert status.state == INTERRUPTED, (status.state, status.error)
    assert cluster.worker_node_id[:12] in status.error
    # The server keeps answering, and the run trained earlier still loads.
    store = RunStore(home)
    assert store.load(cluster_run["result"]["run_id"]).labels
    # The killed job's run is kept, and reads as interrupted once its process is gone.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        others = [s.status for s in store.list() if s.run_id != cluster_run["result"]["run_id"]]
        if others == [INTERRUPTED]:
            break
        time.sleep(1)
    assert others == [INTERRUPTED]
    assert manager.jobs()[0].job_id == job
    manager.shutdown()


RECONNECT_TIMEOUT = 20  # RAY_gcs_rpc_server_reconnect_timeout_s for the server-like process


def test_a_server_outlives_its_whole_cluster_and_says_why_its_job_stopped(
        cluster: RayCluster, cluster_run: dict, tmp_path: Path) -> None:
    """Runs last: stops the whole cluster under a server-like process running a job on it.
    Ray ends a driver whose cluster stays away RECONNECT_TIMEOUT seconds; the process must
    still answer well after that, its job failed saying the cluster went away, and a new job
    refused with the reason."""
    from core.jobs.executors import ray_executor

    home = tmp_path / "home"
    home.mkdir()
    log = tmp_path / "server.log"
    env = {**os.environ, "TL_STUDIO_OFFLINE": "1", "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": str(REPO_ROOT),
           "RAY_gcs_rpc_server_reconnect_timeout_s": str(RECONNECT_TIMEOUT)}
    split_csv = Path(cluster_run["result"]["run_dir"]) / "split.csv"
    with log.open("w") as errors:
        server = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("cluster_server.py")),
             cluster.address, str(home), str(split_csv)],
            cwd=REPO_ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=errors, text=True)
    try:
        ready, _, _ = select.select([server.stdout], [], [], 400)
        line = server.stdout.readline() if ready else ""
        assert json.loads(line or "{}").get("running"), (line, log.read_text()[-3000:])
        ray_executor.disconnect()  # this test process's own driver
        cluster.stop()
        time.sleep(RECONNECT_TIMEOUT + 15)  # past the moment Ray would end the process
        assert server.poll() is None, log.read_text()[-3000:]
        out, _ = server.communicate("check\n", timeout=120)
        assert server.returncode == 0, log.read_text()[-3000:]
        said = json.loads(out.strip().splitlines()[-1])
        assert said["state"] == "failed", said
        assert "went away" in said["error"] and cluster.address in said["error"], said
        assert f"Cannot reach the Ray cluster at '{cluster.address}'" in said["refused"], said
        assert "went away" in said["refused"], said
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(30)
