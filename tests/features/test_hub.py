"""core.features.hub: TF Hub bases as a Keras 3 layer and their handles, on SavedModels built here."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import make_class_folders

from core.errors import ConfigError, WeightsUnavailableError
from core.features import backbones, hub
from core.features import extraction as features
from core.features import weights as base_weights

SIZE = 48
DIM = 6


class FeatureVectorModule(tf.Module):
    """A tiny image feature-vector model in TF Hub's convention: [B,H,W,3] in [0,1] -> [B,D]."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.w = tf.Variable(tf.random.stateless_normal([12, DIM], seed=[seed, 1]))

    @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32)])
    def __call__(self, images: tf.Tensor) -> tf.Tensor:
        # Non-linear in the pixel values, so a wrong input scale cannot go unnoticed.
        stats = [tf.reduce_mean(images, [1, 2]), tf.reduce_mean(images**2, [1, 2]),
                 tf.reduce_max(images, [1, 2]), tf.math.reduce_std(images, [1, 2])]
        return tf.nn.relu(tf.matmul(tf.concat(stats, axis=-1), self.w))


class SignatureOnlyModule(tf.Module):
    """A SavedModel that is not callable itself: only a serving signature returning a dict."""

    def __init__(self) -> None:
        super().__init__()
        self.w = tf.Variable(tf.ones([3, DIM]))

    @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32)])
    def features(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"default": tf.matmul(tf.reduce_mean(images, [1, 2]), self.w)}


def _save(module: tf.Module, folder: Path, **kwargs: object) -> Path:
    tf.saved_model.save(module, str(folder), **kwargs)
    return folder


@pytest.fixture(scope="module")
def hub_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save(FeatureVectorModule(seed=3), tmp_path_factory.mktemp("hub") / "model")


def _images(n: int = 3) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 255, (n, SIZE, SIZE, 3)).astype("float32")


def _reference(folder: Path, x: np.ndarray) -> np.ndarray:
    return np.asarray(tf.saved_model.load(str(folder))(tf.constant(x / 255.0, tf.float32)))


def _spec(folder: Path | str) -> backbones.BackboneSpec:
    return backbones.get_spec("tfhub", hub_handle=str(folder), hub_input_size=SIZE)


def test_hub_base_scales_to_unit_range_and_returns_features(hub_folder: Path) -> None:
    spec = _spec(hub_folder)
    resolved = base_weights.resolve_weights(spec, "imagenet")
    assert resolved.kind == "hub" and resolved.path == hub_folder.resolve()
    model = backbones.build_base(spec, resolved)
    assert model.input_shape == (None, SIZE, SIZE, 3)
    assert model.output_shape == (None, DIM)
    assert not model.trainable and model.trainable_weights == []
    x = _images()
    np.testing.assert_allclose(np.asarray(model(x)), _reference(hub_folder, x), rtol=1e-5,
                               atol=1e-6)


def test_saved_model_reloads_from_its_handle(hub_folder: Path, tmp_path: Path) -> None:
    spec = _spec(hub_folder)
    model = backbones.build_base(spec, base_weights.resolve_weights(spec, None))
    layer = model.get_layer("hub_features")
    assert layer.get_config()["handle"] == str(hub_folder.resolve())
    model.save(tmp_path / "hub.keras")
    again = keras.saving.load_model(tmp_path / "hub.keras")  # core.features.backbones registered it
    x = _images()
    np.testing.assert_allclose(np.asarray(again(x)), np.asarray(model(x)), rtol=0, atol=1e-6)


def test_hub_layer_stays_float32_under_mixed_precision(hub_folder: Path) -> None:
    spec = _spec(hub_folder)
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = backbones.build_base(spec, base_weights.resolve_weights(spec, None))
        out = model(_images(2))
    finally:
        keras.mixed_precision.set_global_policy(previous)
    assert out.dtype == tf.float32


def test_signature_only_saved_model_works(tmp_path: Path) -> None:
    module = SignatureOnlyModule()
    folder = _save(module, tmp_path / "sig", signatures={"serving_default": module.features})
    spec = _spec(folder)
    model = backbones.build_base(spec, base_weights.resolve_weights(spec, None))
    x = _images(2)
    want = (x / 255.0).mean(axis=(1, 2)) @ np.ones((3, DIM), np.float32)
    np.testing.assert_allclose(np.asarray(model(x)), want, rtol=1e-5)


def test_fingerprint_follows_the_saved_model_content(tmp_path: Path) -> None:
    a = _save(FeatureVectorModule(seed=1), tmp_path / "a")
    b = Path(shutil.copytree(a, tmp_path / "b"))  # same bytes elsewhere
    c = _save(FeatureVectorModule(seed=2), tmp_path / "c")
    fa, fb, fc = (base_weights.resolve_weights(_spec(p), None).fingerprint for p in (a, b, c))
    assert fa == fb != fc
    resolved = base_weights.resolve_weights(_spec(a), None)
    before = resolved.fingerprint
    _save(FeatureVectorModule(seed=5), a)  # replaced in place
    assert resolved.fingerprint != before


def test_bad_handles_say_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="handle"):
        backbones.get_spec("tfhub", hub_handle="  ")
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        base_weights.resolve_weights(_spec(tmp_path / "missing"), None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsUnavailableError, match="saved_model.pb"):
        base_weights.resolve_weights(_spec(tmp_path / "empty"), None)
    monkeypatch.setenv("TL_STUDIO_OFFLINE", "1")
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "hub-cache"))
    url = "https://tfhub.dev/google/imagenet/mobilenet_v2_100_224/feature_vector/5"
    with pytest.raises(WeightsUnavailableError, match="not reachable") as err:
        base_weights.resolve_weights(_spec(url), None)
    assert "TFHUB_CACHE_DIR" in str(err.value) and "SavedModel folder" in str(err.value)
    assert not base_weights.weights_available(_spec(url))
    assert base_weights.weights_available(_spec(tmp_path / "missing")) is False


def test_cached_remote_handle_needs_no_network(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    url = "https://tfhub.dev/example/feature_vector/1"
    cache = tmp_path / "hub-cache"
    _save(FeatureVectorModule(seed=1), cache / hashlib.sha1(url.encode()).hexdigest())
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(cache))
    monkeypatch.setenv("TL_STUDIO_OFFLINE", "1")
    resolved = base_weights.resolve_weights(_spec(url), None)
    assert resolved.kind == "hub" and resolved.hub_handle == url and resolved.path is None
    assert base_weights.weights_available(_spec(url))


def test_hub_features_through_the_extractor(hub_folder: Path, tmp_path: Path) -> None:
    spec = _spec(hub_folder)
    resolved = base_weights.resolve_weights(spec, None)
    ex = features.make_extractor(spec, resolved, home=tmp_path)
    assert ex.feature_dim == DIM
    assert ex.backend == "tflite", ex.reason  # the wrapped SavedModel converts too
    root = make_class_folders(tmp_path / "photos", {"a": 3, "b": 2}, size=SIZE)
    paths = sorted(root.rglob("*.png"))
    shas = [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]
    got, stats = features.extract(ex, paths, shas, home=tmp_path)
    assert stats.misses == len(paths)
    from core.data import images

    decoded = np.stack([images.load_resized(p, SIZE) for p in paths]).astype("float32")
    want = _reference(hub_folder, decoded)
    assert float(np.abs(got - want).max()) < 1e-4 * float(np.abs(want).max())


def test_handle_resolution_asks_the_network_only_for_uncached_urls(
        hub_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "empty-cache"))
    asked: list[str] = []

    def reachable(host: str) -> bool:
        asked.append(host)
        return True

    url = "https://example.org/models/feature_vector/2"
    assert hub.resolve_handle(f"  {url} ", reachable) is None
    assert asked == ["example.org"]
    assert hub.resolve_handle(str(hub_folder), reachable) == hub_folder.resolve()
    assert asked == ["example.org"]  # a folder needs no network
    with pytest.raises(WeightsUnavailableError, match="not reachable"):
        hub.resolve_handle(url, lambda host: False)
