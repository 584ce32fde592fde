"""Times the studio's cluster path against one machine: extraction of a dataset split over two
single-CPU Ray nodes against one local process, and seconds from "start training" to the
first head epoch on the cluster against local. Prints one JSON object.

Starts its own two-node cluster on 127.0.0.1 (the cluster tier's helper) unless --address is
given. Both nodes run on this machine, so the cluster cannot be faster here: the figure of
interest is its overhead.

    TL_STUDIO_OFFLINE=1 python bench/cluster_benchmark.py \
        [--data ../shared/assets/datasets/flower_photos_300] [--address HOST:PORT]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "tests" / "jobs")]
DEFAULT_DATA = REPO.parent / "shared" / "assets" / "datasets" / "flower_photos_300"


def _extraction(address: str, data: Path, home: Path) -> dict:
    from core.config import TrainConfig
    from core.data import datasets
    from core.features import backbones, cache
    from core.features import extraction as features
    from core.features import weights as base_weights
    from core.jobs.executors.ray_executor import RayExecutor

    index = datasets.ingest(data, home=home).index
    spec = backbones.get_spec("mobilenet_v2")
    # Two random bases (seeds 0 and 1), each converted to TFLite here once (cached in the
    # home): the second cluster pass uses the other base, so its workers, which keep the
    # vectors they wrote in memory, compute every photo again.
    for seed in (1, 0):
        resolved = base_weights.resolve_weights(spec, None, seed=seed)
        extractor = features.make_extractor(spec, resolved, home=home)
    features_dir = home / "cache" / "features"

    def fresh() -> None:
        shutil.rmtree(features_dir, ignore_errors=True)
        cache.forget_recent_features()

    out: dict = {"photos": len(index)}
    fresh()
    t0 = time.monotonic()
    _, stats = features.extract(extractor, index["path"], index["sha256"], home=home)
    out["local_seconds"] = round(time.monotonic() - t0, 2)
    assert stats.misses == len(index)
    executor = RayExecutor(address, home=home)
    executor.check()
    for seed, attempt in ((0, "cluster_cold"), (1, "cluster_warm")):
        fresh()
        config = TrainConfig(weights=None, seed=seed)
        done = executor.extract_features(config, index["path"], index["sha256"], shards=2)
        assert done.misses == len(index) and len(done.nodes) == 2, done
        out[f"{attempt}_seconds"] = round(done.seconds, 2)
        out[f"{attempt}_shards"] = [
            {"images": s["images"], "seconds": s["seconds"]} for s in done.shards]
    fresh()
    return out


def _first_epoch(executor, home: Path, split, config) -> float:
    from core.jobs.manager import JobManager
    from core.training import pipeline as training

    manager = JobManager(home, executor=executor)
    started = time.monotonic()
    job = manager.submit(training.train, title="bench", split_df=split, config=config,
                         home=home)
    while True:
        status = manager.status(job)
        if any(getattr(e, "phase", None) == "training head" for e in status.events):
            seconds = time.monotonic() - started
            break
        if status.done:
            raise RuntimeError(f"job ended before its first epoch: {status.error}")
        time.sleep(0.05)
    manager.wait(job, 600)
    manager.shutdown()
    return round(seconds, 2)


def _start_to_first_epoch(address: str, root: Path) -> dict:
    from conftest import make_class_folders

    from core.config import SplitConfig, TrainConfig
    from core.data import datasets, splits
    from core.jobs.executors import LocalExecutor
    from core.jobs.executors.ray_executor import RayExecutor

    data = make_class_folders(root / "small", {"a": 20, "b": 20, "c": 20})
    config = TrainConfig(weights=None, epochs=2, batch_size=8, head="manual")
    out = {}
    for name, make in (("local", lambda home: LocalExecutor()),
                       ("cluster", lambda home: RayExecutor(address, home=home))):
        for attempt in ("first", "second"):
            home = root / f"{name}-{attempt}"
            home.mkdir()
            split = splits.split(datasets.ingest(data, home=home).index, SplitConfig(seed=1))
            out[f"{name}_{attempt}_seconds"] = _first_epoch(make(home), home, split, config)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--address", default=None,
                        help="an existing cluster (else a two-node one is started here)")
    args = parser.parse_args()
    os.environ.setdefault("TL_STUDIO_OFFLINE", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    root = Path(tempfile.mkdtemp(prefix="tl-cluster-bench-"))
    result: dict = {"load_before": os.getloadavg()}
    with contextlib.ExitStack() as stack:
        address = args.address
        if address is None:
            from ray_cluster import two_node_cluster

            address = stack.enter_context(two_node_cluster()).address
        result["extraction"] = _extraction(address, args.data, root / "home")
        result["start_to_first_epoch"] = _start_to_first_epoch(address, root)
    result["load_after"] = os.getloadavg()
    shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
