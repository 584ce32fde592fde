"""Device detection, strategy choice, mixed precision, batch size; MirroredStrategy on split CPU."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import pytest
import tensorflow as tf
from conftest import REPO_ROOT, write_informative_weights

from core import device
from core.device import DeviceInfo, GpuInfo
from core.features import backbones


class FakeGpu:
    def __init__(self, index: int) -> None:
        self.name = f"/physical_device:GPU:{index}"
        self.device_type = "GPU"


def _fake_gpus(monkeypatch: pytest.MonkeyPatch, n: int, memory: list[int]) -> None:
    monkeypatch.setattr(tf.config, "list_physical_devices",
                        lambda kind=None: [FakeGpu(i) for i in range(n)] if kind == "GPU" else [])
    monkeypatch.setattr(tf.config.experimental, "get_device_details",
                        lambda d: {"device_name": f"Fake A{d.name[-1]}",
                                   "compute_capability": (8, 6)})
    monkeypatch.setattr(tf.config.experimental, "get_memory_info",
                        lambda name: {"current": 512 * 2**20, "peak": 0})
    monkeypatch.setattr(device, "_nvidia_smi_memory", lambda: memory)


def test_cpu_only_machine_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [])
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(tf.test, "is_built_with_cuda", lambda: True)
    info = device.detect()
    assert info.kind == "cpu" and info.gpus == ()
    assert "found no GPU" in info.reason and "tensorflow[and-cuda]" in info.reason
    assert info.tensorflow_version == tf.__version__ and info.keras_version == keras.__version__
    assert "CPU only" in info.summary() and tf.__version__ in info.summary()
    json.dumps(info.to_dict())

    monkeypatch.setattr(tf.test, "is_built_with_cuda", lambda: False)
    assert "no GPU support" in device.detect().reason
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert "CUDA_VISIBLE_DEVICES" in device.detect().reason


def test_this_machine_is_detected_consistently() -> None:
    info = device.detect()
    assert info.kind == ("gpu" if tf.config.list_physical_devices("GPU") else "cpu")
    assert info.summary()


def test_gpus_are_listed_with_name_and_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_gpus(monkeypatch, 2, [24_576, 16_384])
    info = device.detect()
    assert info.kind == "gpu" and info.reason == ""
    assert [g.name for g in info.gpus] == ["Fake A0", "Fake A1"]
    assert [g.memory_mb for g in info.gpus] == [24_576, 16_384]
    assert info.gpus[0].memory_used_mb == 512
    assert info.gpus[0].compute_capability == (8, 6)
    assert "Fake A0 (24 GB)" in info.summary()
    assert json.loads(json.dumps(info.to_dict()))["gpus"][1]["compute_capability"] == [8, 6]


def test_gpu_details_missing_still_detects(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_gpus(monkeypatch, 1, [])

    def unsupported(_d):
        raise ValueError("not supported")

    monkeypatch.setattr(tf.config.experimental, "get_device_details", unsupported)
    info = device.detect()
    assert info.gpus[0].name == "/physical_device:GPU:0" and info.gpus[0].memory_mb is None


def _info(n_gpus: int, memory: int | None = 16_384) -> DeviceInfo:
    if n_gpus == 0:
        return DeviceInfo(kind="cpu", reason="test")
    return DeviceInfo(kind="gpu", gpus=tuple(
        GpuInfo(device=f"/physical_device:GPU:{i}", name="G", memory_mb=memory)
        for i in range(n_gpus)))


def test_strategy_follows_the_gpu_count(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[tuple[str, object]] = []
    monkeypatch.setattr(tf.distribute, "MirroredStrategy",
                        lambda devices=None: made.append(("mirrored", devices)) or "M")
    monkeypatch.setattr(tf.distribute, "OneDeviceStrategy",
                        lambda dev: made.append(("one", dev)) or "O")
    assert device.distribution_strategy(_info(3)) == "M"
    assert device.distribution_strategy(_info(1)) == "O"
    assert device.distribution_strategy(_info(2), devices=["/cpu:0", "/cpu:1"]) == "M"
    assert made == [("mirrored", None), ("one", "/gpu:0"), ("mirrored", ["/cpu:0", "/cpu:1"])]
    monkeypatch.undo()
    assert device.distribution_strategy(_info(0)) is tf.distribute.get_strategy()


def test_mixed_precision_on_gpu_only() -> None:
    assert device.use_mixed_precision(_info(1)) is True
    assert device.use_mixed_precision(_info(0)) is False
    assert device.precision_policy(_info(2)) == "mixed_float16"
    assert device.precision_policy(_info(0)) == "float32"


def test_batch_size_grows_with_memory_and_shrinks_with_input() -> None:
    assert device.suggest_batch_size(_info(0)) == 32
    assert device.suggest_batch_size(_info(1, memory=None)) == 32
    small = device.suggest_batch_size(_info(1, memory=4_096))
    big = device.suggest_batch_size(_info(1, memory=40_960))
    assert 8 <= small < big <= 256
    assert device.suggest_batch_size(_info(1, memory=8_192), input_size=299) < \
        device.suggest_batch_size(_info(1, memory=8_192), input_size=224)
    assert device.suggest_batch_size(_info(1, memory=8_192), training=False) >= \
        device.suggest_batch_size(_info(1, memory=8_192))
    for b in (small, big):
        assert b & (b - 1) == 0  # a power of two


MIRRORED_SCRIPT = textwrap.dedent("""
    import dataclasses, json, sys
    import numpy as np
    import tensorflow as tf
    # Must happen before TensorFlow initialises its devices.
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
    import keras
    from core import device
    from core.features import backbones
    from core.features import weights as base_weights
    from core.features import extraction as features

    strategy = device.distribution_strategy(devices=["/cpu:0", "/cpu:1"])
    spec = dataclasses.replace(backbones.get_spec("mobilenet_v2"), input_size=32)
    resolved = base_weights.resolve_weights(spec, sys.argv[2])
    x = np.random.default_rng(0).uniform(0, 255, (5, 32, 32, 3)).astype("float32")
    dist = features.make_extractor(spec, resolved, home=sys.argv[1], strategy=strategy)
    plain = features.make_extractor(spec, resolved, home=sys.argv[1], prefer_tflite=False)
    a, b = dist.extract_batch(x), plain.extract_batch(x)

    # A training step under the strategy: gradients are all-reduced over both replicas.
    with strategy.scope():
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
        model.compile("adam", "sparse_categorical_crossentropy")
    from core.training.fine_tuning import WeightAveraging

    class Record(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.seen = []

        def on_epoch_end(self, epoch, logs=None):
            self.seen.append([np.array(w) for w in self.model.trainable_weights])

    record = Record()
    rng = np.random.default_rng(1)
    history = model.fit(rng.normal(size=(32, 4)), rng.integers(0, 3, 32), batch_size=8,
                        epochs=3, verbose=0, callbacks=[record, WeightAveraging(first_epoch=1)])
    # Fine-tuning's weight averaging writes the mean into the mirrored variables.
    expected = [np.mean([epoch[i] for epoch in record.seen[1:]], axis=0)
                for i in range(len(record.seen[0]))]
    averaging_diff = max(float(np.abs(np.array(w) - e).max())
                         for w, e in zip(model.trainable_weights, expected))
    print(json.dumps({
        "replicas": strategy.num_replicas_in_sync,
        "devices": list(strategy.extended.worker_devices),
        "backend": dist.backend,
        "max_diff": float(np.abs(a - b).max()),
        "scale": float(np.abs(b).max()),
        "loss": float(history.history["loss"][-1]),
        "averaging_diff": averaging_diff,
        "last_epoch_diff": max(float(np.abs(a - e).max())
                               for a, e in zip(record.seen[-1], expected)),
    }))
""")


def test_mirrored_strategy_on_cpu_split_into_two_devices(tmp_path: Path) -> None:
    spec = dataclasses.replace(backbones.get_spec("mobilenet_v2"), input_size=32)
    weights = write_informative_weights(spec, tmp_path / "weights.h5", seed=2)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT, str(tmp_path), str(weights)],
                          capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=600,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    assert len(result["devices"]) == 2 and all("CPU" in d for d in result["devices"])
    assert result["backend"] == "keras"
    assert result["scale"] > 1e-3
    assert result["max_diff"] <= 1e-4 * result["scale"]
    assert result["loss"] == result["loss"]  # finite, not NaN
    assert result["averaging_diff"] <= 1e-6 < result["last_epoch_diff"]
