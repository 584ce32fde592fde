"""core.features.augmentation: Keras' random layers and seeded, compiled augmented views."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import keras
import numpy as np
import tensorflow as tf

from core.features import augmentation

SIZE = 64


def test_augmented_view_depends_only_on_hash_and_view() -> None:
    img = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3)).astype(np.uint8)
    a = augmentation.augment_view(img, "ab" * 32, 1)
    c = augmentation.augment_view(img, "ab" * 32, 2)
    d = augmentation.augment_view(img, "cd" * 32, 1)
    assert a.shape == img.shape and a.dtype == np.float32
    assert 0 <= a.min() and a.max() <= 255
    # From other threads at once (each takes its own compiled maker): the same pixels.
    with ThreadPoolExecutor(4) as pool:
        again = list(pool.map(lambda _: augmentation.augment_view(img, "ab" * 32, 1), range(8)))
    for b in again:
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and not np.array_equal(a, d)


def test_compiled_views_are_the_keras_layers_own_transformations() -> None:
    """The compiled maker draws and applies exactly what the eager layers do for that seed."""
    img = np.random.default_rng(1).uniform(0, 255, (SIZE, SIZE, 3)).astype(np.float32)
    sha, view = "ef" * 32, 3
    x = tf.convert_to_tensor(img[None])
    seed = augmentation.view_seed(sha, view)
    for i, layer in enumerate(augmentation.make_augmenter(0).layers):
        transform = layer.get_random_transformation(x, training=True, seed=seed + 7919 * i)
        x = layer.transform_images(x, transform, training=True)
    want = np.clip(np.asarray(x[0]), 0, 255)
    np.testing.assert_allclose(augmentation.augment_view(img, sha, view), want, atol=1e-3)
    assert not np.allclose(want, img)


def test_augmenter_layers_and_inference_passthrough() -> None:
    aug = augmentation.make_augmenter(3)
    kinds = [type(layer) for layer in aug.layers]
    assert kinds == [keras.layers.RandomFlip, keras.layers.RandomRotation,
                     keras.layers.RandomZoom, keras.layers.RandomContrast]
    x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(aug(x, training=False)), x, atol=1e-4)
    assert not np.allclose(np.asarray(aug(x, training=True)), x)
