"""What the live camera's preprocessing costs: the server's answer on a photo against the answer
on the pixels the live view would give the model for the same scene.

The server decodes a photo upright in sRGB (a JPEG at a reduced DCT scale first) and squashes
it to S x S with Pillow's antialiased bilinear filter (core.data.images.load_resized). The live
view gets a video frame, draws it on a canvas at its own size and squashes it in JavaScript
(ui/live_camera_web/resize.js: the same filter in floating point, each pass rounded; its Python
copy tests/video_helpers.browser_squash is checked equal to it in Chromium by
tests/app/test_live_camera_browser.py). Two live paths are measured on the run's test photos:

- "browser_resize": the full-size upright photo, squashed as the page does (only the resize
  differs, and the JPEG's full-scale decode);
- "camera_frame": the photo as a 640 x 480 camera frame (squashed to 4:3, through the YUV
  4:2:0 colours a camera stream carries, as Chromium's fake camera plays it), then squashed as
  the page does.

A third, "full_decode_pillow" (the full-size decode squashed by Pillow, as the server squashes),
tells the JPEG's reduced-scale decode apart from the page's resize.

For each: the share of photos with the server's top class, the largest and mean |p difference|
over all classes, accuracy both ways, the "not sure" and "none of these" decisions that differ,
and how far the pixels are from the server's. Prints JSON (and writes it with --out).

    TL_STUDIO_OFFLINE=1 .venv/bin/python bench/live_preprocessing_benchmark.py --home H \
        [--run RUN_ID] [--out bench/results/live_preprocessing.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

CAMERA = (640, 480)


def live_inputs(path: str, size: int) -> dict[str, np.ndarray]:
    """The model inputs of the two live paths for one photo (uint8 [S, S, 3] each)."""
    from PIL import Image
    from video_helpers import browser_squash, frame_of, from_i420, to_i420

    from core.data import images

    upright = images.open_rgb(path, max_pixels=None)
    frame = frame_of(upright, *CAMERA)
    camera = from_i420(to_i420(frame), *CAMERA)
    pillow = upright.resize((size, size), Image.Resampling.BILINEAR)
    return {"full_decode_pillow": np.asarray(pillow, np.uint8),
            "browser_resize": browser_squash(np.asarray(upright), size),
            "camera_frame": browser_squash(camera, size)}


def compare(predictor: Any, server_x: np.ndarray, live_x: np.ndarray, truth: np.ndarray
            ) -> dict[str, Any]:
    """The live path's answers against the server's on the same photos."""
    feats_s, probs_s = predictor.features_and_probabilities(server_x)
    feats_l, probs_l = predictor.features_and_probabilities(live_x)
    top_s, top_l = probs_s.argmax(1), probs_l.argmax(1)
    diff = np.abs(probs_s - probs_l)
    out = {
        "photos": len(truth),
        "top_class_agreement": round(float((top_s == top_l).mean()), 4),
        "top_class_differs": int((top_s != top_l).sum()),
        "max_abs_p_difference": round(float(diff.max()), 4),
        "mean_abs_p_difference": round(float(diff.mean()), 5),
        "accuracy_server": round(float((top_s == truth).mean()), 4),
        "accuracy_live": round(float((top_l == truth).mean()), 4),
        "unsure_differs": int(((probs_s.max(1) < predictor.threshold)
                               != (probs_l.max(1) < predictor.threshold)).sum()),
        "pixels_mean_abs_difference": round(float(np.abs(
            server_x.astype(float) - live_x.astype(float)).mean()), 3),
        "pixels_max_abs_difference": int(np.abs(
            server_x.astype(int) - live_x.astype(int)).max()),
    }
    scored_s, scored_l = (predictor.familiarity_scores(feats_s),
                          predictor.familiarity_scores(feats_l))
    if scored_s is not None and scored_l is not None:
        unknown_s = scored_s[0] < scored_s[1]
        unknown_l = scored_l[0] < scored_l[1]
        out.update({
            "unknown_server": int(unknown_s.sum()), "unknown_live": int(unknown_l.sum()),
            "unknown_differs": int((unknown_s != unknown_l).sum()),
            "familiarity_max_abs_difference": round(float(np.abs(
                scored_s[0] - scored_l[0]).max()), 4),
        })
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--home", type=Path, required=True, help="studio home with the run")
    parser.add_argument("--run", help="run id (default: the newest usable run)")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()

    from core.data import images
    from core.results.prediction import Predictor
    from core.runs.store import RunStore

    load_before = os.getloadavg()
    store = RunStore(args.home)
    run_id = args.run or next(s for s in store.list() if s.usable).run_id
    run = store.load(run_id)
    predictor = Predictor.from_run(run.run_dir)
    test = run.split[run.split["split"] == "test"].reset_index(drop=True)
    size = predictor.input_size
    started = time.perf_counter()
    server_x = np.stack([images.load_resized(p, size) for p in test["path"]])
    live = [live_inputs(p, size) for p in test["path"]]
    truth = test["label_index"].to_numpy()
    result: dict[str, Any] = {
        "command": "bench/live_preprocessing_benchmark.py",
        "run": run_id, "base": run.config.backbone if run.config else None,
        "input_size": size, "classes": list(predictor.labels),
        "unsure_threshold": predictor.threshold,
        "camera": f"{CAMERA[0]} x {CAMERA[1]}, YUV 4:2:0 (BT.601 limited range)",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average_before": [round(v, 2) for v in load_before],
    }
    for name in ("full_decode_pillow", "browser_resize", "camera_frame"):
        result[name] = compare(predictor, server_x,
                               np.stack([x[name] for x in live]), truth)
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
