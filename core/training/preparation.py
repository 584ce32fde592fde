"""Before a run trains: its classes, its seeds, a check of its split, batch sizes that fit."""

from __future__ import annotations

import random
from typing import Any

import keras
import numpy as np
import pandas as pd

from core import device
from core.config import TrainConfig
from core.errors import DatasetError


def labels_of(split_df: pd.DataFrame) -> list[str]:
    """Class names in label_index order."""
    pairs = split_df[["label_index", "label"]].drop_duplicates().sort_values("label_index")
    if list(pairs["label_index"]) != list(range(len(pairs))):
        raise DatasetError(
            "Label indices must run 0..N-1 with one name each; re-ingest the dataset."
        )
    return pairs["label"].tolist()


def _seed(seed: int, *, tensorflow: bool) -> None:
    """Seeds Python's and NumPy's generators, and TensorFlow's and Keras' when asked.

    The head on cached features draws only from Python's generator (its initial weights; its
    dropout and batch order take explicit seeds). Seeding TensorFlow also clears its kernel
    cache, so the head's compiled steps were set up again in every run; only
    fine-tuning (tf.data, augmentation, Keras' generator) needs TensorFlow seeded.
    """
    if tensorflow:
        keras.utils.set_random_seed(seed)
        return
    random.seed(seed)
    np.random.seed(seed)


def _check_split(split_df: pd.DataFrame) -> None:
    required = {"path", "label", "label_index", "sha256", "split"}
    missing = required - set(split_df.columns)
    if missing:
        raise DatasetError(
            f"The split table lacks columns {sorted(missing)}; build it with splits.split()."
        )
    for name in ("train", "val", "test"):
        if not (split_df["split"] == name).any():
            raise DatasetError(
                f"The {name} split is empty; add images or change the split shares."
            )
    if split_df["label_index"].nunique() < 2:
        raise DatasetError("Training needs at least 2 classes; add another class folder.")


def batch_sizes(info: Any, input_size: int, config: TrainConfig) -> tuple[int, int]:
    """(feature-extraction batch, fine-tuning batch) that fit the device.

    On a GPU, inference takes the largest batch its memory allows; fine-tuning keeps the
    chosen batch size unless it would not fit. On a CPU both are the chosen batch size.
    """
    chosen = config.batch_size
    if info.kind != "gpu":
        return chosen, chosen
    extract = device.suggest_batch_size(info, input_size, training=False, default=chosen)
    fits = device.suggest_batch_size(info, input_size, training=True, default=chosen)
    return max(extract, chosen), min(chosen, fits)


def _count_params(model: Any) -> dict[str, int]:
    trainable = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    total = int(model.count_params())
    return {"total": total, "trainable": trainable, "non_trainable": total - trainable}
