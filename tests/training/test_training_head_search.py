"""A training run with the searched head (the default) and with the manual head."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.config import SplitConfig, TrainConfig
from core.data import datasets, splits
from core.features import backbones
from core.features import extraction as features
from core.features import weights as base_weights
from core.progress import ProgressEvent
from core.runs import evaluation
from core.training import head as head_training
from core.training import head_search
from core.training import pipeline as training

FAST = TrainConfig(backbone="mobilenet_v2", weights=None, epochs=3, batch_size=8,
                   early_stopping_patience=0, head="search")


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
    return splits.split(dataset.index, SplitConfig(seed=1))


def _features_of(rows: pd.DataFrame, config: TrainConfig, home: Path) -> np.ndarray:
    """The cached features of some photos (view 0), as the run computed them."""
    spec = backbones.get_spec(config.backbone)
    resolved = base_weights.resolve_weights(spec, config.weights, seed=config.seed)
    extractor = features.make_extractor(spec, resolved, home=home, defer_backend=True)
    matrices, _ = features.extract_views(extractor, rows["path"].tolist(),
                                         rows["sha256"].tolist(), home=home)
    return matrices[0]


def test_search_and_refit_never_see_test_rows_and_the_threshold_is_out_of_fold(
        split_df: pd.DataFrame, studio_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fitted: list[np.ndarray] = []
    real_fit = head_training.fit_head

    def recording_fit(head, x_train, y_train, x_val, y_val, **kwargs):
        fitted.extend([x_train] + ([x_val] if x_val is not None else []))
        return real_fit(head, x_train, y_train, x_val, y_val, **kwargs)

    searches: list[head_search.SearchResult] = []
    real_search = head_search.search

    def recording_search(*args, **kwargs):
        searches.append(real_search(*args, **kwargs))
        return searches[-1]

    thresholds: list[tuple[np.ndarray, np.ndarray]] = []
    real_threshold = evaluation.choose_unsure_threshold

    def recording_threshold(probs, labels, **kwargs):
        thresholds.append((np.asarray(probs), np.asarray(labels)))
        return real_threshold(probs, labels, **kwargs)

    monkeypatch.setattr(head_training, "fit_head", recording_fit)
    monkeypatch.setattr(head_search, "search", recording_search)
    monkeypatch.setattr(evaluation, "choose_unsure_threshold", recording_threshold)
    result = training.train(split_df, FAST, home=studio_home)
    assert result.status == "completed"

    seen = {row.tobytes() for matrix in fitted for row in np.asarray(matrix, np.float32)}
    test_rows = _features_of(split_df[split_df["split"] == "test"], FAST, studio_home)
    train_rows = _features_of(split_df[split_df["split"] == "train"], FAST, studio_home)
    assert not any(row.tobytes() in seen for row in test_rows)
    assert all(row.tobytes() in seen for row in train_rows)  # the check can see rows

    (search,) = searches
    n_train_val = int(split_df["split"].isin(["train", "val"]).sum())
    assert search.fold_of_row.shape == (n_train_val,)
    (probs, labels), = thresholds
    rows = search.oof_rows()
    np.testing.assert_array_equal(probs, search.oof_probs[rows])
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["unsure_threshold"] == real_threshold(probs, labels)
    # Every row of every fold the chosen setting reached (all of them unless the budget or
    # a slow machine cut it short), never the test rows.
    held = np.isin(search.fold_of_row, list(search.chosen.fold_probs))
    np.testing.assert_array_equal(rows, np.flatnonzero(held))
    assert len(labels) == len(rows)

    # What the run keeps: the summary, the table, and the refit's epochs as history.
    assert result.head_search == search.summary()
    record = json.loads((result.run_dir / "head_search.json").read_text())
    assert record == metrics["head_search"]
    assert record["tried"] == len(record["table"]) >= 1
    history = pd.read_csv(result.run_dir / "history.csv")
    assert len(history) == search.refit_epochs == result.epochs_run == 3
    curve = search.cv_curve()
    assert history["val_accuracy"].tolist() == pytest.approx(
        [point["val_accuracy"] for point in curve])


def test_manual_head_trains_as_before_without_a_search(
        split_df: pd.DataFrame, studio_home: Path) -> None:
    events: list[ProgressEvent] = []
    manual = replace(FAST, head="manual")
    result = training.train(split_df, manual, home=studio_home, on_event=events.append)
    again = training.train(split_df, manual, home=studio_home)
    assert result.status == "completed" and result.head_search is None
    assert not any(e.phase == head_search.PHASE for e in events)
    assert not (result.run_dir / "head_search.json").exists()
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["head_search"] is None
    assert set(result.seconds) == {"features", "training", "familiarity", "total"}
    # Validation held out, as before: the history's validation is the val split's.
    history = pd.read_csv(result.run_dir / "history.csv")
    other = pd.read_csv(again.run_dir / "history.csv")
    assert list(history["epoch"]) == [1, 2, 3]
    pd.testing.assert_frame_equal(history.drop(columns="seconds"),
                                  other.drop(columns="seconds"))
    assert result.to_dict()["head_search"] is None


def test_cancel_during_the_search_keeps_its_best_so_far(
        split_df: pd.DataFrame, studio_home: Path) -> None:
    asked = []

    def on_event(event: ProgressEvent) -> None:
        if event.phase == head_search.PHASE and event.metrics.get("fold_fits", 0) >= 1:
            asked.append(True)

    result = training.train(split_df, FAST, home=studio_home, on_event=on_event,
                            should_stop=lambda: bool(asked))
    assert result.status == "cancelled"
    record = json.loads((result.run_dir / "head_search.json").read_text())
    assert record["stopped"] == "cancelled" and record["tried"] >= 1
    assert result.head_search == {k: record[k] for k in ("tried", "chosen", "cv_accuracy")}


def test_folds_keep_the_split_groups_of_an_audit_together(
        small_dataset: Path, studio_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dataset = datasets.ingest(small_dataset)
    paths = sorted(dataset.index["path"])
    near = {paths[0]: "near/0", paths[1]: "near/0", paths[2]: "near/0"}  # one class folder
    split_df = splits.split(dataset.index, SplitConfig(seed=1), groups=near)
    seen: list[head_search.SearchResult] = []
    kwargs_seen: list[dict] = []
    real_search = head_search.search

    def recording_search(*args, **kwargs):
        kwargs_seen.append(kwargs)
        seen.append(real_search(*args, **kwargs))
        return seen[-1]

    monkeypatch.setattr(head_search, "search", recording_search)
    training.train(split_df, FAST, home=studio_home)
    # Rows as the search gets them: the training photos, then the validation photos.
    searched = pd.concat([split_df[split_df["split"] == name] for name in ("train", "val")])
    groups = kwargs_seen[0]["groups"]
    np.testing.assert_array_equal(groups, searched["group"].astype(str).to_numpy())
    in_group = np.isin(searched["path"].to_numpy(), list(near))
    assert in_group.sum() == 3  # the group went to training or validation as one
    assert len(set(seen[0].fold_of_row[in_group])) <= 1
