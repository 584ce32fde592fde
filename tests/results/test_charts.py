"""Chart builders: figure structure (traces, data, annotations), not pixels."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
import pytest

from core.results import charts


def history(n_head: int = 3, n_fine: int = 2) -> pd.DataFrame:
    n = n_head + n_fine
    return pd.DataFrame({
        "epoch": range(1, n + 1),
        "phase": ["head"] * n_head + ["fine-tune"] * n_fine,
        "loss": np.linspace(1.0, 0.2, n), "accuracy": np.linspace(0.5, 0.95, n),
        "val_loss": np.linspace(1.1, 0.3, n), "val_accuracy": np.linspace(0.45, 0.9, n),
        "seconds": [1.0] * n,
    })


def by_name(fig: go.Figure) -> dict[str, go.BaseTraceType]:
    return {trace.name: trace for trace in fig.data}


def assert_serialisable(fig: go.Figure) -> None:
    json.loads(pio.to_json(fig, validate=True))


def test_learning_curves_traces_and_fine_tune_marking() -> None:
    frame = history()
    fig = charts.learning_curves(frame)
    traces = by_name(fig)
    assert set(traces) == {"Training loss", "Validation loss", "Training accuracy",
                           "Validation accuracy"}
    assert traces["Training loss"].xaxis == "x" and traces["Training accuracy"].xaxis == "x2"
    np.testing.assert_allclose(traces["Validation accuracy"].y, frame["val_accuracy"])
    assert list(traces["Validation loss"].x) == [1, 2, 3, 4, 5]
    rects = [s for s in fig.layout.shapes if s.type == "rect"]
    lines = [s for s in fig.layout.shapes if s.type == "line"]
    assert len(rects) == 2 and len(lines) == 2  # one of each per subplot
    assert {r.x0 for r in rects} == {3.5} and {r.x1 for r in rects} == {5.5}
    texts = [a.text for a in fig.layout.annotations]
    assert "fine-tuning" in texts and "Loss" in texts and "Accuracy" in texts
    assert fig.layout.yaxis2.tickformat == ".0%"
    assert_serialisable(fig)


def test_learning_curves_without_fine_tune_or_data() -> None:
    fig = charts.learning_curves(history(4, 0))
    assert not fig.layout.shapes
    assert "fine-tuning" not in [a.text for a in fig.layout.annotations]
    explicit = charts.learning_curves(history(4, 0), fine_tune_start_epoch=3)
    assert {s.x0 for s in explicit.layout.shapes if s.type == "rect"} == {2.5}
    empty = charts.learning_curves(pd.DataFrame(columns=["epoch", "loss"]))
    assert not empty.data and "No finished epoch" in empty.layout.annotations[0].text
    # No validation columns: only the training traces.
    train_only = charts.learning_curves(history()[["epoch", "phase", "loss", "accuracy"]])
    assert set(by_name(train_only)) == {"Training loss", "Training accuracy"}


def test_learning_curves_with_epochs_restarting_per_phase() -> None:
    frame = history()
    frame["epoch"] = [1, 2, 3, 1, 2]
    fig = charts.learning_curves(frame)
    assert list(by_name(fig)["Training loss"].x) == [1, 2, 3, 4, 5]
    assert {s.x0 for s in fig.layout.shapes if s.type == "rect"} == {3.5}


def test_confusion_heatmap_counts_and_click_mapping() -> None:
    counts = np.array([[5, 1, 0], [2, 3, 0], [0, 0, 4]])
    labels = ["cat", "dog", "fish"]
    fig = charts.confusion_heatmap(counts, labels)
    (heat,) = fig.data
    assert heat.type == "heatmap"
    np.testing.assert_array_equal(np.asarray(heat.z), counts)
    assert list(heat.x) == labels and list(heat.y) == labels
    assert heat.text[1][0] == "2" and heat.texttemplate == "%{text}"
    assert tuple(heat.customdata[1][0]) == ("dog", "cat", 2)  # row true, column predicted
    assert fig.layout.xaxis.title.text == "Predicted" and fig.layout.yaxis.title.text == "True"
    assert fig.layout.yaxis.autorange == "reversed"  # first class on top, like a table
    assert_serialisable(fig)


def test_confusion_heatmap_normalised() -> None:
    counts = np.array([[3, 1], [0, 0]])
    fig = charts.confusion_heatmap(counts, ["a", "b"], normalize=True)
    (heat,) = fig.data
    np.testing.assert_allclose(np.asarray(heat.z), [[0.75, 0.25], [0, 0]])
    assert list(heat.text[0]) == ["75%", "25%"]
    assert tuple(heat.customdata[0][1]) == ("a", "b", 1)
    assert heat.zmax == 1
    with pytest.raises(ValueError, match="3x3"):
        charts.confusion_heatmap(counts, ["a", "b", "c"])


def test_per_class_bars_grouped() -> None:
    table = pd.DataFrame({"class": ["cat", "dog"], "precision": [0.5, 1.0],
                          "recall": [1.0, 0.25], "f1": [2 / 3, 0.4], "support": [3, 4]})
    fig = charts.per_class_bars(table)
    traces = by_name(fig)
    assert list(traces) == ["Precision", "Recall", "F1"]
    assert fig.layout.barmode == "group"
    assert list(traces["Recall"].y) == [1.0, 0.25] and list(traces["F1"].x) == ["cat", "dog"]
    assert list(traces["F1"].text) == ["0.67", "0.40"]
    assert list(traces["Precision"].customdata) == [3, 4]
    assert_serialisable(fig)


def test_top_k_bars_highest_on_top_in_percent() -> None:
    fig = charts.top_k_bars([("dog", 0.1), ("cat", 0.85), ("fish", 0.05)])
    (bar,) = fig.data
    assert bar.orientation == "h"
    assert list(bar.y) == ["cat", "dog", "fish"] and list(bar.x) == [0.85, 0.1, 0.05]
    assert list(bar.text) == ["85.0%", "10.0%", "5.0%"]
    assert fig.layout.yaxis.autorange == "reversed"  # first category drawn at the top
    assert fig.layout.xaxis.tickformat == ".0%"
    from_dicts = charts.top_k_bars([{"label": "a", "probability": 0.6},
                                    {"label": "b", "probability": 0.4}])
    assert list(from_dicts.data[0].y) == ["a", "b"]
    assert not charts.top_k_bars([]).data


def test_class_distribution_plain_and_stacked() -> None:
    counts = {"cat": 10, "dog": 7}
    plain = charts.class_distribution(counts)
    assert len(plain.data) == 1 and list(plain.data[0].y) == [10, 7]
    split_df = pd.DataFrame({"label": ["cat"] * 10 + ["dog"] * 7,
                             "split": ["train"] * 7 + ["val", "test", "test"] + ["train"] * 5
                             + ["val", "test"]})
    stacked = charts.class_distribution(split_df["label"].value_counts(),
                                        pd.crosstab(split_df["label"], split_df["split"]))
    traces = by_name(stacked)
    assert list(traces) == ["Train", "Validation", "Test"]  # fixed order, not alphabetical
    assert stacked.layout.barmode == "stack"
    assert list(traces["Train"].y) == [7, 5] and list(traces["Test"].y) == [2, 1]
    from_mapping = charts.class_distribution(counts, {"train": {"cat": 8}, "val": {"dog": 7}})
    assert list(by_name(from_mapping)["Train"].y) == [8, 0]
    assert not charts.class_distribution({}).data
    assert_serialisable(stacked)


def test_compare_curves_one_line_per_run() -> None:
    a, b = history(3, 0), history(2, 2)
    fig = charts.compare_curves({"run-a": a, "run-b": b, "run-c": pd.DataFrame()})
    traces = by_name(fig)
    assert list(traces) == ["run-a", "run-b"]
    np.testing.assert_allclose(traces["run-b"].y, b["val_accuracy"])
    assert list(traces["run-b"].customdata) == ["head", "head", "fine-tune", "fine-tune"]
    assert "run-c" in fig.layout.annotations[0].text
    assert fig.layout.yaxis.tickformat == ".0%"
    loss = charts.compare_curves({"run-a": a}, metric="val_loss")
    assert loss.layout.yaxis.title.text == "Validation loss"
    with pytest.raises(ValueError, match="metric must be one of"):
        charts.compare_curves({"run-a": a}, metric="val_acc")
    assert not charts.compare_curves({}).data
    assert_serialisable(fig)
