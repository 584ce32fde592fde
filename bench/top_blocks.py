"""Top blocks trained on cached activations vs the frozen head (issue 32); prints JSON lines.

For each split seed: a cold first run (new studio home, whole command-line process) of the
frozen head (--tune-top-blocks 0) and of the top-block mode, then a second top-block run on
the warm home with another head setting (must read every tensor from the cache), and the
saved model.keras run on the raw test photos (top-1 agreement with the cached float16 path).

Usage: .venv/bin/python bench/top_blocks.py [--seeds 0 1 2] [--blocks 1] [--data DIR]
        [--extra-flags '--head manual'] [--top-flags '--augment --augment-views 1 ']
Needs the MobileNetV2 no-top weights from ../shared/assets (linked into a temp KERAS_HOME).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASSETS = Path(os.environ.get("TL_STUDIO_ASSETS") or ROOT.parent / "shared" / "assets")
WEIGHTS = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"


def _env(tmp: Path) -> dict[str, str]:
    keras_home = tmp / "keras-home"
    (keras_home / "models").mkdir(parents=True, exist_ok=True)
    link = keras_home / "models" / WEIGHTS
    if not link.exists():
        link.symlink_to(ASSETS / "weights" / WEIGHTS)
    return {**os.environ, "KERAS_HOME": str(keras_home), "TL_STUDIO_OFFLINE": "1",
            "TF_CPP_MIN_LOG_LEVEL": "2"}


def _cli(data: Path, home: Path, seed: int, flags: list[str], env: dict[str, str]) -> dict:
    """One `python -m core train` process, timed whole; its JSON result and run metrics."""
    cmd = [sys.executable, "-m", "core", "train", str(data), "--home", str(home), "--json",
           "--seed", str(seed), *flags]
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    metrics = json.loads((Path(result["run_dir"]) / "metrics.json").read_text())
    return {"flags": " ".join(flags), "process_seconds": round(wall, 1),
            "test_accuracy": result["test_accuracy"], "seconds": result["seconds"],
            "epochs_run": result["epochs_run"], "feature_cache": metrics["feature_cache"],
            "top_blocks": metrics.get("top_blocks"), "run_dir": result["run_dir"]}


def _raw_agreement(run_dir: str) -> dict:
    """The saved model on the raw test photos against the run's cached-path predictions."""
    sys.path.insert(0, str(ROOT))
    import keras
    import numpy as np

    from core.data import images

    metrics = json.loads((Path(run_dir) / "metrics.json").read_text())
    rows = metrics["test"]["predictions"]
    model = keras.saving.load_model(Path(run_dir) / "model.keras")
    labels = json.loads((Path(run_dir) / "labels.json").read_text())
    labels = labels["labels"] if isinstance(labels, dict) else labels
    batch = np.stack([images.load_resized(r["path"], 224) for r in rows]).astype(np.float32)
    top1 = np.asarray(model.predict(batch, batch_size=32, verbose=0)).argmax(axis=1)
    same = [labels[i] == r["predicted"] for i, r in zip(top1, rows)]
    correct = [labels[i] == r["true"] for i, r in zip(top1, rows)]
    return {"photos": len(rows), "same_top1": int(sum(same)),
            "raw_accuracy": round(float(np.mean(correct)), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--blocks", type=int, default=1)
    parser.add_argument("--data", type=Path,
                        default=ASSETS / "datasets" / "flower_photos_300")
    parser.add_argument("--extra-flags", type=shlex.split, default=["--head", "manual"],
                        help="flags of every run, one quoted string")
    parser.add_argument("--top-flags", type=shlex.split, default=[],
                        help="flags of the top-block runs only, one quoted string (e.g. "
                             "'--augment --augment-views 1 ')")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tb-bench-"))
    env = _env(tmp)
    for seed in args.seeds:
        frozen = _cli(args.data, tmp / f"frozen-{seed}", seed,
                      [*args.extra_flags, "--tune-top-blocks", "0"], env)
        top_flags = [*args.extra_flags, *args.top_flags, "--tune-top-blocks", str(args.blocks)]
        home = tmp / f"top-{seed}"
        first = _cli(args.data, home, seed, top_flags, env)
        second = _cli(args.data, home, seed, [*top_flags, "--dropout", "0.3"], env)
        out = {"seed": seed, "blocks": args.blocks, "load_average": os.getloadavg(),
               "frozen": frozen, "top_first": first, "top_second": second,
               "raw_check": _raw_agreement(first["run_dir"])}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
