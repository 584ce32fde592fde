"""Training engine end to end on generated data with randomly initialised bases."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from core.config import SplitConfig, TrainConfig
from core.data import datasets, splits
from core.errors import ConfigError, WeightsUnavailableError
from core.features import extraction as features
from core.progress import PHASES, ProgressEvent
from core.runs import model_archive
from core.runs.store import RunStore
from core.training import fine_tuning
from core.training import head as head_training
from core.training import pipeline as training

FAST = TrainConfig(backbone="mobilenet_v2", weights=None, epochs=3, batch_size=8,
                   early_stopping_patience=0, augment=False)


@pytest.fixture(scope="module")
def shared_tflite_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One converted-base cache for the module: conversion is content-keyed and slow."""
    return tmp_path_factory.mktemp("tflite-cache")


@pytest.fixture
def studio_home(studio_home: Path, shared_tflite_cache: Path) -> Path:
    (studio_home / "cache").mkdir()
    (studio_home / "cache" / "tflite").symlink_to(shared_tflite_cache, target_is_directory=True)
    return studio_home


@pytest.fixture
def split_df(small_dataset: Path) -> pd.DataFrame:
    dataset = datasets.ingest(small_dataset)
    assert dataset.report.usable, dataset.report.errors
    return splits.split(dataset.index, SplitConfig(seed=1))


def test_frozen_base_run_end_to_end(split_df: pd.DataFrame, studio_home: Path) -> None:
    events: list[ProgressEvent] = []
    result = training.train(split_df, FAST, home=studio_home, on_event=events.append,
                            dataset_info={"name": "small"})

    assert result.status == "completed"
    assert result.epochs_run == 3
    assert 0.0 <= result.test_accuracy <= 1.0
    # No search by default; the "none of these" reference is fitted after the head.
    assert set(result.seconds) == {"features", "training", "familiarity", "total"}
    phases = [e.phase for e in events]
    for phase in ("preparing", "extracting features", "training head", "evaluating", "saving"):
        assert phase in phases
    assert "fine-tuning" not in phases
    # Phases arrive in pipeline order.
    order = [PHASES.index(p) for p in phases]
    assert order == sorted(order)
    epoch_events = [e for e in events if e.phase == "training head" and e.epoch_end]
    assert [e.epoch for e in epoch_events] == [1, 2, 3]
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(epoch_events[-1].metrics)

    run_dir = result.run_dir
    for name in ("config.json", "labels.json", "split.csv", "history.csv", "events.jsonl",
                 "metrics.json", "model.keras", "versions.json"):
        assert (run_dir / name).is_file(), name
    history = pd.read_csv(run_dir / "history.csv")
    assert list(history["epoch"]) == [1, 2, 3]
    assert set(history["phase"]) == {"head"}
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test_accuracy"] == pytest.approx(result.test_accuracy)
    assert 0.0 <= metrics["unsure_threshold"] <= 1.0

    # The exported model takes raw RGB at the base's input size and returns probabilities.
    model = keras.saving.load_model(run_dir / "model.keras")
    raw = np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3)).astype("float32")
    probs = model.predict(raw, verbose=0)
    assert probs.shape == (2, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)

    listed = RunStore(studio_home).list()
    assert [r.run_id for r in listed] == [result.run_id]
    assert listed[0].status == "completed"


def test_exported_model_matches_head_on_cached_features(split_df: pd.DataFrame,
                                                        studio_home: Path) -> None:
    """Test accuracy from cached features equals the exported model's on the test photos."""
    from core.results.prediction import Predictor

    result = training.train(split_df, FAST, home=studio_home)
    test = split_df[split_df["split"] == "test"]
    predictions = Predictor.from_run(result.run_dir).predict(test["path"].tolist(), top_k=1)
    predicted = [p.top_k[0][0] for p in predictions]
    accuracy = float(np.mean(np.array(predicted) == test["label"].to_numpy()))
    assert accuracy == pytest.approx(result.test_accuracy)


def test_second_run_with_other_head_reuses_feature_cache(
        split_df: pd.DataFrame, studio_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from core.results.prediction import Predictor

    reused: list[bool] = []
    save_model = model_archive.save_model
    monkeypatch.setattr(model_archive, "save_model",
                        lambda *args: reused.append(save_model(*args)) or reused[-1])
    first = training.train(split_df, FAST, home=studio_home)
    second = training.train(
        split_df, replace(FAST, hidden_units=(16,), dropout=0.1, learning_rate=3e-3),
        home=studio_home,
    )
    # The second model.keras reuses the base's saved weights, and is the model trained.
    assert len(reused) == 2 and reused[1] is True
    test = split_df[split_df["split"] == "test"]
    predictions = Predictor.from_run(second.run_dir).predict(test["path"].tolist(), top_k=1)
    predicted = np.array([p.top_k[0][0] for p in predictions])
    assert np.mean(predicted == test["label"].to_numpy()) == pytest.approx(second.test_accuracy)
    first_metrics = json.loads((first.run_dir / "metrics.json").read_text())
    second_metrics = json.loads((second.run_dir / "metrics.json").read_text())
    assert first_metrics["feature_cache"]["misses"] == len(split_df)
    assert second_metrics["feature_cache"] == {"hits": len(split_df), "misses": 0}
    # Nothing to extract: the base never ran and no TFLite model was loaded or checked.
    assert first_metrics["feature_backend"] == "tflite"
    assert second_metrics["feature_backend"] == "cache"
    assert second.run_id != first.run_id


def test_same_seed_same_model(split_df: pd.DataFrame, studio_home: Path) -> None:
    # a builds its base; b reuses the one this process kept: the same model either way.
    features.forget_built_bases()
    a = training.train(split_df, FAST, home=studio_home)
    # Draws from every global generator between the runs change nothing.
    random.random(), np.random.rand(), tf.random.uniform([2]), keras.random.uniform([2])
    b = training.train(split_df, FAST, home=studio_home)
    ha = pd.read_csv(a.run_dir / "history.csv")
    hb = pd.read_csv(b.run_dir / "history.csv")
    for column in ("loss", "val_loss"):
        np.testing.assert_allclose(ha[column], hb[column], rtol=1e-5)
    assert a.test_accuracy == b.test_accuracy


def test_augmented_views_are_cached_per_view(split_df: pd.DataFrame, studio_home: Path) -> None:
    config = replace(FAST, augment=True, augment_views=2, epochs=1)
    result = training.train(split_df, config, home=studio_home)
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    # The usual head trains on the training photos' views only (a search's folds would take
    # the validation photos' too).
    n_train = int((split_df["split"] == "train").sum())
    assert metrics["feature_cache"]["misses"] == len(split_df) + 2 * n_train
    again = training.train(split_df, config, home=studio_home)
    again_metrics = json.loads((again.run_dir / "metrics.json").read_text())
    assert again_metrics["feature_cache"]["misses"] == 0


def test_augmentation_is_automatic_only_when_fine_tuning() -> None:
    assert TrainConfig().augment == "auto"
    assert not TrainConfig().augments
    assert TrainConfig(fine_tune_layers=10).augments
    assert TrainConfig(augment="on").augments
    assert not TrainConfig(augment="off", fine_tune_layers=10).augments
    # Runs saved before "auto" existed stored a bool; they read back as what they did.
    assert TrainConfig.from_dict({"augment": True}).augment == "on"
    assert TrainConfig.from_dict({"augment": False}).augment == "off"
    with pytest.raises(ConfigError, match="Augmentation must be one of 'auto', 'on', 'off'"):
        TrainConfig(augment="sometimes")


def test_default_frozen_run_computes_no_augmented_views(split_df: pd.DataFrame,
                                                        studio_home: Path) -> None:
    result = training.train(split_df, replace(FAST, augment="auto", epochs=1),
                            home=studio_home)
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["feature_cache"]["misses"] == len(split_df)


def test_fine_tuning_trains_top_layers_end_to_end(split_df: pd.DataFrame,
                                                  studio_home: Path) -> None:
    # The fine-tune rate is left unset: a tenth of the rate the head search chose (issue 27).
    config = replace(FAST, epochs=2, fine_tune_layers=10, fine_tune_epochs=1, head="search",
                     augment="auto", augment_views=1, search_seconds=1.0)
    events: list[ProgressEvent] = []
    result = training.train(split_df, config, home=studio_home, on_event=events.append)
    assert result.status == "completed"
    history = pd.read_csv(result.run_dir / "history.csv")
    assert list(history["phase"]) == ["head", "head", "fine-tune"]
    assert list(history["epoch"]) == [1, 2, 3]
    assert any(e.phase == "fine-tuning" for e in events)
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["fine_tuned"] is True
    assert metrics["fine_tune_averaged_epochs"] == 0  # one epoch: nothing to average
    chosen = metrics["head_search"]["chosen"]["learning_rate"]
    assert metrics["fine_tune_learning_rate"]["value"] == pytest.approx(chosen / 10)
    assert "chosen by the head search" in metrics["fine_tune_learning_rate"]["source"]
    # The search trained the head on the validation photos: the fine-tuning rows have no
    # "validation" figure (it read 100% on photos the model had learnt, issue 27).
    assert history.loc[history["phase"] == "fine-tune", "val_accuracy"].isna().all()
    assert 0.0 <= metrics["final_val_accuracy"] <= 1.0
    # "auto" augments when fine-tuning: one cached view per photo the search trains on
    # (training and validation photos).
    n_train_val = int(split_df["split"].isin(["train", "val"]).sum())
    assert metrics["feature_cache"]["misses"] == len(split_df) + n_train_val


def test_fine_tuning_ends_with_the_average_of_its_epochs(split_df: pd.DataFrame,
                                                          studio_home: Path) -> None:
    config = replace(FAST, epochs=1, fine_tune_layers=5, fine_tune_epochs=3,
                     fine_tune_learning_rate=1e-5, augment="off")
    result = training.train(split_df, config, home=studio_home)
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["fine_tune_averaged_epochs"] == 2  # epochs 2 and 3
    assert json.loads((result.run_dir / "config.json").read_text())["fine_tune_averaging"]


def test_weight_averaging_hooks_called_directly() -> None:
    inputs = keras.Input((3,))
    frozen = keras.layers.Dense(2, name="frozen", trainable=False)
    model = keras.Model(inputs, keras.layers.Dense(1, name="tuned")(frozen(inputs)))
    frozen_before = [np.array(w) for w in frozen.weights]
    tuned = model.get_layer("tuned")
    averaging = fine_tuning.WeightAveraging(first_epoch=1)
    averaging.set_model(model)
    averaging.on_train_begin()
    for epoch, value in enumerate([5.0, 1.0, 2.0, 6.0]):
        tuned.kernel.assign(np.full((2, 1), value, np.float32))
        averaging.on_epoch_end(epoch, {})
    averaging.on_train_end()
    np.testing.assert_allclose(np.array(tuned.kernel), np.full((2, 1), 3.0))  # mean of 1, 2, 6
    assert averaging.averaged == 3
    for before, after in zip(frozen_before, frozen.weights):
        np.testing.assert_array_equal(before, np.array(after))

    single = fine_tuning.WeightAveraging(first_epoch=1)
    single.set_model(model)
    single.on_train_begin()
    tuned.kernel.assign(np.full((2, 1), 7.0, np.float32))
    single.on_epoch_end(0, {})
    single.on_train_end()
    np.testing.assert_allclose(np.array(tuned.kernel), 7.0)  # one epoch: left as trained


def test_runs_saved_before_weight_averaging_read_back_without_it() -> None:
    old = TrainConfig().to_dict()
    del old["fine_tune_averaging"]
    assert TrainConfig.from_dict(old).fine_tune_averaging is False
    assert TrainConfig.from_dict(TrainConfig().to_dict()).fine_tune_averaging is True


def test_unfreeze_top_keeps_batchnorm_frozen() -> None:
    from core.features import backbones
    from core.features import weights as base_weights

    spec = backbones.get_spec("mobilenet_v2")
    base = backbones.build_base(spec, base_weights.resolve_weights(spec, None))
    fine_tuning.unfreeze_top(base, 20)
    inner = backbones.nested_base(base)
    trainable = [layer for layer in inner.layers if layer.trainable and layer.weights]
    assert trainable, "some top layers must be trainable"
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in trainable)
    assert all(layer in inner.layers[-20:] for layer in trainable)
    assert not any(layer.trainable for layer in inner.layers[:-20] if layer.weights)


def test_cancel_during_feature_extraction_leaves_readable_cancelled_run(
    split_df: pd.DataFrame, studio_home: Path
) -> None:
    seen: list[ProgressEvent] = []
    result = training.train(
        split_df, FAST, home=studio_home, on_event=seen.append,
        should_stop=lambda: any(e.phase == "extracting features" for e in seen),
    )
    assert result.status == "cancelled"
    run = RunStore(studio_home).load(result.run_id)
    assert run.status["status"] == "cancelled"
    assert [r.status for r in RunStore(studio_home).list()] == ["cancelled"]


def test_cancel_during_head_training_stops_within_one_batch(
    split_df: pd.DataFrame, studio_home: Path
) -> None:
    seen: list[ProgressEvent] = []
    config = replace(FAST, epochs=50, batch_size=2)
    result = training.train(
        split_df, config, home=studio_home, on_event=seen.append,
        should_stop=lambda: any(e.phase == "training head" and e.epoch == 2 for e in seen),
    )
    assert result.status == "cancelled"
    assert result.epochs_run == 2
    history = pd.read_csv(result.run_dir / "history.csv")
    assert len(history) == 2


def test_missing_weights_fail_before_work_and_leave_no_run(
    split_df: pd.DataFrame, studio_home: Path, tmp_path: Path
) -> None:
    config = replace(FAST, weights=str(tmp_path / "nowhere.h5"))
    events: list[ProgressEvent] = []
    with pytest.raises(WeightsUnavailableError, match="nowhere.h5"):
        training.train(split_df, config, home=studio_home, on_event=events.append)
    assert not any(e.phase == "extracting features" for e in events)
    # Checked before the run folder is made: a bad option leaves no failed run behind.
    assert RunStore(studio_home).list() == []


def test_balanced_class_weights() -> None:
    y = np.array([0, 0, 0, 1])
    weights = head_training.class_weight_for(y, 2, "balanced")
    assert weights == {0: pytest.approx(4 / 6), 1: pytest.approx(2.0)}
    assert head_training.class_weight_for(y, 2, "off") is None


def test_head_recipe_layers() -> None:
    head = head_training.build_head(32, 4, replace(FAST, hidden_units=(64, 32, 16), l2=1e-3))
    dense = [layer for layer in head.layers if isinstance(layer, keras.layers.Dense)]
    assert [d.units for d in dense] == [64, 32, 16, 4]
    assert dense[-1].dtype_policy.compute_dtype == "float32"
    assert head.output_shape == (None, 4)


def test_batch_sizes_fit_the_device() -> None:
    from core.device import DeviceInfo, GpuInfo

    cpu = DeviceInfo(kind="cpu", reason="test")
    assert training.batch_sizes(cpu, 224, FAST) == (8, 8)
    small_gpu = DeviceInfo(kind="gpu", gpus=(GpuInfo(device="/physical_device:GPU:0", name="G",
                                                     memory_mb=2048),))
    big = replace(FAST, batch_size=128)
    extract, fine_tune = training.batch_sizes(small_gpu, 224, big)
    assert extract >= 128, "inference takes at least the chosen batch"
    assert fine_tune < 128, "a batch that does not fit is lowered for fine-tuning"
    huge_gpu = DeviceInfo(kind="gpu", gpus=(GpuInfo(device="/physical_device:GPU:0", name="G",
                                                    memory_mb=80_000),))
    assert training.batch_sizes(huge_gpu, 224, big) == (256, 128)


def test_cancel_while_preparing_lands_before_the_base_is_built(
    split_df: pd.DataFrame, studio_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancel asked for during 'preparing' does not wait for the base or its conversion."""
    def no_base(*_a, **_k):
        raise AssertionError("the base was built after cancel was asked for")

    monkeypatch.setattr(features, "make_extractor", no_base)
    seen: list[ProgressEvent] = []
    result = training.train(split_df, FAST, home=studio_home, on_event=seen.append,
                            should_stop=lambda: any(e.phase == "preparing" for e in seen))
    assert result.status == "cancelled"
    assert not any(e.phase == "extracting features" for e in seen)
    assert RunStore(studio_home).load(result.run_id).status["status"] == "cancelled"
