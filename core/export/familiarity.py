"""'None of these' in an export: the reference vectors beside the model, and how to score.

No exported model gains an output or a signature (issue 15's contract stays as it is): the
score needs the pooled feature vector the head reads, which the exported files already
compute on the way to the probabilities. model.keras gives it as the input of its last
layer (the nested head); a TFLite file keeps it as an intermediate tensor, found here by
value and named in metadata.json, that a runtime reads when the interpreter preserves its
intermediate tensors. The SavedModel's serving signature gives out only probabilities, so
it cannot say "none of these". The browser's file (core.export.browser, the studio's own
format for its live camera) gives the vector as a second output, "similarity_features", after
"probabilities". The reference vectors go in REFERENCE_FILE (raw float16,
little-endian, row-major), and metadata.json's "familiarity" block says, step by step, how
to turn a feature vector into the answer (HOW_TO_SCORE).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core import files
from core.export import browser

log = logging.getLogger(__name__)

REFERENCE_FILE = "familiarity_reference.f16"
# A TFLite tensor is the feature vector when it matches the Keras model's within this share
# of the vectors' scale (int8 files quantize it, so their match is coarser).
_MATCH = {"float": 1e-3, "int8": 0.08}
HOW_TO_SCORE = [
    "f = the pooled feature vector the head reads (see 'features' for where each file "
    "gives it); f = f / |f| (L2 norm)",
    "R = the reference: read 'reference.file' as little-endian float16, shape "
    "'reference.shape' (rows already L2-normalised); convert to float32",
    "s = R . f (cosine similarity to every reference row)",
    "score = the k-th largest value of s (k = 'k'); nearest = reference.labels[argmax(s)], "
    "a class index in labels.txt order",
    "unknown = score < class_thresholds[nearest]: answer 'None of these: it looks like none "
    "of the N classes this model knows', and name labels[top probability] as the closest "
    "class",
]


def _interpreter(path: Path) -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        interpreter = Interpreter(model_path=str(path), experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    return interpreter


def tensor_value(interpreter: Any, detail: dict[str, Any]) -> np.ndarray:
    """A tensor's value as float32, dequantized when the file quantizes it."""
    value = interpreter.get_tensor(detail["index"]).astype(np.float32)
    scale, zero = detail.get("quantization", (0.0, 0))
    if detail["dtype"] != np.float32 and scale:
        value = (value - zero) * scale
    return value


def feature_tensor(path: Path, photo: np.ndarray, want: np.ndarray) -> dict[str, Any] | None:
    """The TFLite tensor that holds the pooled features of photo, or None when none matches.

    Args:
        path: The .tflite file.
        photo: uint8 [S, S, 3].
        want: The Keras model's feature vector of that photo [D].
    """
    interpreter = _interpreter(path)
    inp = interpreter.get_input_details()[0]
    interpreter.set_tensor(inp["index"], photo[None].astype(inp["dtype"]))
    interpreter.invoke()
    scale = float(np.abs(want).max()) or 1.0
    best: tuple[float, dict[str, Any]] | None = None
    for detail in interpreter.get_tensor_details():
        if tuple(int(n) for n in detail["shape"]) != (1, len(want)):
            continue
        try:
            got = tensor_value(interpreter, detail)[0]
        except ValueError:  # a tensor the runtime did not keep
            continue
        error = float(np.abs(got - want).max()) / scale
        if best is None or error < best[0]:
            best = (error, detail)
    limit = _MATCH["int8" if inp["dtype"] != np.float32 else "float"]
    if best is None or best[0] > limit:
        return None
    error, detail = best
    return {"tensor_name": detail["name"], "tensor_index": int(detail["index"]),
            "max_difference_share": round(error, 6),
            "how": "Interpreter(model_path=..., experimental_preserve_all_tensors=True); after "
                   "invoke(), get_tensor(tensor_index) (dequantize with the tensor's "
                   "quantization when it is not float32); the converter may leave its name "
                   "empty, so find it by index"}


def metadata_block(run: Any, predictor: Any, folder: Path, tflite_files: Sequence[str],
                   photo: np.ndarray) -> dict[str, Any] | None:
    """Writes REFERENCE_FILE into the export folder; returns metadata.json's block.

    Args:
        run: The run exported.
        predictor: Its Predictor (core.results.prediction), familiarity loaded.
        folder: The export folder being assembled.
        tflite_files: Names of the TFLite files written in it.
        photo: One test photo, uint8 [S, S, 3], to find the feature tensor by value.

    Returns:
        The block, or None when the run has no familiarity (why is logged).
    """
    fam = predictor.familiarity
    if fam is None:
        log.info("Run %s exported without 'none of these': %s", run.run_id,
                 predictor.familiarity_problem)
        return None
    files.write_bytes_atomic(folder / REFERENCE_FILE,
                             np.ascontiguousarray(fam.reference, "<f2").tobytes())
    feats, _ = predictor.features_and_probabilities(photo[None])
    features: dict[str, Any] = {
        "model.keras": {"how": "the input of the model's last layer (the nested head model): "
                               "run the layers before it on the photo"},
        "saved_model": None,  # its signature gives out probabilities only
    }
    for name in tflite_files:
        try:
            features[name] = feature_tensor(folder / name, photo, feats[0])
        except Exception as exc:  # an unreadable file: that file cannot say it
            log.warning("No feature tensor found in %s: %s", name, exc)
            features[name] = None
        if name == browser.FILE and features[name] is not None:
            # The browser's file gives them as its second output (the live camera reads it).
            features[name]["output_name"] = browser.FEATURES_OUTPUT
    return {
        "method": "cosine k-nearest-neighbour similarity to reference training photos, one "
                  "threshold per class (Sun et al., ICML 2022)",
        "k": fam.k, "class_thresholds": [float(t) for t in fam.class_thresholds],
        "quantile": fam.quantile,
        "reference": {"file": REFERENCE_FILE, "dtype": "float16", "byte_order": "little",
                      "shape": [int(n) for n in fam.reference.shape],
                      "labels": [int(c) for c in fam.reference_labels]},
        "features": features,
        "how_to_score": HOW_TO_SCORE,
        "test": fam.test,
    }
