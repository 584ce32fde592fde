"""Augmented views: Keras' random layers, and seeded augmented copies of one image.

Module-level state: compiled view makers, kept per image size and reused across calls and
threads, because compiling one costs far more than using it. They hold no result (every
call seeds them from the image hash and the view), so they cannot change a result; tests
need not clear them.
"""

from __future__ import annotations

import hashlib
import threading

import keras
import numpy as np
import tensorflow as tf


def make_augmenter(seed: int) -> keras.Sequential:
    """Random flip, rotation, zoom and contrast as Keras preprocessing layers.

    Works on RGB values 0..255 and is active only when called with training=True, so it is
    never applied to validation or test images. Seeded for reproducible training.
    """
    seed = int(seed)
    return keras.Sequential([
        keras.layers.RandomFlip("horizontal", seed=seed),
        keras.layers.RandomRotation(0.1, fill_mode="reflect", seed=seed + 1),
        keras.layers.RandomZoom(0.1, fill_mode="reflect", seed=seed + 2),
        keras.layers.RandomContrast(0.1, value_range=(0, 255), seed=seed + 3),
    ], name="augmentation")


def view_seed(sha: str, view: int) -> int:
    """The seed of augmented copy `view` of the image whose sha256 is `sha`."""
    digest = hashlib.sha256(f"{sha.lower()}:{view}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x3FFFFFFF


class _ViewMaker:
    """make_augmenter's layers compiled for one S×S image, seeded per call.

    Eager Keras layers spend almost all their time in dispatch; the compiled function gives
    the same pixels several times faster (docs/benchmarks.md, design choices).
    """

    def __init__(self, size: int) -> None:
        self._layers = make_augmenter(0).layers
        # Layers take an int or a SeedGenerator as seed, not a tensor. A generator whose state
        # is set to [seed, 0] draws what the int seed would, without retracing per seed.
        self._seeds = [keras.random.SeedGenerator(0) for _ in self._layers]
        # No autograph: the loop is over Python layers, and autograph's rewrite of the layers'
        # code failed in the app tests (a TypeError in its generated code).
        self._augment = tf.function(self._augment_one, autograph=False, input_signature=[
            tf.TensorSpec([size, size, 3], tf.float32), tf.TensorSpec([], tf.int64)])

    def _augment_one(self, image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        x = image[None]
        for i, (layer, generator) in enumerate(zip(self._layers, self._seeds)):
            state = tf.stack([seed + 7919 * i, tf.constant(0, tf.int64)])
            generator.state.assign(tf.cast(state, generator.state.dtype))
            transform = layer.get_random_transformation(x, training=True, seed=generator)
            x = layer.transform_images(x, transform, training=True)
        return tf.clip_by_value(x[0], 0.0, 255.0)

    def __call__(self, image: np.ndarray, seed: int) -> np.ndarray:
        return self._augment(np.asarray(image, np.float32), np.int64(seed)).numpy()


# Compiled view makers by image size, reused across calls and threads (one user at a time:
# their seed variables are per maker).
_view_makers: dict[int, list[_ViewMaker]] = {}
_view_makers_lock = threading.Lock()


def augment_view(image: np.ndarray, sha: str, view: int) -> np.ndarray:
    """Augmented copy `view` (>= 1) of one S×S RGB image, float32 0..255.

    make_augmenter's flip, rotation, zoom and contrast, each drawing its random transformation
    from a seed derived from the image hash and the view number: the same (sha, view) always
    gives the same pixels, whatever the batch or call order.
    """
    image = np.asarray(image)
    size = int(image.shape[0])
    with _view_makers_lock:
        free = _view_makers.setdefault(size, [])
        maker = free.pop() if free else None
    if maker is None:
        maker = _ViewMaker(size)
    try:
        return maker(image, view_seed(sha, view))
    finally:
        with _view_makers_lock:
            _view_makers[size].append(maker)

