"""Real-weights tier: MobileNetV2 ImageNet weights on real flower photos."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import require_asset

from core.config import SplitConfig, TrainConfig
from core.data import datasets, splits
from core.results.prediction import Predictor
from core.training import pipeline as training

pytestmark = [pytest.mark.real, pytest.mark.slow]


def test_mobilenet_v2_learns_flowers_tiny(keras_home_with_mobilenet: Path,
                                          studio_home: Path) -> None:
    data = require_asset("datasets/flower_photos_tiny")
    dataset = datasets.ingest(data, home=studio_home)
    assert dataset.report.usable
    split_df = splits.split(dataset.index, SplitConfig(seed=0))

    result = training.train(split_df, TrainConfig(), home=studio_home)

    assert result.status == "completed"
    assert result.test_accuracy >= 0.8, result.evaluation.per_class
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    # Real weights never fall back silently to random ones.
    assert "random" not in json.loads((result.run_dir / "config.json").read_text()).values()
    assert metrics["feature_cache"]["misses"] > 0

    # The exported model agrees with the evaluation on the test photos.
    test = split_df[split_df["split"] == "test"]
    predictions = Predictor.from_run(result.run_dir).predict(test["path"].tolist(), top_k=3)
    hits = sum(p.top_k[0][0] == label for p, label in zip(predictions, test["label"]))
    assert hits / len(test) == pytest.approx(result.test_accuracy, abs=1e-9)
