"""Export benchmark of issue 15 on the offline flower photos; prints one JSON object.

Trains MobileNetV2 (ImageNet weights, frozen base, default head) on flower_photos_300 with
the default split, exports every format with core.export.exporter (each reloaded in a clean process
and scored on the test photos) and reports, per format: export time, file size, single-photo
latency p50, test accuracy and agreement with the Keras model; then the floors of the issue:
int8 file at most 30% of the float32 file, int8 latency at most float32's, int8 accuracy
within 2 points of Keras. The machine's load average is given before and after, since other
work on a shared machine moves the latencies.

Usage: .venv/bin/python bench/export_benchmark.py [--data DIR] [--epochs N]
Needs the MobileNetV2 no-top weights ($TL_STUDIO_ASSETS or ../shared/assets).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
ASSETS = Path(os.environ.get("TL_STUDIO_ASSETS", ROOT.parent / "shared" / "assets"))
WEIGHTS = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"


def _keras_home(tmp: Path) -> Path:
    source = ASSETS / "weights" / WEIGHTS
    if not source.is_file():
        sys.exit(f"missing {source}: the benchmark needs the offline weights")
    home = tmp / "keras-home"
    (home / "models").mkdir(parents=True)
    (home / "models" / WEIGHTS).symlink_to(source)
    return home


def main() -> None:
    """Trains, exports, prints the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ASSETS / "datasets" / "flower_photos_300")
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tl-export-bench-") as tmp_name:
        tmp = Path(tmp_name)
        os.environ["KERAS_HOME"] = str(_keras_home(tmp))
        os.environ["TL_STUDIO_OFFLINE"] = "1"
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        from core.config import SplitConfig, TrainConfig
        from core.data import datasets, splits
        from core.export import exporter as export
        from core.runs.store import RunStore
        from core.training import pipeline as training

        load_before = os.getloadavg()
        dataset = datasets.ingest(args.data, home=tmp / "home")
        split_df = splits.split(dataset.index, SplitConfig(seed=0))
        config = TrainConfig(backbone="mobilenet_v2", epochs=args.epochs)
        trained = training.train(split_df, config, home=tmp / "home")
        run = RunStore(tmp / "home").load(trained.run_id)
        started = time.perf_counter()
        result = export.export_run(run, tmp / "out")
        seconds = time.perf_counter() - started
        meta = result.metadata
        formats = meta["formats"]
        keras_accuracy = meta["keras_test_accuracy"]
        table = {name: {
            "status": fmt["status"], "export_seconds": fmt["export_seconds"],
            "size_bytes": fmt["size_bytes"], "latency_ms_p50": fmt["latency_ms_p50"],
            "test_accuracy": fmt["test_accuracy"], "agreement": fmt["agreement"],
            "max_probability_difference": fmt["max_probability_difference"],
            "recommended": fmt["recommended"], "error": fmt["error"],
            "runtimes": {r["runtime"]: r["latency_ms_p50"] for r in fmt["runtimes"]},
        } for name, fmt in formats.items()}
        int8, f32 = formats.get("tflite_int8", {}), formats.get("tflite_float32", {})
        floors = {}
        if int8.get("status") == "ok" and f32.get("status") == "ok":
            floors = {
                "int8_size_share_of_float32": int8["size_bytes"] / f32["size_bytes"],
                "int8_size_ok": int8["size_bytes"] <= 0.3 * f32["size_bytes"],
                "int8_latency_ms": int8["latency_ms_p50"],
                "float32_latency_ms": f32["latency_ms_p50"],
                "int8_latency_ok": int8["latency_ms_p50"] <= f32["latency_ms_p50"],
                "int8_accuracy_loss_points": (keras_accuracy - int8["test_accuracy"]) * 100,
                "int8_accuracy_ok": (keras_accuracy - int8["test_accuracy"]) * 100 <= 2.0,
            }
        print(json.dumps({
            "data": str(args.data), "test_photos": meta["test_photos"],
            "keras_test_accuracy": keras_accuracy, "train_seconds": trained.seconds["total"],
            "export_seconds_total": seconds, "formats": table, "floors": floors,
            "cpu_count": os.cpu_count(), "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
        }, indent=2))


if __name__ == "__main__":
    main()
