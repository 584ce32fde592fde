"""The model file a browser runs (LiteRT.js): float32 TFLite with a fixed batch of one photo.

LiteRT.js runs a .tflite file as it is, but it cannot resize an input, and the export's other
TFLite files take any batch size ([-1, S, S, 3]), which it refuses. This file is the same
conversion as tflite_float32 (same converter, same raw RGB 0..255 input, preprocessing inside)
with the batch fixed at 1. float32 rather than float16: the browser's probabilities then equal
the server's to 1e-6 (float16: 1.5e-3, which flips "not sure" near the threshold), and it
is downloaded once (docs/benchmarks.md, "Live camera").

"None of these" in the browser: the file has a second output, FEATURES_OUTPUT, the pooled
feature vector the head reads (the studio's own browser format, so no other format's outputs
change); its first output stays "probabilities", so every reader of output 0 is unchanged.
The run's reference vectors go beside it as REFERENCE_FILE (raw little-endian float16, as in
an export), and the page scores the features as core.training.familiarity does. A file made
before the extra output is made again the first time it is asked for.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

from core import files

log = logging.getLogger(__name__)

FILE = "model_browser.tflite"
CACHE_FOLDER = "browser"  # inside a run folder: the file made on demand for the live camera
PROBABILITIES_OUTPUT = "probabilities"
# Signature outputs are ordered by name: this one sorts after "probabilities", which stays
# output 0 (the one other readers of TFLite files take).
FEATURES_OUTPUT = "similarity_features"
REFERENCE_FILE = "familiarity_reference.f16"  # beside FILE: the run's reference vectors


def write_conversion_source(model: Any, size: int, target: Path) -> None:
    """A SavedModel of the model for one photo: images [1, S, S, 3] -> {"probabilities",
    FEATURES_OUTPUT} (the pooled features the head reads; probabilities only for a model not
    laid out as base and head)."""
    import keras
    import tensorflow as tf

    from core.results.prediction import split_model

    parts = split_model(model)

    def both(images: Any) -> dict[str, Any]:
        before, head = parts
        x = images
        for layer in before:
            x = layer(x, training=False)
        return {PROBABILITIES_OUTPUT: head(x, training=False), FEATURES_OUTPUT: x}

    archive = keras.export.ExportArchive()
    archive.track(model)
    spec = tf.TensorSpec([1, size, size, 3], tf.float32, name="images")
    archive.add_endpoint(
        name="serving_default", input_signature=[spec],
        fn=both if parts is not None
        else (lambda images: {PROBABILITIES_OUTPUT: model(images, training=False)}),
    )
    archive.write_out(str(target), verbose=False)


def _interpreter(path: Path | None = None, content: bytes | None = None) -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Interpreter(model_path=None if path is None else str(path),
                           model_content=content)


def _probabilities_first(data: bytes) -> bytes:
    """The file with "probabilities" as its first output (the converter orders the outputs
    as it likes; readers of TFLite files take output 0)."""
    from tensorflow.lite.tools import flatbuffer_utils

    from core.export.tflite_files import _packed

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(data))
    for signature in model.signatureDefs or []:
        named = {(m.name.decode() if isinstance(m.name, bytes) else m.name): m
                 for m in signature.outputs}
        first = named.get(PROBABILITIES_OUTPUT)
        if first is None:
            continue
        signature.outputs = [first] + [m for m in signature.outputs if m is not first]
        subgraph = model.subgraphs[signature.subgraphIndex]
        outputs = [int(i) for i in subgraph.outputs]
        if first.tensorIndex in outputs:
            outputs.remove(first.tensorIndex)
            subgraph.outputs = [first.tensorIndex] + outputs
    return _packed(model)


def output_names(path: Path | None = None, content: bytes | None = None) -> list[str]:
    """The file's outputs in their order (its serving_default signature's names)."""
    interpreter = _interpreter(path, content)
    by_index = interpreter._get_full_signature_list().get("serving_default", {}).get(
        "outputs", {})
    order = [d["index"] for d in interpreter.get_output_details()]
    names = {index: name for name, index in by_index.items()}
    return [names.get(index, "") for index in order]


def has_features(path: Path) -> bool:
    """Whether a browser model file gives the pooled features ("none of these" needs them)."""
    try:
        return FEATURES_OUTPUT in output_names(path)
    except Exception:  # unreadable: it is made again
        return False


def write(model: Any, size: int, target: Path) -> None:
    """Writes the browser's .tflite file for a loaded Keras model (atomically)."""
    from core.export.tflite_files import tflite_bytes

    with tempfile.TemporaryDirectory(prefix="tl-browser-") as scratch:
        source = Path(scratch) / "saved_model"
        write_conversion_source(model, size, source)
        data = _probabilities_first(tflite_bytes(source, size, "float32", None))
    names = output_names(content=data)
    if names[:1] != [PROBABILITIES_OUTPUT]:  # readers of output 0 expect the probabilities
        raise RuntimeError(f"the browser model's outputs came out as {names}")
    files.write_bytes_atomic(target, data)


def _fresh(path: Path, model_path: Path) -> bool:
    try:
        return path.stat().st_size > 0 and path.stat().st_mtime_ns >= model_path.stat().st_mtime_ns
    except OSError:
        return False


def model_file(run: Any, exported: Path | None = None) -> Path:
    """The browser model of a usable run, in <run folder>/browser/model_browser.tflite.

    The verified export's file is copied there when it is at least as new as the run's
    model; else the file is made from the run's model the first time it is asked for (a few
    seconds for MobileNetV2) and made again when the model file is newer. A file without
    the features output (made before "none of these" reached the browser) is made again. The
    folder holds nothing else but REFERENCE_FILE, so it can be served as it is.

    Args:
        run: A loaded usable core.runs.store.Run.
        exported: The run's export folder (it may not exist).
    """
    model_path = Path(run.model_path)
    cached = Path(run.run_dir) / CACHE_FOLDER / FILE
    source = exported / FILE if exported is not None else None
    if source is not None and _fresh(source, model_path) and has_features(source):
        if not _fresh(cached, source):
            cached.parent.mkdir(exist_ok=True)
            files.write_bytes_atomic(cached, source.read_bytes())
        return cached
    if _fresh(cached, model_path) and has_features(cached):
        return cached
    import keras

    import core.features.backbones  # noqa: F401  registers the custom layers saved in models

    log.info("Writing the browser model of run %s", run.run_id)
    model = keras.saving.load_model(model_path, compile=False)
    cached.parent.mkdir(exist_ok=True)
    write(model, int(run.input_size), cached)
    return cached


def reference_file(run_dir: Path, familiarity: Any) -> Path:
    """The run's reference vectors beside its browser model (REFERENCE_FILE: raw float16,
    little-endian, rows L2-normalised), written when absent or different.

    Args:
        run_dir: The run's folder.
        familiarity: Its core.training.familiarity.Familiarity.
    """
    import numpy as np

    path = Path(run_dir) / CACHE_FOLDER / REFERENCE_FILE
    data = np.ascontiguousarray(familiarity.reference, "<f2").tobytes()
    try:
        same = path.stat().st_size == len(data) and path.read_bytes() == data
    except OSError:
        same = False
    if not same:
        path.parent.mkdir(exist_ok=True)
        files.write_bytes_atomic(path, data)
    return path


def page_familiarity(familiarity: Any, labels: list[str]) -> dict[str, Any]:
    """What the live page needs besides REFERENCE_FILE to answer "none of these" as
    core.results.prediction.Predictor does: k, the per-class thresholds, the class of each
    reference row, and the server's words for each closest class."""
    from core.results import familiarity as words

    rows, dim = (int(n) for n in familiarity.reference.shape)
    return {"k": int(familiarity.k),
            "class_thresholds": [float(t) for t in familiarity.class_thresholds],
            "reference_labels": [int(c) for c in familiarity.reference_labels],
            "shape": [rows, dim], "bytes": rows * dim * 2,
            "heading": words.NONE_OF_THESE,
            "words": [words.none_of_these(len(labels), label) for label in labels]}


def remove_cache(run_dir: Path) -> None:
    """Deletes the on-demand browser model of a run (it is made again when asked for)."""
    shutil.rmtree(Path(run_dir) / CACHE_FOLDER, ignore_errors=True)
