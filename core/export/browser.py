"""The model file a browser runs (LiteRT.js): float32 TFLite with a fixed batch of one photo.

LiteRT.js runs a .tflite file as it is, but it cannot resize an input, and the export's other
TFLite files take any batch size ([-1, S, S, 3]), which it refuses. This file is the same
conversion as tflite_float32 (same converter, same raw RGB 0..255 input, preprocessing inside)
with the batch fixed at 1. float32 rather than float16: the browser's probabilities then equal
the server's to 1e-6 (float16: 1.5e-3, which flips "not sure" near the threshold), and it
is downloaded once (docs/benchmarks.md, "Live camera").
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from core import files

log = logging.getLogger(__name__)

FILE = "model_browser.tflite"
CACHE_FOLDER = "browser"  # inside a run folder: the file made on demand for the live camera


def write_conversion_source(model: Any, size: int, target: Path) -> None:
    """A SavedModel of the model for one photo: images [1, S, S, 3] -> {"probabilities"}."""
    import keras
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    archive.track(model)
    spec = tf.TensorSpec([1, size, size, 3], tf.float32, name="images")
    archive.add_endpoint(
        name="serving_default", input_signature=[spec],
        fn=lambda images: {"probabilities": model(images, training=False)},
    )
    archive.write_out(str(target), verbose=False)


def write(model: Any, size: int, target: Path) -> None:
    """Writes the browser's .tflite file for a loaded Keras model (atomically)."""
    from core.export.tflite_files import tflite_bytes

    with tempfile.TemporaryDirectory(prefix="tl-browser-") as scratch:
        source = Path(scratch) / "saved_model"
        write_conversion_source(model, size, source)
        files.write_bytes_atomic(target, tflite_bytes(source, size, "float32", None))


def digest(path: Path) -> str:
    """The file's sha256 (hex): names the file in its address, so a new model is a new URL."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fresh(path: Path, model_path: Path) -> bool:
    try:
        return path.stat().st_size > 0 and path.stat().st_mtime_ns >= model_path.stat().st_mtime_ns
    except OSError:
        return False


def model_file(run: Any, exported: Path | None = None) -> Path:
    """The browser model of a usable run, in <run folder>/browser/model_browser.tflite.

    The verified export's file is copied there when it is at least as new as the run's
    model; else the file is made from the run's model the first time it is asked for (a few
    seconds for MobileNetV2) and made again when the model file is newer. The folder holds
    nothing else, so it can be served as it is.

    Args:
        run: A loaded usable core.runs.store.Run.
        exported: The run's export folder (it may not exist).
    """
    model_path = Path(run.model_path)
    cached = Path(run.run_dir) / CACHE_FOLDER / FILE
    source = exported / FILE if exported is not None else None
    if source is not None and _fresh(source, model_path):
        if not _fresh(cached, source):
            cached.parent.mkdir(exist_ok=True)
            files.write_bytes_atomic(cached, source.read_bytes())
        return cached
    if _fresh(cached, model_path):
        return cached
    import keras

    import core.features.backbones  # noqa: F401  registers the custom layers saved in models

    log.info("Writing the browser model of run %s", run.run_id)
    model = keras.saving.load_model(model_path, compile=False)
    cached.parent.mkdir(exist_ok=True)
    write(model, int(run.input_size), cached)
    return cached


def remove_cache(run_dir: Path) -> None:
    """Deletes the on-demand browser model of a run (it is made again when asked for)."""
    shutil.rmtree(Path(run_dir) / CACHE_FOLDER, ignore_errors=True)
