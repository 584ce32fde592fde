"""The studio's jobs on a real two-node Ray cluster on 127.0.0.1 (the cluster tier).

One cluster for the module (tests/jobs/ray_cluster.py): a head and a second node offering
the custom resource "worker2", so a job can be sent there. The node-failure test runs last:
it kills the second node.
"""

from __future__ import annotations

import json
import os
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
    from core.jobs.executors.ray_extraction import extract_on_cluster

    home = tmp_path / "home"
    home.mkdir()
    index = datasets.ingest(photos, home=home).index
    config = TrainConfig(weights=None, seed=5)
    executor = RayExecutor(cluster.address, home=home)
    done = extract_on_cluster(executor, config, index["path"], index["sha256"], shards=2)
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
