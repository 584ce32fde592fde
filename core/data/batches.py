"""tf.data pipelines of photos, each decoded by core.data.images.load_resized in parallel."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from core.data.images import load_resized
from core.errors import ConfigError

if TYPE_CHECKING:
    import tensorflow as tf


def make_tf_dataset(
    paths: Sequence[str | os.PathLike],
    labels: Sequence[int] | np.ndarray | None,
    image_size: int,
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
) -> tf.data.Dataset:
    """A tf.data pipeline decoding files with load_resized in parallel, batched, prefetched.

    Args:
        paths: Image files (absolute paths from the dataset index).
        labels: Integer class per path, or None to yield images only.
        image_size: Side of the square images produced.
        batch_size: Images per batch (the last batch may be smaller).
        shuffle: Reshuffle the order every epoch (seeded).
        seed: Seed of the shuffle.

    Returns:
        A dataset of (uint8 [B, S, S, 3], int32 [B]) batches, or uint8 image batches when
        labels is None.

    Raises:
        ConfigError: For a non-positive size or batch size, or labels not matching paths.
    """
    import tensorflow as tf  # heavy: imported only when a pipeline is built

    size = int(image_size)
    if size < 1:
        raise ConfigError(f"Image size must be a positive number of pixels; got {image_size}.")
    if int(batch_size) < 1:
        raise ConfigError(f"Batch size must be at least 1; got {batch_size}.")
    path_list = [os.fspath(p) for p in paths]
    if not path_list:
        raise ConfigError("No images to read: the list of paths is empty; check the split.")
    label_array: np.ndarray | None = None
    if labels is not None:
        label_array = np.asarray(labels, dtype=np.int32).reshape(-1)
        if len(label_array) != len(path_list):
            raise ConfigError(
                f"Got {len(path_list)} paths but {len(label_array)} labels; pass one label "
                "per path."
            )

    def _load(path: bytes) -> np.ndarray:
        return load_resized(os.fsdecode(path), size)

    def _decode_path(path: tf.Tensor) -> tf.Tensor:
        image = tf.numpy_function(_load, [path], tf.uint8, stateful=False)
        image.set_shape((size, size, 3))
        return image

    ds = tf.data.Dataset.from_tensor_slices(path_list)
    if label_array is not None:
        ds = tf.data.Dataset.zip(ds, tf.data.Dataset.from_tensor_slices(label_array))
    if shuffle:
        ds = ds.shuffle(len(path_list), seed=seed, reshuffle_each_iteration=True)
    if label_array is not None:
        ds = ds.map(lambda p, y: (_decode_path(p), y), num_parallel_calls=tf.data.AUTOTUNE)
    else:
        ds = ds.map(_decode_path, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(int(batch_size)).prefetch(tf.data.AUTOTUNE)
