"""core.features.tflite: a Keras model converted atomically to a .tflite file, run by interpreters."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from core.features import tflite


@pytest.fixture(scope="module")
def small_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    outputs = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, outputs)


def test_converted_model_computes_what_keras_computes(small_model, tmp_path: Path) -> None:
    path = tflite.convert(small_model, tmp_path / "sub" / "m.tflite")
    assert path == tmp_path / "sub" / "m.tflite" and path.stat().st_size > 0
    assert [p.name for p in path.parent.iterdir()] == ["m.tflite"]  # no temporary files left
    x = np.random.default_rng(0).uniform(0, 255, (5, 8, 8, 3)).astype(np.float32)
    want = np.asarray(small_model(x))
    interpreters = tflite.open_interpreters(path)
    assert 1 <= len(interpreters) <= tflite.MAX_INTERPRETERS
    for interpreter in interpreters:
        got = tflite.run(interpreter, x)
        assert got.dtype == np.float32 and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_failed_conversion_leaves_the_old_file(small_model, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "m.tflite"
    path.write_bytes(b"old")

    def broken(*_a, **_k):
        raise RuntimeError("no conversion")

    monkeypatch.setattr(tf.lite.TFLiteConverter, "from_concrete_functions", broken)
    monkeypatch.setattr(keras.Model, "export", broken)
    with pytest.raises(RuntimeError, match="no conversion"):
        tflite.convert(small_model, path)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["m.tflite"]


def test_quantised_input_and_output_are_converted(tmp_path: Path) -> None:
    """An int8 model (as a full-integer export writes it) is fed and read in float."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    calibration = np.random.default_rng(0).uniform(-1, 1, (200, 1, 4)).astype(np.float32)
    converter.representative_dataset = lambda: ([row] for row in calibration)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    path = tmp_path / "int8.tflite"
    path.write_bytes(converter.convert())
    interpreter = tflite.open_interpreter(path)
    x = np.random.default_rng(1).uniform(-0.5, 0.5, (6, 4)).astype(np.float32)
    got = tflite.run(interpreter, x)
    assert got.dtype == np.float32
    want = np.asarray(model(x))
    # int8 steps: a few quantisation steps of the output range at most.
    out_scale = interpreter.get_output_details()[0]["quantization"][0]
    assert out_scale > 0
    np.testing.assert_allclose(got, want, atol=4 * out_scale + 0.02)
    assert float(np.abs(want).max()) > 10 * out_scale  # a real comparison, not of zeros
