"""TensorFlow Lite: converting a Keras model to a .tflite file, and opening interpreters."""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from core import files

log = logging.getLogger(__name__)

# More interpreters than this share the cores without running any faster.
MAX_INTERPRETERS = 4


def convert(model: keras.Model, path: str | Path) -> Path:
    """Converts a Keras model to a float32 TFLite file, written atomically.

    The traced graph is converted directly (the converter's default first writes a
    SavedModel, which took most of the time); when that fails, Keras' own
    `model.export(format="litert")` is tried. Readers of `path` see either no file, the old
    file or the complete new one.

    Args:
        model: A Keras model with one float32 input; the batch dimension stays dynamic.
        path: The .tflite file to write; its folder is created.

    Returns:
        The path written.

    Raises:
        Exception: Whatever the converter raises when neither way works.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    signature = tf.TensorSpec([None, *model.input_shape[1:]], tf.float32)
    try:
        function = tf.function(lambda x: model(x, training=False)).get_concrete_function(
            signature)
        converter = tf.lite.TFLiteConverter.from_concrete_functions([function], model)
        converter.experimental_lower_to_saved_model = False
        data = converter.convert()
    except Exception as exc:
        log.info("Direct TFLite conversion failed (%s: %s); trying model.export",
                 type(exc).__name__, exc)
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".tflite-") as tmp:
            exported = Path(tmp) / "model.tflite"
            model.export(str(exported), format="litert", verbose=False,
                         input_signature=[signature])
            data = exported.read_bytes()
    files.write_bytes_atomic(target, data)
    return target


def open_interpreter(path: str | Path, num_threads: int = 1, *,
                     litert: bool = False) -> Any:
    """An interpreter for the file, tensors allocated (XNNPACK on CPU for float).

    Args:
        path: The .tflite file.
        num_threads: Threads of the one interpreter.
        litert: Prefer ai_edge_litert's Interpreter (the runtime phones ship) when it is
            installed; tf.lite.Interpreter otherwise.
    """
    interpreter_class = tf.lite.Interpreter
    if litert:
        try:
            from ai_edge_litert.interpreter import Interpreter as interpreter_class
        except ImportError:
            pass
    with warnings.catch_warnings():
        # tf.lite.Interpreter warns it will move to ai_edge_litert; it works in TF 2.21.
        warnings.simplefilter("ignore")
        interpreter = interpreter_class(model_path=str(path), num_threads=max(1, num_threads))
    interpreter.allocate_tensors()
    return interpreter


def open_interpreters(path: str | Path) -> list[Any]:
    """Interpreters for parallel use: one per core up to MAX_INTERPRETERS, sharing the cores.

    An interpreter is not thread-safe: each serves one thread at a time. Small models scale
    poorly across threads within one image, so several single-threaded interpreters, each
    running part of a batch, beat one interpreter with several threads (figures in
    docs/benchmarks.md).
    """
    cores = os.cpu_count() or 1
    count = min(cores, MAX_INTERPRETERS)
    return [open_interpreter(path, num_threads=cores // count) for _ in range(count)]


def run(interpreter: Any, batch: np.ndarray) -> np.ndarray:
    """Runs an interpreter on a batch, one row per invoke, as float32 outputs.

    The input is taken as it is for a float model; for an integer (quantised) input it is
    quantised with the input's scale and zero point, and an integer output is dequantised.

    Args:
        interpreter: From open_interpreter.
        batch: [B, ...] rows shaped as the model's input without its batch dimension.

    Returns:
        float32 [B, ...] outputs.
    """
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    rows = []
    for row in np.asarray(batch):
        x = row[None]
        if np.issubdtype(inp["dtype"], np.integer):
            scale, zero = inp["quantization"]
            x = np.round(x / (scale or 1.0) + zero)
            info = np.iinfo(inp["dtype"])
            x = np.clip(x, info.min, info.max)
        interpreter.set_tensor(inp["index"], x.astype(inp["dtype"]))
        interpreter.invoke()
        y = interpreter.get_tensor(out["index"])[0]
        if np.issubdtype(out["dtype"], np.integer):
            scale, zero = out["quantization"]
            y = (y.astype(np.float32) - zero) * (scale or 1.0)
        rows.append(np.asarray(y, np.float32))
    return np.stack(rows) if rows else np.zeros((0,), np.float32)
