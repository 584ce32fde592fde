"""One photo's Grad-CAM heatmap with MobileNetV2 (core.results.explain), first and warm; prints JSON.

The model is laid out as a studio run's: preprocessing + the nested MobileNetV2 base (ImageNet
weights from $KERAS_HOME/models, or --weights FILE; random weights with --random) + a softmax
head, saved to model.keras and loaded back as the app loads it. Times: building the Explainer
(taking the model apart and checking its parts), the first heatmap (traces the gradient
function), then warm heatmaps of new photos (the compiled function reused), as explain()
alone and as the Predict page's whole path (decode the photo, heatmap, overlay on the model
view and on the upright original). A plain prediction is timed alongside for scale. The
machine is shared, so the load average is printed before and after.

Usage: .venv/bin/python bench/explain_benchmark.py [--repeat N] [--photo FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FLOOR_SECONDS = 0.5  # the limit for one photo on this machine


def _model(weights: str | None, folder: Path) -> tuple[object, str]:
    import keras

    from core.config import TrainConfig
    from core.features import backbones
    from core.features import weights as base_weights
    from core.training import fine_tuning
    from core.training import head as head_training

    spec = backbones.get_spec("mobilenet_v2")
    resolved = base_weights.resolve_weights(spec, weights)
    base = backbones.build_base(spec, resolved)
    head = head_training.build_head(spec.feature_dim, 5, TrainConfig(weights=weights))
    path = folder / "model.keras"
    fine_tuning.assemble_model(base, head, spec.input_size).save(path)
    return keras.saving.load_model(path, compile=False), resolved.kind


def _stats(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {"median": round(statistics.median(ordered), 4),
            "p90": round(ordered[int(0.9 * (len(ordered) - 1))], 4),
            "max": round(ordered[-1], 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20, help="warm heatmaps to time")
    parser.add_argument("--photo", default=None, help="a photo for the page's whole path "
                        "(default: a generated 1600 x 1200 JPEG)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--weights", default="imagenet", help="'imagenet' or a weights file")
    group.add_argument("--random", action="store_true", help="random weights (no file needed)")
    args = parser.parse_args()

    import numpy as np
    from PIL import Image

    from core.results import explain
    from core.results.prediction import Predictor

    load_before = os.getloadavg()
    labels = ["a", "b", "c", "d", "e"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model, weights_kind = _model(None if args.random else args.weights, folder)
        photo = Path(args.photo) if args.photo else folder / "photo.jpg"
        if not args.photo:
            rng = np.random.default_rng(0)
            Image.fromarray(rng.integers(0, 256, (1200, 1600, 3), np.uint8)).save(photo)
        rng = np.random.default_rng(1)
        batch = rng.integers(0, 256, (args.repeat + 1, 224, 224, 3), dtype=np.uint8)

        started = time.perf_counter()
        explainer = explain.Explainer(model, labels)
        build = time.perf_counter() - started
        started = time.perf_counter()
        explainer.explain(batch[0])
        first = time.perf_counter() - started
        warm, cpu = [], []
        for image in batch[1:]:
            wall0, cpu0 = time.perf_counter(), time.process_time()
            explainer.explain(image)
            warm.append(time.perf_counter() - wall0)
            cpu.append(time.process_time() - cpu0)
        page = []
        for _ in range(max(3, args.repeat // 4)):
            started = time.perf_counter()
            heat, original = explain.explain_file(explainer, photo)
            explain.on_model_view(heat)
            explain.on_original(heat, original)
            page.append(time.perf_counter() - started)
        predictor = Predictor(model, labels)
        predictor.warm_up()
        predict = []
        for image in batch[1:]:
            started = time.perf_counter()
            predictor.probabilities(image[None])
            predict.append(time.perf_counter() - started)
        with Image.open(photo) as opened:
            photo_size = list(opened.size)

    warm_stats = _stats(warm)
    print(json.dumps({
        "backbone": "mobilenet_v2", "weights": weights_kind, "input_size": 224,
        "score": explainer.score, "layer": explainer.layer, "grid": list(explainer.grid),
        "explainer_build_seconds": round(build, 3),
        "first_heatmap_seconds": round(first, 3),
        "warm_heatmap_seconds": warm_stats,
        "warm_heatmap_cpu_seconds_median": round(statistics.median(cpu), 4),
        "page_path_seconds": _stats(page), "page_photo_size": photo_size,
        "prediction_seconds": _stats(predict),
        "repeat": args.repeat, "floor_seconds": FLOOR_SECONDS,
        "within_floor": warm_stats["p90"] <= FLOOR_SECONDS,
        "cpu_count": os.cpu_count(),
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
    }, indent=2))


if __name__ == "__main__":
    main()
