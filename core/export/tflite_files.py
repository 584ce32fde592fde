"""TensorFlow Lite files of an export (float32, float16, int8), converted from a SavedModel."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import AppError

log = logging.getLogger(__name__)


def _range_anchor(size: int) -> np.ndarray:
    """A calibration image holding both 0 and 255 in every channel.

    The int8 file's input scale comes from the smallest and largest calibration pixel; with
    both extremes present it is exactly 1 with zero point 0, so raw 0..255 pixels go in as
    they are.
    """
    anchor = np.zeros((size, size, 3), np.uint8)
    anchor[:, size // 2:] = 255
    return anchor


def tflite_bytes(saved_model: Path, size: int, kind: str, calibration: np.ndarray | None,
                 uniform_ratio: float | None = None) -> bytes:
    """Converts the SavedModel: the TFLite file keeps its serving_default signature.

    Args:
        saved_model: Folder written by write_conversion_source.
        size: Input size S.
        kind: "float32", "float16" or "int8" (uint8 in and out, input scale 1).
        calibration: uint8 [N, S, S, 3] training photos, for int8.
        uniform_ratio: int8 only: per_tensor_where_uniform's max_ratio; None for
            UNIFORM_SCALE_RATIO (0: every layer keeps its per-channel scales).
    """
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
        try:
            ratio = UNIFORM_SCALE_RATIO if uniform_ratio is None else uniform_ratio
            data = per_tensor_where_uniform(data, ratio) if ratio > 0 else data
        except Exception:
            log.warning("int8 file kept fully per-channel", exc_info=True)
        _check_int8_input(data)
    return data


def _packed(model: Any) -> bytes:
    """A TFLite model object as file bytes, each distinct quantization vector written once.

    Per-channel quantization stores an int64 zero point (always 0 for weights) and a float32
    scale per output channel of every convolution and bias: 0.41 MB of MobileNetV2's 2.7 MB
    int8 file. Flatbuffers let tables share a vector, so equal vectors (the zero points of
    layers with the same channel count) are written once: 0.24 MB less, the model's numbers
    and outputs unchanged (checked bit for bit with tf.lite and ai_edge_litert).
    """
    import flatbuffers

    class SharingBuilder(flatbuffers.Builder):
        def __init__(self, size: int) -> None:
            super().__init__(size)
            self.written: dict[tuple[str, bytes], int] = {}

        def CreateNumpyVector(self, x: np.ndarray) -> int:
            if x.dtype == np.uint8:  # buffer contents: large, aligned, never shared
                return super().CreateNumpyVector(x)
            key = (x.dtype.str, x.tobytes())
            if key not in self.written:
                self.written[key] = super().CreateNumpyVector(x)
            return self.written[key]

    builder = SharingBuilder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


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
    return _packed(model)


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


_CONVOLUTIONS = (3, 4, 9)  # TFLite builtin codes: CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED
# Off (0): with 4.0 the MobileNetV2 benchmark's int8 file fell from 30.4% to 29.9% of the
# float32 file's size, but its test accuracy from 88.9% to 88.0% (Keras 90.2%), past the
# 2-point limit; see docs/benchmarks.md.
UNIFORM_SCALE_RATIO = 0.0


def per_tensor_where_uniform(data: bytes, max_ratio: float = 4.0) -> bytes:
    """The int8 file with per-tensor weights in layers whose per-channel scales are alike.

    TFLite stores a float32 scale and an int64 zero point for every output channel of a
    per-channel weight and of its int32 bias: 0.41 MB of MobileNetV2's 2.7 MB int8 file. A
    layer whose largest channel scale is at most max_ratio times its smallest is requantized
    to one scale (the largest: each channel loses at most log2(max_ratio) bits), which
    for MobileNetV2 drops 8 layers' parameters (42 KB, 1280 channels of them in its last
    convolution); layers with spread-out scales, where one scale costs accuracy, keep theirs.
    The export's verification measures the result like any other file.
    """
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(data))
    for subgraph in model.subgraphs:
        users: dict[int, int] = {}
        for tensor in subgraph.tensors:
            users[tensor.buffer] = users.get(tensor.buffer, 0) + 1
        for op in subgraph.operators:
            if model.operatorCodes[op.opcodeIndex].builtinCode not in _CONVOLUTIONS:
                continue
            _requantize(model, subgraph, op, users, max_ratio)
    return _packed(model)


def _requantize(model: Any, subgraph: Any, op: Any, users: dict[int, int],
                max_ratio: float) -> None:
    inputs = list(op.inputs)
    if len(inputs) < 2:
        return
    source, weight = subgraph.tensors[inputs[0]], subgraph.tensors[inputs[1]]
    bias = subgraph.tensors[inputs[2]] if len(inputs) > 2 and inputs[2] >= 0 else None
    wq, sq = weight.quantization, source.quantization
    if wq is None or sq is None or wq.scale is None or sq.scale is None:
        return
    scales = np.asarray(wq.scale, np.float64)
    if (len(scales) < 2 or weight.type != 9 or np.any(wq.zeroPoint) or scales.min() <= 0
            or scales.max() / scales.min() > max_ratio or users.get(weight.buffer) != 1):
        return
    if bias is not None and (bias.type != 2 or bias.quantization is None
                             or users.get(bias.buffer) != 1):
        return
    top = scales.max()
    shape = [1] * len(weight.shape)
    shape[int(wq.quantizedDimension)] = len(scales)
    wbuf = model.buffers[weight.buffer]
    q = np.frombuffer(bytes(wbuf.data), np.int8).reshape(list(weight.shape))
    wbuf.data = np.clip(np.rint(q * (scales / top).reshape(shape)), -127, 127).astype(
        np.int8).ravel().view(np.uint8)
    changed = [(wq, top)]
    if bias is not None:
        bbuf = model.buffers[bias.buffer]
        b = np.frombuffer(bytes(bbuf.data), np.int32)
        bbuf.data = np.rint(b * (scales / top)).astype(np.int32).view(np.uint8)
        changed.append((bias.quantization, float(np.asarray(sq.scale)[0]) * top))
    for quant, scale in changed:
        quant.scale = np.asarray([scale], np.float32)
        quant.zeroPoint = np.zeros(1, np.int64)
        quant.quantizedDimension = 0
