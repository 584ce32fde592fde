"""Issue 26: the default head is "manual" again. Times whole `python -m core train` processes
on flower_photos_300, as a person runs them, and prints one JSON object.

For each head (manual, search): a first run on a new studio home (cold caches: the base is
converted to TFLite and every photo's features extracted), then a second run on the same home
with another head setting (--dropout 0.3: the features come from the cache). The kinds
alternate (manual cold, search cold, manual warm, search warm) so that a change in the
machine's load falls on both.

Usage: .venv/bin/python bench/cli_head_default.py [--data DIR] [--rounds N]
Needs the MobileNetV2 no-top weights from ../shared/assets (linked into a temp KERAS_HOME).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASSETS = Path(os.environ.get("TL_STUDIO_ASSETS") or ROOT.parent / "shared" / "assets")
WEIGHTS = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"


def _keras_home(tmp: Path) -> Path:
    source = ASSETS / "weights" / WEIGHTS
    if not source.is_file():
        sys.exit(f"missing {source}: the benchmark needs the offline weights")
    (tmp / "keras" / "models").mkdir(parents=True, exist_ok=True)
    (tmp / "keras" / "models" / WEIGHTS).symlink_to(source)
    return tmp / "keras"


def _train(data: Path, home: Path, keras_home: Path, head: str, extra: list[str]) -> dict:
    env = {**os.environ, "KERAS_HOME": str(keras_home), "TL_STUDIO_HOME": str(home),
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    load = os.getloadavg()[0]
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "core", "train", str(data), "--head", head,
                           "--json", *extra], cwd=ROOT, env=env, capture_output=True,
                          text=True, check=False)
    wall = time.monotonic() - started
    if done.returncode != 0:
        sys.exit(f"train --head {head} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {"head": head, "process_seconds": round(wall, 2), "load_avg_1min": round(load, 2),
            "seconds": result.get("seconds"), "test_accuracy": result.get("test_accuracy")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path,
                        default=ASSETS / "datasets" / "flower_photos_300")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    rounds = []
    with tempfile.TemporaryDirectory(prefix="cli-head-bench-") as name:
        tmp = Path(name)
        keras_home = _keras_home(tmp)
        for r in range(args.rounds):
            homes = {head: tmp / f"home-{head}-{r}" for head in ("manual", "search")}
            one = {}
            for head in ("manual", "search"):
                one[f"{head}_first"] = _train(args.data, homes[head], keras_home, head, [])
            for head in ("manual", "search"):
                one[f"{head}_second"] = _train(args.data, homes[head], keras_home, head,
                                               ["--dropout", "0.3"])
            one["first_run_ratio_manual_to_search"] = round(
                one["manual_first"]["process_seconds"] / one["search_first"]["process_seconds"], 3)
            rounds.append(one)
    print(json.dumps({"data": str(args.data), "cpu_count": os.cpu_count(), "rounds": rounds},
                     indent=1))


if __name__ == "__main__":
    main()
