"""The model files of an export: SavedModel and TensorFlow Lite (float32, float16, int8)."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import AppError


def write_saved_model(model: Any, size: int, target: Path) -> None:
    """A SavedModel with one signature, serving_default: images -> {"probabilities"}.

    A plain tf.Module holding the model: Keras' ExportArchive stored every variable twice
    (MobileNetV2: 19.7 MB against 10.6 MB).
    """
    import tensorflow as tf

    spec = tf.TensorSpec([None, size, size, 3], tf.float32, name="images")

    class Serving(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.model_variables = list(model.variables)

        @tf.function(input_signature=[spec])
        def serve(self, images: Any) -> dict[str, Any]:
            return {"probabilities": self.model(images, training=False)}

    module = Serving()
    tf.saved_model.save(module, str(target), signatures={"serving_default": module.serve})


def write_conversion_source(model: Any, size: int, target: Path) -> None:
    """The SavedModel the TFLite files are converted from, written by Keras' ExportArchive.

    The converter reads its variables as constants; from the plain tf.Module's SavedModel
    it kept them as variables the interpreter never initialised (non-finite outputs).
    """
    import keras
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    archive.track(model)
    spec = tf.TensorSpec([None, size, size, 3], tf.float32, name="images")
    archive.add_endpoint(
        name="serving_default", input_signature=[spec],
        fn=lambda images: {"probabilities": model(images, training=False)},
    )
    archive.write_out(str(target), verbose=False)


def _range_anchor(size: int) -> np.ndarray:
    """A calibration image holding both 0 and 255 in every channel.

    The int8 file's input scale comes from the smallest and largest calibration pixel; with
    both extremes present it is exactly 1 with zero point 0, so raw 0..255 pixels go in as
    they are.
    """
    anchor = np.zeros((size, size, 3), np.uint8)
    anchor[:, size // 2:] = 255
    return anchor


def tflite_bytes(saved_model: Path, size: int, kind: str, calibration: np.ndarray | None
                  ) -> bytes:
    """Converts the SavedModel: the TFLite file keeps its serving_default signature."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    if kind == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif kind == "int8":
        assert calibration is not None
        samples = np.concatenate([_range_anchor(size)[None], calibration])

        def representative() -> Iterable[list[np.ndarray]]:
            for photo in samples:
                yield [photo[None].astype(np.float32)]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.uint8
    data = _without_inner_names(converter.convert())
    if kind == "int8":
        _check_int8_input(data)
    return data


def _without_inner_names(data: bytes) -> bytes:
    """The file without the names of its inner tensors (debug text: 47 KB of MobileNetV2's).

    The input and output tensors keep theirs, and the serving_default signature (images ->
    probabilities) is untouched.
    """
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(data))
    for subgraph in model.subgraphs:
        keep = set(subgraph.inputs) | set(subgraph.outputs)
        for index, tensor in enumerate(subgraph.tensors):
            if index not in keep:
                tensor.name = b""
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _check_int8_input(data: bytes) -> None:
    """The int8 file must take raw uint8 pixels: input scale 1, zero point 0."""
    import tensorflow as tf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's notice about ai_edge_litert
        interpreter = tf.lite.Interpreter(model_content=data)
    detail = interpreter.get_input_details()[0]
    scale, zero = detail["quantization"]
    if detail["dtype"] != np.uint8 or abs(scale - 1.0) > 1e-6 or zero != 0:
        raise AppError(f"the int8 file's input is {np.dtype(detail['dtype']).name} with "
                       f"scale {scale} and zero point {zero}, not raw uint8 pixels")
