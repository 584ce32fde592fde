"""model.keras written with a kept frozen base: the same file as Keras' own model.save."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest

from core.config import TrainConfig
from core.features import backbones
from core.features import weights as base_weights
from core.runs import model_archive
from core.training import fine_tuning
from core.training import head as head_training


@pytest.fixture(scope="module")
def base() -> keras.Model:
    """A frozen MobileNetV2 base as the studio builds it (random weights)."""
    spec = backbones.get_spec("mobilenet_v2")
    return backbones.build_base(spec, base_weights.resolve_weights(spec, None))


@pytest.fixture(autouse=True)
def nothing_kept() -> None:
    """Each test starts with no base weights kept from another."""
    model_archive.forget_kept_bases()


def classifier(base: keras.Model, hidden_units: tuple[int, ...] = (), seed: int = 0,
               ) -> keras.Model:
    keras.utils.set_random_seed(seed)
    head = head_training.build_head(1280, 3, TrainConfig(hidden_units=hidden_units))
    return fine_tuning.assemble_model(base, head, 224)


def weights_tree(path: Path) -> dict[str, tuple[dict, np.ndarray | None]]:
    """Every group and dataset of a .keras file's weights: attributes and values."""
    with zipfile.ZipFile(path) as archive:
        weights = h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r")
    tree: dict[str, tuple[dict, np.ndarray | None]] = {"/": (dict(weights.attrs), None)}

    def visit(name: str, item: h5py.Group | h5py.Dataset) -> None:
        value = item[()] if isinstance(item, h5py.Dataset) else None
        tree[name] = (dict(item.attrs), value)

    weights.visititems(visit)
    weights.close()
    return tree


def assert_same_file(ours: Path, keras_own: Path) -> None:
    with zipfile.ZipFile(ours) as a, zipfile.ZipFile(keras_own) as b:
        assert a.namelist() == b.namelist()
        assert json.loads(a.read("config.json")) == json.loads(b.read("config.json"))
        meta_a, meta_b = json.loads(a.read("metadata.json")), json.loads(b.read("metadata.json"))
        assert meta_a.keys() == meta_b.keys()
        assert meta_a["keras_version"] == meta_b["keras_version"]
    tree_a, tree_b = weights_tree(ours), weights_tree(keras_own)
    assert tree_a.keys() == tree_b.keys()
    for name, (attrs, value) in tree_b.items():
        assert tree_a[name][0] == attrs, name
        if value is not None:
            assert tree_a[name][1].dtype == value.dtype, name
            np.testing.assert_array_equal(tree_a[name][1], value, err_msg=name)


def test_a_later_model_on_the_base_reuses_its_weights_and_equals_keras_file(
        base: keras.Model, tmp_path: Path) -> None:
    first = classifier(base)
    assert model_archive.save_model(first, tmp_path / "first.keras", base) is False

    for depth, hidden_units in enumerate([(16,), (8, 8, 8)]):
        model = classifier(base, hidden_units, seed=depth + 1)
        ours, keras_own = tmp_path / f"ours-{depth}.keras", tmp_path / f"keras-{depth}.keras"
        assert model_archive.save_model(model, ours, base) is True
        model.save(keras_own)
        assert_same_file(ours, keras_own)

    images = np.random.default_rng(0).uniform(0, 255, (2, 224, 224, 3)).astype("float32")
    loaded = keras.saving.load_model(ours, compile=False)
    np.testing.assert_array_equal(loaded.predict(images, verbose=0),
                                  model.predict(images, verbose=0))


def test_without_a_kept_base_keras_writes_the_file(base: keras.Model, tmp_path: Path) -> None:
    model = classifier(base, (4,))
    # Not a layer of this model, no base at all, or a base that can train: model.save.
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    assert model_archive.save_model(model, tmp_path / "a.keras", other) is False
    assert model_archive.save_model(model, tmp_path / "b.keras") is False
    base.trainable = True
    try:
        assert model_archive.save_model(model, tmp_path / "c.keras", base) is False
    finally:
        base.trainable = False
    assert keras.saving.load_model(tmp_path / "c.keras").output_shape == (None, 3)


def test_other_layers_before_the_base_are_saved_by_keras(base: keras.Model,
                                                         tmp_path: Path) -> None:
    """An augmenter before the base changes the base's group name: Keras saves it."""
    model_archive.save_model(classifier(base), tmp_path / "plain.keras", base)
    head = head_training.build_head(1280, 3, TrainConfig())
    augmented = fine_tuning.assemble_model(base, head, 224, keras.layers.RandomFlip(seed=1))
    path = tmp_path / "augmented.keras"
    assert model_archive.save_model(augmented, path, base) is False
    assert model_archive.save_model(augmented, tmp_path / "again.keras", base) is True
    augmented.save(tmp_path / "keras.keras")
    assert_same_file(tmp_path / "again.keras", tmp_path / "keras.keras")


def test_a_changed_keras_layout_falls_back_to_model_save(
        base: keras.Model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model_archive.save_model(classifier(base), tmp_path / "first.keras", base)
    # As if Keras no longer skipped the base: its group is already there.
    real = model_archive._save_weights_only
    monkeypatch.setattr(model_archive, "_save_weights_only",
                        lambda model, path, objects_to_skip: real(model, path))
    model = classifier(base, (4,))
    path = tmp_path / "second.keras"
    assert model_archive.save_model(model, path, base) is False
    model.save(tmp_path / "keras.keras")
    assert_same_file(path, tmp_path / "keras.keras")


def test_a_failure_to_keep_the_base_leaves_the_saved_file(
        base: keras.Model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object) -> None:
        raise OSError("no memory for the copy")

    monkeypatch.setattr(model_archive, "_keep_base_weights", broken)
    model = classifier(base)
    assert model_archive.save_model(model, tmp_path / "a.keras", base) is False
    model.save(tmp_path / "keras.keras")
    assert_same_file(tmp_path / "a.keras", tmp_path / "keras.keras")
    assert model_archive.save_model(model, tmp_path / "b.keras", base) is False
