"""What Streamlit's post-script garbage collection costs a training job; prints JSON.

Streamlit runs gc.collect(2) after every script run unless runner.postScriptGC is false, and
the Train page's live panel reruns every second in every open browser. Jobs run in threads of
the server process, so each collection holds the GIL the training thread needs.

In one process with TensorFlow, Keras and a MobileNetV2 loaded (as the server has), times:
- "full_collection_seconds": one gc.collect(2) (median);
- "training_seconds": the same small Keras training (a head on fixed features), alone, then
  while N watcher threads each rerun-and-collect once a second ("with_post_script_gc"), then
  while they rerun without collecting ("without_post_script_gc").
A watcher's "rerun" is a little Python work (building a pandas table), standing in for the panel.

Usage: .venv/bin/python bench/live_panel_gc.py [--watchers 5] [--epochs 30]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import threading
import time


def _train(epochs: int) -> float:
    import keras
    import numpy as np

    rng = np.random.default_rng(0)
    features = rng.normal(size=(512, 1280)).astype("float32")
    labels = rng.integers(0, 5, size=512)
    head = keras.Sequential([keras.Input((1280,)), keras.layers.Dropout(0.2),
                             keras.layers.Dense(5, activation="softmax")])
    head.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    start = time.perf_counter()
    head.fit(features, labels, batch_size=16, epochs=epochs, verbose=0)
    return time.perf_counter() - start


def _watch(stop: threading.Event, collect: bool) -> None:
    import pandas as pd

    while not stop.wait(1.0):
        pd.DataFrame({"job": ["a", "b"], "state": ["running", "queued"]}).to_dict()
        if collect:
            gc.collect(2)


def _train_while_watched(watchers: int, collect: bool, epochs: int) -> float:
    stop = threading.Event()
    threads = [threading.Thread(target=_watch, args=(stop, collect), daemon=True)
               for _ in range(watchers)]
    for thread in threads:
        thread.start()
    try:
        return _train(epochs)
    finally:
        stop.set()
        for thread in threads:
            thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--watchers", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()

    import keras
    import streamlit  # noqa: F401  (the server has it loaded too)

    base = keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3))
    collections = []
    for _ in range(5):
        start = time.perf_counter()
        gc.collect(2)
        collections.append(time.perf_counter() - start)
    _train(1)  # warm-up: tracing and first-call costs
    alone = _train(args.epochs)
    with_gc = _train_while_watched(args.watchers, True, args.epochs)
    without_gc = _train_while_watched(args.watchers, False, args.epochs)
    print(json.dumps({
        "python_objects": len(gc.get_objects()),
        "base_layers": len(base.layers),
        "full_collection_seconds": round(statistics.median(collections), 3),
        "watchers": args.watchers,
        "epochs": args.epochs,
        "training_seconds": {
            "alone": round(alone, 2),
            "with_post_script_gc": round(with_gc, 2),
            "without_post_script_gc": round(without_gc, 2),
        },
        "slowdown_with_post_script_gc": round(with_gc / alone, 2),
        "slowdown_without_post_script_gc": round(without_gc / alone, 2),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "cpu_count": os.cpu_count(),
    }, indent=2))


if __name__ == "__main__":
    main()
