"""Plotly figures of training and evaluation results, as pure functions of those results."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.runs.history import FINE_TUNE

TRAIN_COLOUR = "#1f77b4"
VAL_COLOUR = "#ff7f0e"
FINE_TUNE_FILL = "rgba(44, 160, 44, 0.10)"
SPLIT_ORDER = ("train", "val", "test")
SPLIT_NAMES = {"train": "Train", "val": "Validation", "test": "Test"}
METRIC_NAMES = {
    "loss": "Training loss", "accuracy": "Training accuracy",
    "val_loss": "Validation loss", "val_accuracy": "Validation accuracy",
    "seconds": "Seconds per epoch",
}
_BAR_METRICS = (("precision", "Precision", "#4c78a8"), ("recall", "Recall", "#f58518"),
                ("f1", "F1", "#54a24b"))


def chart_text(name: Any) -> str:
    """A name as plotly shows it literally: plotly reads <b>, <a href>, <br> and entities in
    axis labels, legends and hover text, so a class named <b>x</b> would turn bold."""
    return html.escape(str(name), quote=False)


def _empty(title: str, message: str) -> go.Figure:
    """A figure that says there is nothing to show yet, instead of empty axes."""
    fig = go.Figure()
    fig.update_layout(title=title, xaxis={"visible": False}, yaxis={"visible": False})
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper",
                       yref="paper", font={"size": 14})
    return fig


def _epochs(history: pd.DataFrame) -> np.ndarray:
    """The x values: the epoch column when it runs upward, else 1..N (phases restarted at 1)."""
    if "epoch" in history.columns:
        epochs = pd.to_numeric(history["epoch"], errors="coerce")
        if epochs.notna().all() and epochs.is_monotonic_increasing and epochs.is_unique:
            return epochs.to_numpy()
    return np.arange(1, len(history) + 1)


def fine_tune_start(history: pd.DataFrame) -> float | None:
    """First epoch (x value) whose phase is "fine-tune", or None."""
    if history.empty or "phase" not in history.columns:
        return None
    mask = (history["phase"].astype(str) == FINE_TUNE).to_numpy()
    return float(_epochs(history)[mask].min()) if mask.any() else None


def learning_curves(history_df: pd.DataFrame, fine_tune_start_epoch: int | None = None
                    ) -> go.Figure:
    """Loss and accuracy per epoch, training against validation, fine-tune phase shaded.

    Args:
        history_df: One row per epoch (core.runs.history.HISTORY_COLUMNS): epoch, phase, loss, accuracy,
            val_loss, val_accuracy; missing metric columns are left out.
        fine_tune_start_epoch: First fine-tune epoch; read from the phase column when None.

    Returns:
        Two subplots side by side (loss, accuracy), traces named "Training loss",
        "Validation loss", "Training accuracy", "Validation accuracy"; the fine-tune
        phase is a shaded region with a dashed start line and a "fine-tuning" annotation.
    """
    title = "Learning curves"
    if history_df is None or history_df.empty:
        return _empty(title, "No finished epoch yet.")
    x = _epochs(history_df)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Loss", "Accuracy"),
                        horizontal_spacing=0.12)
    for col, metric in ((1, "loss"), (2, "accuracy")):
        for key, colour, dash in ((metric, TRAIN_COLOUR, "solid"),
                                  (f"val_{metric}", VAL_COLOUR, "dash")):
            if key not in history_df.columns:
                continue
            y = pd.to_numeric(history_df[key], errors="coerce")
            if y.isna().all():
                continue
            fig.add_trace(go.Scatter(
                x=x, y=y, mode="lines+markers", name=METRIC_NAMES[key],
                line={"color": colour, "dash": dash}, legendgroup=key.split("_")[0],
                hovertemplate="epoch %{x}<br>" + METRIC_NAMES[key] + " %{y:.4f}<extra></extra>",
            ), row=1, col=col)
    start = fine_tune_start_epoch if fine_tune_start_epoch is not None else fine_tune_start(
        history_df)
    if start is not None:
        # Shade from half an epoch before the first fine-tune epoch to the end of the data.
        x0, x1 = float(start) - 0.5, float(np.max(x)) + 0.5
        for col in (1, 2):
            fig.add_vrect(x0=x0, x1=x1, fillcolor=FINE_TUNE_FILL, line_width=0, layer="below",
                          row=1, col=col)
            fig.add_vline(x=x0, line_dash="dot", line_color="green", row=1, col=col)
        fig.add_annotation(x=x0, y=1, xref="x2", yref="y2 domain", text="fine-tuning",
                           showarrow=False, xanchor="left", yanchor="bottom",
                           font={"color": "green"})
    fig.update_xaxes(title_text="Epoch", dtick=max(1, int(np.ceil(len(x) / 10))))
    fig.update_yaxes(title_text="Loss", row=1, col=1)
    # Accuracy lives in [0, 1]; a fixed range also keeps a flat curve from a silly axis.
    fig.update_yaxes(title_text="Accuracy", tickformat=".0%", range=[0, 1.02], row=1, col=2)
    fig.update_layout(title=title, hovermode="x unified",
                      legend={"orientation": "h", "y": -0.2})
    return fig


def confusion_heatmap(confusion: Any, labels: Sequence[str], normalize: bool = False
                      ) -> go.Figure:
    """The confusion matrix as an annotated heatmap, true classes down, predicted across.

    Args:
        confusion: Counts [C, C]; row = true class, column = predicted class.
        labels: The C class names.
        normalize: Colour and label cells by share of their row (the true class) instead of
            by count.

    Returns:
        A heatmap whose cells show the count (or row share); each cell's customdata is
        [true label, predicted label, count], so a page can map a clicked cell to the
        images behind it. Axes and hover text show the names escaped (chart_text).
    """
    counts = np.asarray(confusion, dtype=np.int64)
    labels = [str(label) for label in labels]
    shown = [chart_text(label) for label in labels]
    c = len(labels)
    if counts.shape != (c, c):
        raise ValueError(f"confusion must be {c}x{c} for {c} labels, got {counts.shape}")
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    z = shares if normalize else counts
    text = ([[f"{v:.0%}" for v in row] for row in shares] if normalize
            else [[str(v) for v in row] for row in counts])
    customdata = np.empty((c, c, 3), dtype=object)
    for i, true in enumerate(labels):
        for j, pred in enumerate(labels):
            customdata[i, j] = (true, pred, int(counts[i, j]))
    fig = go.Figure(go.Heatmap(
        z=z, x=shown, y=shown, text=text, texttemplate="%{text}", customdata=customdata,
        colorscale="Blues", zmin=0, zmax=1 if normalize else max(int(counts.max()), 1),
        colorbar={"title": "share of row" if normalize else "images"},
        hovertemplate=("true %{y}<br>predicted %{x}<br>"
                       "%{customdata[2]} images" + (" (%{z:.0%} of the class)" if normalize
                                                    else "") + "<extra></extra>"),
    ))
    fig.update_layout(title="Confusion matrix" + (" (share of each true class)" if normalize
                                                  else ""))
    fig.update_xaxes(title_text="Predicted", type="category", side="bottom")
    fig.update_yaxes(title_text="True", type="category", autorange="reversed")
    return fig


def per_class_bars(per_class_df: pd.DataFrame) -> go.Figure:
    """Precision, recall and F1 of each class as grouped bars (0 to 1).

    Args:
        per_class_df: EvalResult.per_class: class, precision, recall, f1, support.
    """
    if per_class_df is None or per_class_df.empty:
        return _empty("Per-class scores", "No classes to show.")
    classes = [chart_text(c) for c in per_class_df["class"].astype(str)]
    support = per_class_df["support"].tolist() if "support" in per_class_df else [None] * len(
        classes)
    fig = go.Figure()
    for key, name, colour in _BAR_METRICS:
        values = per_class_df[key].astype(float).to_numpy()
        fig.add_trace(go.Bar(
            x=classes, y=values, name=name, marker_color=colour, customdata=support,
            text=[f"{v:.2f}" for v in values], textposition="auto",
            hovertemplate="%{x}<br>" + name + " %{y:.3f}<br>%{customdata} test images"
                          "<extra></extra>",
        ))
    fig.update_layout(title="Per-class precision, recall and F1", barmode="group",
                      legend={"orientation": "h", "y": 1.1})
    fig.update_xaxes(title_text="Class", type="category")
    fig.update_yaxes(title_text="Score", range=[0, 1.1], tickformat=".1f")
    return fig


def _pairs(top_k: Any) -> list[tuple[str, float]]:
    pairs = []
    for item in top_k:
        if isinstance(item, Mapping):
            pairs.append((str(item["label"]), float(item["probability"])))
        else:
            label, probability = item
            pairs.append((str(label), float(probability)))
    return pairs


def top_k_bars(top_k: Any) -> go.Figure:
    """A prediction's top-k as horizontal bars, most probable on top, labelled in percent.

    Args:
        top_k: (label, probability) pairs or {"label", "probability"} dicts, best first
            (Prediction.top_k).
    """
    pairs = sorted(_pairs(top_k), key=lambda p: p[1], reverse=True)
    if not pairs:
        return _empty("Prediction", "No prediction to show.")
    labels = [chart_text(label) for label, _ in pairs]
    values = [probability for _, probability in pairs]
    colours = ["#2ca02c"] + ["#9ecae1"] * (len(pairs) - 1)
    fig = go.Figure(go.Bar(
        x=values, y=labels, orientation="h", marker_color=colours,
        text=[f"{v:.1%}" for v in values], textposition="auto",
        hovertemplate="%{y}: %{x:.1%}<extra></extra>",
    ))
    fig.update_layout(title="Top predictions", height=120 + 40 * len(pairs))
    # Category order follows the data; reversed so the first (most probable) is on top.
    fig.update_yaxes(type="category", autorange="reversed")
    fig.update_xaxes(title_text="Probability", range=[0, 1], tickformat=".0%")
    return fig


def class_distribution(counts: Mapping[str, int] | pd.Series,
                       splits: Mapping[str, Mapping[str, int]] | pd.DataFrame | None = None
                       ) -> go.Figure:
    """Images per class as bars, optionally stacked by split.

    Args:
        counts: Class name -> number of images (decides the class order).
        splits: Split name -> (class name -> images), or a DataFrame with classes as index
            and splits as columns (pd.crosstab(df.label, df.split)); None for one bar per class.
    """
    counts = pd.Series(counts, dtype="int64") if not isinstance(counts, pd.Series) else counts
    if counts.empty:
        return _empty("Images per class", "No images yet.")
    classes = [chart_text(c) for c in counts.index]
    fig = go.Figure()
    if splits is None:
        fig.add_trace(go.Bar(x=classes, y=counts.to_numpy(), name="Images",
                             text=counts.to_numpy(), textposition="outside",
                             hovertemplate="%{x}: %{y} images<extra></extra>"))
    else:
        table = splits if isinstance(splits, pd.DataFrame) else pd.DataFrame(splits)
        table = table.reindex([str(c) for c in counts.index]).fillna(0).astype(int)
        names = [s for s in SPLIT_ORDER if s in table.columns]
        names += [s for s in table.columns if s not in names]
        for split in names:
            fig.add_trace(go.Bar(
                x=classes, y=table[split].to_numpy(), name=SPLIT_NAMES.get(split, str(split)),
                text=table[split].to_numpy(), textposition="inside",
                hovertemplate="%{x}<br>" + SPLIT_NAMES.get(split, str(split))
                              + ": %{y} images<extra></extra>",
            ))
        fig.update_layout(barmode="stack")
    fig.update_layout(title="Images per class", legend={"orientation": "h", "y": 1.1})
    fig.update_xaxes(title_text="Class", type="category")
    fig.update_yaxes(title_text="Images")
    return fig


def compare_curves(histories: Mapping[str, pd.DataFrame], metric: str = "val_accuracy"
                   ) -> go.Figure:
    """One metric per epoch for several runs, one line per run.

    Args:
        histories: Run name (id) -> its history table.
        metric: A history column: loss, accuracy, val_loss, val_accuracy or seconds.

    Returns:
        A figure with one trace per run that has the metric; runs without it are named in
        an annotation.
    """
    if metric not in METRIC_NAMES:
        raise ValueError(f"metric must be one of {sorted(METRIC_NAMES)}, got {metric!r}")
    name = METRIC_NAMES[metric]
    title = f"{name} by run"
    if not histories:
        return _empty(title, "Choose runs to compare.")
    fig = go.Figure()
    missing = []
    for run, history in histories.items():
        if history is None or history.empty or metric not in history.columns:
            missing.append(str(run))
            continue
        y = pd.to_numeric(history[metric], errors="coerce")
        if y.isna().all():
            missing.append(str(run))
            continue
        phase = history["phase"].astype(str).to_numpy() if "phase" in history else None
        fig.add_trace(go.Scatter(
            x=_epochs(history), y=y, mode="lines+markers", name=chart_text(run),
            customdata=phase, hovertemplate=f"%{{fullData.name}}<br>epoch %{{x}}<br>{name} %{{y:.4f}}"
                          + ("<br>%{customdata}" if phase is not None else "")
                          + "<extra></extra>",
        ))
    if missing:
        fig.add_annotation(text="No " + name.lower() + " for: "
                           + ", ".join(chart_text(m) for m in missing),
                           showarrow=False, xref="paper", yref="paper", x=0, y=1.08,
                           xanchor="left")
    fig.update_layout(title=title, hovermode="x unified", legend={"orientation": "h", "y": -0.2})
    fig.update_xaxes(title_text="Epoch")
    fig.update_yaxes(title_text=name, tickformat=".0%" if "accuracy" in metric else None)
    return fig
