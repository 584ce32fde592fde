"""A tiny run in the studio's store, for tests of export and the pages that show exports."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pandas as pd

from core.config import SplitConfig, TrainConfig
from core.data import datasets, images, splits
from core.runs import evaluation
from core.runs.store import Run, RunStore

SIZE = 32
LABELS = ["cats", "dogs", "fish"]


def tiny_classifier(n_classes: int, size: int = SIZE) -> keras.Model:
    """The studio's model layout at a small size: raw RGB in, nested base, nested head."""
    keras.utils.set_random_seed(0)
    base_in = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="to_minus1_1")(base_in)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    base = keras.Model(base_in, x, name="tiny_features")
    head_in = keras.Input((8,), name="features")
    y = keras.layers.Dropout(0.2)(head_in)
    y = keras.layers.Dense(n_classes, activation="softmax", name="probabilities")(y)
    head = keras.Model(head_in, y, name="head")
    inputs = keras.Input((size, size, 3), name="image")
    return keras.Model(inputs, head(base(inputs, training=False)), name="classifier")


def _decoded(frame: pd.DataFrame, size: int) -> np.ndarray:
    return np.stack([images.load_resized(p, size) for p in frame["path"]])


def make_run(home: Path, data: Path, model: keras.Model, train: bool = True,
             config: TrainConfig | None = None) -> Run:
    """A completed run in the studio's store holding `model`, fitted briefly on the photos."""
    dataset = datasets.ingest(data)
    split_df = splits.split(dataset.index, SplitConfig(seed=1))
    labels = dataset.classes
    size = model.input_shape[1]
    if train:
        part = split_df[split_df["split"] == "train"]
        model.compile(keras.optimizers.Adam(0.05), "sparse_categorical_crossentropy")
        model.fit(_decoded(part, size).astype("float32"), part["label_index"].to_numpy(),
                  epochs=25, batch_size=8, verbose=0)
    store = RunStore(home)
    writer = store.create(config or TrainConfig(weights=None), labels, split_df,
                          {"name": data.name}, device={"kind": "cpu"})
    writer.save_model(model)
    test = split_df[split_df["split"] == "test"]
    probs = np.asarray(model(_decoded(test, size).astype("float32"), training=False))
    result = evaluation.evaluate_probabilities(probs, test["label_index"].to_numpy(), labels,
                                               test["path"].tolist())
    writer.write_metrics({"test": result.to_dict(), "test_accuracy": result.accuracy,
                          "unsure_threshold": 0.4})
    writer.set_status("completed")
    return store.load(writer.run_id)
