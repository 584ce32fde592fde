"""Standalone checker of one exported format, run in a clean process (`python -I`).

It imports nothing of the studio (only numpy, TensorFlow/Keras and ai_edge_litert), so it
loads a file the way a user's own code would. core.export.verify runs it as a script with the
project not importable, feeds it the test photos as a uint8 .npy, and reads back the class
probabilities it saved and the JSON it printed: per-photo latency, the runtime used and
whether the studio's `core` package was importable (it must not be).

Usage: python -I client.py LOADER MODEL_PATH IMAGES_NPY OUT_NPY
       python -I client.py --available LOADER
LOADER: a key of LOADERS ("keras", "saved_model", "tf.lite", "ai_edge_litert").
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice and the like


def _keras_runner(path: str) -> Callable[[np.ndarray], np.ndarray]:
    import keras

    model = keras.saving.load_model(path, compile=False, safe_mode=True)
    return lambda batch: np.asarray(model(batch.astype(np.float32), training=False))


def _saved_model_runner(path: str) -> Callable[[np.ndarray], np.ndarray]:
    import tensorflow as tf

    serve = tf.saved_model.load(path).signatures["serving_default"]
    return lambda batch: serve(images=tf.constant(batch, tf.float32))["probabilities"].numpy()


def _interpreter(path: str, runtime: str) -> Any:
    if runtime == "ai_edge_litert":
        from ai_edge_litert.interpreter import Interpreter
    else:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    return Interpreter(model_path=path)


def _tflite_runner(path: str, runtime: str) -> Callable[[np.ndarray], np.ndarray]:
    interpreter = _interpreter(path, runtime)
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    in_scale, in_zero = inp["quantization"]
    out_scale, out_zero = out["quantization"]

    def run(batch: np.ndarray) -> np.ndarray:
        if inp["dtype"] == np.float32:
            x = batch.astype(np.float32)
        elif in_scale:
            info = np.iinfo(inp["dtype"])
            x = np.clip(np.round(batch / in_scale + in_zero), info.min, info.max)
            x = x.astype(inp["dtype"])
        else:
            x = batch.astype(inp["dtype"])
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        y = interpreter.get_tensor(out["index"])
        if out["dtype"] != np.float32 and out_scale:
            y = (y.astype(np.float32) - out_zero) * out_scale
        return np.asarray(y, np.float32)

    return run


# Loader name -> (module it needs, runner factory). An ExportFormat's `loaders` name these.
LOADERS: dict[str, tuple[str, Callable[[str], Callable[[np.ndarray], np.ndarray]]]] = {
    "keras": ("keras", _keras_runner),
    "saved_model": ("tensorflow", _saved_model_runner),
    "tf.lite": ("tensorflow", lambda path: _tflite_runner(path, "tf.lite")),
    "ai_edge_litert": ("ai_edge_litert.interpreter",
                       lambda path: _tflite_runner(path, "ai_edge_litert")),
}


def main(argv: list[str]) -> int:
    """Loads the format, predicts every photo one at a time, prints the JSON facts."""
    if argv[:1] == ["--available"]:  # exit 0 when the loader's runtime can be imported
        importlib.import_module(LOADERS[argv[1]][0])
        return 0
    loader, model_path, images_path, out_path = argv[:4]
    facts: dict[str, Any] = {
        "loader": loader,
        "project_importable": importlib.util.find_spec("core") is not None,
    }
    started = time.perf_counter()
    run = LOADERS[loader][1](model_path)
    facts["load_seconds"] = time.perf_counter() - started
    photos = np.load(images_path)
    run(photos[:1])  # warm-up: the first call traces, allocates, picks kernels
    probabilities, seconds = [], []
    for i in range(len(photos)):
        tic = time.perf_counter()
        probabilities.append(run(photos[i:i + 1])[0])
        seconds.append(time.perf_counter() - tic)
    np.save(out_path, np.stack(probabilities).astype(np.float32))
    facts["latency_ms"] = [s * 1000.0 for s in seconds]
    print(json.dumps(facts))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
