"""Backbone registry, weights resolution and base building, checked against keras.applications."""

from __future__ import annotations

import dataclasses
import importlib
import os
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import write_informative_weights

from core.errors import ConfigError, WeightsUnavailableError
from core.features import backbones
from core.features import weights as base_weights
from core.features.backbones import BACKBONES, build_base, get_spec
from core.features.weights import ResolvedWeights, resolve_weights

REQUIRED = [
    "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0",
    "efficientnet_v2_b0", "resnet50_v2", "inception_v3", "xception", "densenet121",
    "nasnet_mobile", "convnext_tiny",
]
# Big enough that checking them against Keras takes several seconds each.
HEAVY = {"resnet50_v2", "inception_v3", "xception", "densenet121", "nasnet_mobile",
         "convnext_tiny"}


def _small(name: str = "mobilenet_v2", size: int = 64) -> backbones.BackboneSpec:
    return dataclasses.replace(get_spec(name), input_size=size)


def _images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype("float32")


@pytest.fixture
def empty_keras_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "keras-empty"
    (home / "models").mkdir(parents=True)
    monkeypatch.setenv("KERAS_HOME", str(home))
    return home


# --------------------------------------------------------------------------- registry


def test_registry_has_every_required_base_with_mobilenet_v2_first() -> None:
    assert list(BACKBONES)[:1] == ["mobilenet_v2"]
    assert backbones.DEFAULT_BACKBONE == "mobilenet_v2"
    assert set(REQUIRED) <= set(BACKBONES)
    for name, spec in BACKBONES.items():
        assert spec.name == name
        assert spec.weights_file.endswith(".h5")
        assert spec.weights_url.startswith("https://storage.googleapis.com/")
        assert spec.feature_dim > 0 and spec.params > 0 and spec.depth > 0
        assert spec.weights_mb > 0 and spec.relative_speed > 0
        assert spec.preprocessing  # a description people can read
    with pytest.raises(TypeError):
        BACKBONES["x"] = BACKBONES["mobilenet_v2"]  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        BACKBONES["mobilenet_v2"].input_size = 96  # type: ignore[misc]


def test_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError) as err:
        get_spec("mobilenet_v9")
    message = str(err.value)
    assert "mobilenet_v9" in message
    for name in REQUIRED + ["tfhub"]:
        assert name in message


def test_tfhub_spec_needs_a_handle_and_a_sane_size() -> None:
    with pytest.raises(ConfigError, match="handle"):
        get_spec("tfhub")
    with pytest.raises(ConfigError, match="between 32 and 1024"):
        get_spec("tfhub", hub_handle="/x", hub_input_size=8)
    spec = get_spec("tfhub", hub_handle=" /some/folder ", hub_input_size=96)
    assert (spec.hub_handle, spec.input_size, spec.preprocessing_mode) == ("/some/folder", 96,
                                                                           "hub")


@pytest.mark.parametrize("name", REQUIRED)
def test_folded_preprocessing_matches_keras_preprocess_input(name: str) -> None:
    spec = get_spec(name)
    module = getattr(keras.applications, spec.keras_module)
    x = _images(2, 32, seed=1)
    expected = np.asarray(module.preprocess_input(x.copy()))
    got = x
    for layer in backbones.preprocessing_layers(spec):
        got = np.asarray(layer(got))
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-6)
    if spec.preprocessing_mode == "builtin":
        # Then the Keras model must do it itself: its first layer after the input scales.
        app = backbones.application(dataclasses.replace(spec, input_size=32))
        assert isinstance(app.layers[1], (keras.layers.Rescaling, keras.layers.Normalization))


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in REQUIRED
])
def test_record_matches_keras_and_imagenet_build_equals_keras_recipe(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One build per base checks: the file name/URL/hash Keras asks for, params, depth,
    feature size, and that build_base on an ImageNet-layout file computes exactly
    keras.applications.X(weights="imagenet")(preprocess_input(x))."""
    spec = get_spec(name)
    size = spec.input_size
    kwargs = dict(spec.constructor_kwargs)

    fake = write_informative_weights(spec, tmp_path / spec.weights_file, seed=3)

    # Every keras.applications module downloads through this one function.
    file_utils = importlib.import_module("keras.src.utils.file_utils")
    asked: list[tuple] = []

    def fake_get_file(fname=None, origin=None, **kw):
        asked.append((fname, origin, kw.get("file_hash"), kw.get("cache_subdir")))
        return str(fake)

    monkeypatch.setattr(file_utils, "get_file", fake_get_file)
    constructor = getattr(keras.applications, spec.constructor)
    reference = constructor(include_top=False, weights="imagenet", input_shape=(size, size, 3),
                            pooling="avg", **kwargs)
    monkeypatch.undo()

    assert asked == [(spec.weights_file, spec.weights_url, spec.weights_hash, "models")]
    assert reference.count_params() == spec.params
    assert reference.output_shape == (None, spec.feature_dim)

    ours = build_base(spec, ResolvedWeights("imagenet", name, size, path=fake))
    (inner,) = [layer for layer in ours.layers if isinstance(layer, keras.Model)]
    assert len(inner.layers) == spec.depth  # what fine-tuning's "top N layers" counts
    assert ours.input_shape == (None, size, size, 3)
    assert ours.output_shape == (None, spec.feature_dim)
    x = _images(2, size, seed=5)
    prep = getattr(keras.applications, spec.keras_module).preprocess_input
    want = np.asarray(reference(prep(x.copy()), training=False))
    got = np.asarray(ours(x, training=False))
    scale = float(np.abs(want).max())
    assert scale > 0 and np.isfinite(want).all()
    assert float(np.abs(got - want).max()) <= 1e-4 * scale


# --------------------------------------------------------------------------- weights


def test_imagenet_weights_found_in_keras_home_read_at_call_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = get_spec("mobilenet_v2")
    home = tmp_path / "late-keras-home"
    (home / "models").mkdir(parents=True)
    (home / "models" / spec.weights_file).write_bytes(b"pretend weights")
    monkeypatch.setenv("KERAS_HOME", str(home))  # after keras was imported
    monkeypatch.setenv("TL_STUDIO_OFFLINE", "1")
    assert base_weights.keras_models_dir() == home / "models"
    resolved = resolve_weights(spec, "imagenet")
    assert resolved.kind == "imagenet"
    assert resolved.path == home / "models" / spec.weights_file
    assert base_weights.weights_available(spec)


def test_offline_and_missing_fails_before_any_work_naming_file_and_folder(
    empty_keras_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TL_STUDIO_OFFLINE", "1")

    def no_download(*_a, **_k):
        raise AssertionError("must not try to download when offline")

    monkeypatch.setattr(keras.utils, "get_file", no_download)
    monkeypatch.setattr(backbones, "application", no_download)
    spec = get_spec("efficientnet_b0")
    with pytest.raises(WeightsUnavailableError) as err:
        resolve_weights(spec, "imagenet")
    message = str(err.value)
    assert spec.weights_file in message
    assert str(empty_keras_home / "models") in message
    assert "KERAS_HOME" in message
    assert not base_weights.weights_available(spec)


def test_network_check_is_bounded_and_obeys_offline_switch(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TL_STUDIO_OFFLINE", "1")
    assert base_weights.network_available() is False
    monkeypatch.delenv("TL_STUDIO_OFFLINE")
    # A port nobody listens on: refused (or unroutable) -> False, quickly.
    assert base_weights.network_available("127.0.0.1", 9, timeout=0.5) is False


def test_missing_weights_download_into_keras_home_when_online(
    empty_keras_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TL_STUDIO_OFFLINE", raising=False)
    monkeypatch.setattr(base_weights, "network_available", lambda *a, **k: True)
    seen = {}

    def fake_get_file(fname, origin, *, cache_dir, cache_subdir, file_hash):
        seen.update(fname=fname, origin=origin, cache_dir=cache_dir, sub=cache_subdir,
                    hash=file_hash)
        target = Path(cache_dir) / cache_subdir / fname
        target.write_bytes(b"downloaded")
        return str(target)

    monkeypatch.setattr(keras.utils, "get_file", fake_get_file)
    spec = get_spec("mobilenet_v3_small")
    resolved = resolve_weights(spec, "imagenet")
    assert resolved.path == empty_keras_home / "models" / spec.weights_file
    assert seen == {"fname": spec.weights_file, "origin": spec.weights_url,
                    "cache_dir": str(empty_keras_home), "sub": "models",
                    "hash": spec.weights_hash}


def test_failed_download_says_where_to_put_the_file(
    empty_keras_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(base_weights, "network_available", lambda *a, **k: True)

    def broken(*_a, **_k):
        raise OSError("connection reset")

    monkeypatch.setattr(keras.utils, "get_file", broken)
    with pytest.raises(WeightsUnavailableError, match="connection reset") as err:
        resolve_weights(get_spec("densenet121"), "imagenet")
    assert "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5" in str(err.value)


def test_weights_file_is_validated(tmp_path: Path) -> None:
    spec = _small()
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        resolve_weights(spec, tmp_path / "nope.h5")
    with pytest.raises(WeightsUnavailableError, match="folder"):
        resolve_weights(spec, tmp_path)
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(WeightsUnavailableError, match=r"\.h5"):
        resolve_weights(spec, tmp_path / "weights.bin")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5 at all")
    with pytest.raises(WeightsUnavailableError, match="does not fit"):
        resolve_weights(spec, tmp_path / "junk.h5")
    # A real weights file of another architecture.
    wrong = write_informative_weights(_small("mobilenet_v3_small"), tmp_path / "v3.h5")
    with pytest.raises(WeightsUnavailableError, match="does not fit MobileNetV2"):
        resolve_weights(spec, wrong)


def test_weights_file_loads_and_fingerprint_follows_content(tmp_path: Path) -> None:
    spec = _small()
    path = write_informative_weights(spec, tmp_path / "mine.h5", seed=2)
    resolved = resolve_weights(spec, str(path))
    assert resolved.kind == "file"
    model = build_base(spec, resolved)
    donor = keras.applications.MobileNetV2(weights=str(path), include_top=False,
                                           input_shape=(64, 64, 3), pooling="avg")
    x = _images(2, spec.input_size)
    want = np.asarray(donor(keras.applications.mobilenet_v2.preprocess_input(x.copy())))
    np.testing.assert_allclose(np.asarray(model(x)), want, rtol=0,
                               atol=1e-4 * float(np.abs(want).max()))
    # Same content elsewhere: same fingerprint. Changed content: a new one, even when cached.
    copy = tmp_path / "copy.h5"
    copy.write_bytes(path.read_bytes())
    first = resolved.fingerprint
    assert resolve_weights(spec, copy).fingerprint == first
    assert resolved.fingerprint == first  # cached, unchanged
    write_informative_weights(spec, path, seed=3)
    os.utime(path, ns=(1, 1))
    assert resolved.fingerprint != first
    # Input size is part of the key.
    assert dataclasses.replace(resolved, input_size=96).fingerprint != resolved.fingerprint


def test_random_weights_only_when_asked_and_deterministic_from_seed() -> None:
    spec = _small()
    a = resolve_weights(spec, None, seed=7)
    b = resolve_weights(spec, None, seed=7)
    c = resolve_weights(spec, None, seed=8)
    assert a.kind == "none" and a.path is None
    assert a.fingerprint == b.fingerprint != c.fingerprint
    x = _images(2, spec.input_size)
    fa, fb, fc = (np.asarray(build_base(spec, r)(x)) for r in (a, b, c))
    np.testing.assert_array_equal(fa, fb)
    assert not np.array_equal(fa, fc)


def test_built_base_is_frozen_and_reloads_without_custom_code(tmp_path: Path) -> None:
    spec = _small("densenet121", size=32)  # "torch" mode: Rescaling + Normalization
    model = build_base(spec, resolve_weights(spec, None))
    assert not model.trainable and model.trainable_weights == []
    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    assert len(nested) == 1 and len(nested[0].layers) == spec.depth
    model.save(tmp_path / "base.keras")
    again = keras.saving.load_model(tmp_path / "base.keras")  # no custom_objects
    x = _images(2, 32)
    np.testing.assert_allclose(np.asarray(again(x)), np.asarray(model(x)), rtol=0, atol=1e-5)


def test_resolved_weights_must_match_the_base() -> None:
    spec = _small()
    other = resolve_weights(_small("mobilenet_v3_small"), None)
    with pytest.raises(ConfigError, match="resolve the weights again"):
        build_base(spec, other)


def test_keras_home_defaults_to_dot_keras(monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    monkeypatch.delenv("KERAS_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert base_weights.keras_models_dir() == tmp_path / ".keras" / "models"


def test_nested_base_finds_the_pretrained_network_at_any_depth() -> None:
    spec = dataclasses.replace(backbones.get_spec("mobilenet_v2"), input_size=32)
    base = backbones.build_base(spec, base_weights.resolve_weights(spec, None))
    network = backbones.nested_base(base)
    assert network is not base and len(network.layers) == spec.depth
    inputs = keras.Input((32, 32, 3))
    head = keras.Sequential([keras.Input((spec.feature_dim,)), keras.layers.Dense(2)])
    classifier = keras.Model(inputs, head(base(inputs)))
    assert backbones.nested_base(classifier) is network
    plain = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    assert backbones.nested_base(plain) is plain
