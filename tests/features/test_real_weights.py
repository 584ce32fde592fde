"""Real MobileNetV2 ImageNet weights from ../shared/assets: folded preprocessing, TFLite, sanity."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import require_asset

from core.data import images
from core.features import backbones
from core.features import extraction as features
from core.features import weights as base_weights

pytestmark = pytest.mark.real

SANITY_TOP1 = {
    "parrot.jpg": {"macaw"},
    "bird.bmp": {"chickadee"},
    "hot_dog.jpg": {"hotdog"},
    "dragonfly.bmp": {"dragonfly"},
    "grace_hopper.bmp": {"military uniform"},
    "cat.bmp": {"Egyptian cat", "tabby", "tiger cat"},
    "sunflower.bmp": {"daisy"},  # ImageNet has no sunflower class
}


def _real_photos() -> list[Path]:
    flowers = require_asset("datasets/flower_photos_tiny")
    sanity = require_asset("images/imagenet_sanity")
    picks = [min((flowers / cls).glob("*.jpg"))
             for cls in ("daisy", "dandelion", "roses", "sunflowers", "tulips")]
    return picks + [sanity / name for name in ("parrot.jpg", "bird.bmp", "hot_dog.jpg")]


@pytest.fixture
def mobilenet(keras_home_with_mobilenet: Path) -> tuple[backbones.BackboneSpec,
                                                        base_weights.ResolvedWeights]:
    spec = backbones.get_spec("mobilenet_v2")
    resolved = base_weights.resolve_weights(spec, "imagenet")
    assert resolved.kind == "imagenet"
    assert resolved.path.parent == keras_home_with_mobilenet / "models"
    return spec, resolved


def test_real_base_equals_the_keras_recipe(mobilenet) -> None:
    spec, resolved = mobilenet
    batch = np.stack([images.load_resized(p, 224) for p in _real_photos()]).astype("float32")
    ours = np.asarray(backbones.build_base(spec, resolved)(batch))
    keras_way = keras.applications.MobileNetV2(
        weights=str(resolved.path), include_top=False, input_shape=(224, 224, 3), pooling="avg")
    want = np.asarray(keras_way(keras.applications.mobilenet_v2.preprocess_input(batch.copy())))
    assert float(np.abs(ours - want).max()) < 1e-4 * float(np.abs(want).max())


def test_tflite_matches_keras_on_real_weights_and_photos(mobilenet, tmp_path: Path) -> None:
    spec, resolved = mobilenet
    tflite = features.make_extractor(spec, resolved, home=tmp_path)
    assert tflite.backend == "tflite", tflite.reason
    plain = features.make_extractor(spec, resolved, home=tmp_path, prefer_tflite=False)
    batch = np.stack([images.load_resized(p, 224) for p in _real_photos()])
    want = plain.extract_batch(batch)
    got = tflite.extract_batch(batch)
    scale = float(np.abs(want).max())
    diff = float(np.abs(got - want).max())
    print(f"TFLite vs Keras on real MobileNetV2: max abs diff {diff:.3g}, feature scale "
          f"{scale:.3g} ({diff / scale:.2e} of it)")
    assert diff < 1e-4 * scale


def test_imagenet_sanity_photos_get_sensible_top1() -> None:
    weights = require_asset("weights/mobilenet_v2_1.0_224_with_top_APPROX_qat_head.h5")
    labels_file = require_asset("weights/imagenet_labels_1000.txt")
    folder = require_asset("images/imagenet_sanity")
    labels = labels_file.read_text().splitlines()
    assert len(labels) == 1000
    spec = backbones.get_spec("mobilenet_v2")
    classifier = keras.applications.MobileNetV2(weights=str(weights), include_top=True)
    inputs = keras.Input((224, 224, 3), name="image")
    x = inputs
    for layer in backbones.preprocessing_layers(spec):  # the same folding build_base uses
        x = layer(x)
    model = keras.Model(inputs, classifier(x))
    names = sorted(SANITY_TOP1)
    batch = np.stack([images.load_resized(folder / n, spec.input_size) for n in names])
    probs = np.asarray(model.predict(batch.astype("float32"), verbose=0))
    got = {n: labels[int(i)].split(",")[0] for n, i in zip(names, probs.argmax(axis=1))}
    wrong = {n: g for n, g in got.items() if g not in SANITY_TOP1[n]}
    assert not wrong, f"unexpected top-1: {wrong} (all: {got})"
