"""Evaluate page: headline numbers, per-class table, clickable confusion matrix, photo gallery,
learning curves, model summary and downloads of one run."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core.audit.choices import audit_text
from core.errors import AppError
from core.results import charts, report
from core.runs import evaluation, head_choice, interval
from ui import explain as ui_explain
from ui import resources, state
from ui.text import md

if TYPE_CHECKING:
    from core.runs.evaluation import EvalResult
    from core.runs.store import Run

GALLERY_COLUMNS = 6
GALLERY_PAGE_SIZE = 24
CELL_PHOTOS_SHOWN = 12
CELL_COLUMNS = 3
GALLERY_FILTERS = ("Mistakes first", "Only mistakes", "Only correct")


# ----------------------------------------------------------------------------- numbers


def headline(run: Run, result: EvalResult) -> None:
    """Test accuracy with its interval, informative top-k, test photos, a held-out estimate."""
    cols = st.columns(4)
    right = int(result.predictions["correct"].sum())
    tested = interval.accuracy(result.accuracy, result.num_samples)
    cols[0].metric("Test accuracy", f"{result.accuracy:.0%}",
                   help=f"{right} of {result.num_samples} test photos named correctly.")
    if tested is not None:
        cols[0].caption(f"95% interval: {tested.low:.0%}-{tested.high:.0%}")
    for col, k in zip(cols[1:2], evaluation.informative_top_k(result), strict=False):
        col.metric(f"Top-{k} accuracy", f"{result.top_k_accuracy[k]:.1%}",
                   help=f"The true class is among the model's {k} best guesses.")
    cols[2].metric("Test photos", f"{result.num_samples:,}")
    label, value, tip = run.held_out_estimate()
    cols[3].metric(label, "–" if value is None else f"{value:.1%}", help=tip)
    if tested is not None and tested.warning():
        st.warning(tested.warning(), icon=":material/straighten:")


def per_class_section(result: EvalResult) -> None:
    """Precision, recall, F1 and support of every class, as a table and bars; CSV download."""
    table, chart = st.columns([3, 2])
    table.dataframe(result.per_class, hide_index=True, width="stretch", column_config={
        "class": "Class",
        "precision": st.column_config.ProgressColumn(
            "Precision", format="percent", min_value=0.0, max_value=1.0,
            help="When the model says this class, how often it is right."),
        "recall": st.column_config.ProgressColumn(
            "Recall", format="percent", min_value=0.0, max_value=1.0,
            help="Of the test photos of this class, how many the model found."),
        "f1": st.column_config.NumberColumn("F1", format="%.3f",
                                            help="Harmonic mean of precision and recall."),
        "support": st.column_config.NumberColumn("Test photos", help="Support."),
    })
    table.download_button("Per-class table (CSV)", report.per_class_csv(result),
                           file_name="per_class.csv", mime="text/csv",
                           icon=":material/table:", on_click="ignore")
    chart.plotly_chart(charts.per_class_bars(result.per_class), width="stretch")


# ----------------------------------------------------------------------------- confusion


def most_confused(result: EvalResult) -> tuple[str, str]:
    """The (true, predicted) cell with the most mistakes, else the first diagonal cell."""
    counts = np.array(result.confusion, dtype=np.int64)
    np.fill_diagonal(counts, -1)
    i, j = np.unravel_index(int(np.argmax(counts)), counts.shape)
    if counts[i, j] <= 0:
        return result.labels[0], result.labels[0]
    return result.labels[int(i)], result.labels[int(j)]


def clickable_confusion(result: EvalResult, normalize: bool) -> go.Figure:
    """The confusion heatmap with one invisible marker per cell that can be clicked.

    Plotly heatmaps send no selection to Streamlit (streamlit/streamlit#8760), so a scatter
    trace of transparent squares on the cell centres carries [true, predicted, count] as
    customdata and receives the clicks.
    """
    fig = charts.confusion_heatmap(result.confusion, result.labels, normalize=normalize)
    trues, preds, custom = [], [], []
    shown = [charts.chart_text(label) for label in result.labels]  # the heatmap's categories
    for i, true in enumerate(result.labels):
        for j, predicted in enumerate(result.labels):
            trues.append(shown[i])
            preds.append(shown[j])
            custom.append([true, predicted, int(result.confusion[i, j])])
    size = max(12, min(60, 360 // max(1, len(result.labels))))
    fig.add_trace(go.Scatter(
        x=preds, y=trues, customdata=custom, mode="markers", showlegend=False,
        marker={"symbol": "square", "size": size, "color": "rgba(0,0,0,0)"},
        hovertemplate="true %{y}<br>predicted %{x}<br>"
                      "%{customdata[2]} images<br>click to see them<extra></extra>",
        selected={"marker": {"opacity": 1}}, unselected={"marker": {"opacity": 1}},
    ))
    fig.update_layout(clickmode="event+select", dragmode=False,
                      height=min(900, max(440, 160 + 56 * len(result.labels))))
    return fig


def _cell_clicked() -> None:
    """on_select of the confusion chart: the clicked cell drives the two select boxes."""
    event = st.session_state.get(state.EVAL_CONFUSION)
    points = (event or {}).get("selection", {}).get("points", []) if event else []
    for point in points:
        custom = point.get("customdata")
        true, predicted = (custom[0], custom[1]) if custom else (point.get("y"), point.get("x"))
        if true is not None and predicted is not None:
            st.session_state[state.EVAL_TRUE] = str(true)
            st.session_state[state.EVAL_PREDICTED] = str(predicted)
            return


def confusion_section(result: EvalResult, run_dir: Path | None = None) -> None:
    """The heatmap (click a cell), a true/predicted select pair, and the photos of that cell.

    With run_dir, each mistake gets a "Why?" button showing its heatmaps.
    """
    chart, photos = st.columns([3, 2])
    with chart:
        normalize = st.toggle("Show shares of each true class instead of counts",
                              key=state.EVAL_NORMALIZE)
        st.plotly_chart(clickable_confusion(result, normalize), width="stretch",
                        key=state.EVAL_CONFUSION, on_select=_cell_clicked,
                        selection_mode="points")
    labels = list(result.labels)
    true0, predicted0 = most_confused(result)
    for key, value in ((state.EVAL_TRUE, true0), (state.EVAL_PREDICTED, predicted0)):
        if st.session_state.get(key) not in labels:
            st.session_state[key] = value
    with photos:
        st.caption("Click a cell to see its photos, or choose the pair here:")
        left, right = st.columns(2)
        true = left.selectbox("True class", labels, key=state.EVAL_TRUE)
        predicted = right.selectbox("Predicted as", labels, key=state.EVAL_PREDICTED)
        rows = result.predictions[(result.predictions["true"] == true)
                                  & (result.predictions["predicted"] == predicted)]
        rows = rows.sort_values("confidence", ascending=False)
        what = "correctly named" if true == predicted else f"taken for **{md(predicted)}**"
        st.markdown(f"**{len(rows)}** test photo{'s' if len(rows) != 1 else ''} of **{md(true)}** "
                    f"{what}" + (f" (the first {CELL_PHOTOS_SHOWN} shown)"
                                 if len(rows) > CELL_PHOTOS_SHOWN else "") + ".")
        photo_grid(rows.head(CELL_PHOTOS_SHOWN), columns=CELL_COLUMNS, key="cell",
                   run_dir=run_dir)


# ----------------------------------------------------------------------------- gallery


def square(pixels: np.ndarray) -> np.ndarray:
    """The centre square of an image, so gallery tiles line up whatever the photos' shapes."""
    height, width = pixels.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return pixels[top:top + side, left:left + side]


def photo_tile(row: Any, key: str = "tile", run_dir: Path | None = None) -> None:
    """One test photo captioned with predicted and true class; green when right, red if not.

    With run_dir, a mistake gets a "Why?" button (key: unique per tile on the page).
    """
    path = str(row.path)
    try:
        pixels = resources.thumbnail(path, resources.THUMBNAIL_SIZE, resources.file_stamp(path))
    except FileNotFoundError:
        st.caption(f"{md(Path(path).name)}: no longer on the server (its dataset was deleted "
                   f"or moved); predicted {md(row.predicted)} · true {md(row.true)}")
    except (AppError, OSError) as exc:
        st.caption(f"{md(Path(path).name)}: cannot show ({md(exc)})")
    else:
        st.image(square(pixels), caption=f"predicted {md(row.predicted)} · true {md(row.true)}",
                 width="stretch")
    confidence = f"{float(row.confidence):.0%}"
    if bool(row.correct):
        st.markdown(f":green-badge[:material/check: {md(row.predicted)}] {confidence}")
    else:
        st.markdown(f":red-badge[:material/close: {md(row.predicted)}] {confidence}  \n"
                    f"true: **{md(row.true)}**")
        if run_dir is not None:
            ui_explain.why_button(run_dir, row, key)


def photo_grid(rows: pd.DataFrame, columns: int = GALLERY_COLUMNS, *, key: str = "grid",
               run_dir: Path | None = None) -> None:
    """Photos in rows of `columns` tiles (key: unique per grid on the page)."""
    records = list(rows.itertuples(index=False))
    for start in range(0, len(records), columns):
        cols = st.columns(columns)
        for number, (col, row) in enumerate(
                zip(cols, records[start:start + columns], strict=False), start=start):
            with col:
                photo_tile(row, f"{key}-{number}-{row.path}", run_dir)


def gallery_section(result: EvalResult, run_dir: Path | None = None) -> None:
    """Every test photo, mistakes first (or only mistakes, or only correct ones), by pages.

    With run_dir, each mistake gets a "Why?" button showing its heatmaps.
    """
    predictions = result.predictions
    wrong = int((~predictions["correct"]).sum())
    choice = st.segmented_control("Show", GALLERY_FILTERS, default=GALLERY_FILTERS[0],
                                  key=state.EVAL_GALLERY_FILTER) or GALLERY_FILTERS[0]
    if choice == "Only mistakes":
        rows = predictions[~predictions["correct"]]
    elif choice == "Only correct":
        rows = predictions[predictions["correct"]]
    else:
        rows = predictions
    rows = rows.assign(_order=rows["correct"].astype(int)).sort_values(
        ["_order", "confidence"], ascending=[True, False], kind="stable")
    st.caption(f"{len(predictions):,} test photos, {wrong:,} of them wrong. Green: the model "
               "was right; red: it was wrong (the true class is written below).")
    if rows.empty:
        st.info("No photos to show here.", icon=":material/info:")
        return
    pages = math.ceil(len(rows) / GALLERY_PAGE_SIZE)
    page = 1
    if pages > 1:
        page = st.pagination(pages, key=state.EVAL_GALLERY_PAGE)
    start = (page - 1) * GALLERY_PAGE_SIZE
    photo_grid(rows.iloc[start:start + GALLERY_PAGE_SIZE], key="gallery", run_dir=run_dir)


# ----------------------------------------------------------------------------- model


def averaging_note(run: Run) -> None:
    """Says that a fine-tuned model averages epochs, so no point of the curves is the model."""
    averaged = run.averaged_epochs
    if averaged < 2:
        return
    final = run.metrics.get("final_val_accuracy")
    measured = f"; on the validation photos it scores {final:.1%}" if final is not None else ""
    st.caption(f"The saved model averages the weights at the end of the last {averaged} "
               "fine-tuning epochs, which is steadier than any one of them, so no single point "
               f"above is that model{measured}.")


def head_choice_section(run: Run) -> None:
    """How the head was chosen: the search's settings and their cross-validated accuracy."""
    record = run.metrics.get("head_search")
    config = run.config
    usual = None if config is None else {
        "l2": config.l2, "dropout": config.dropout, "learning_rate": config.learning_rate,
        "label_smoothing": config.label_smoothing, "hidden_units": list(config.hidden_units)}
    st.markdown(md(head_choice.plain_text(record, usual)))
    table = head_choice.record_table(record)
    if table.empty:
        return
    details = st.expander("Details: how the search works and every setting it tried")
    details.markdown(md(head_choice.record_text(record)))
    details.dataframe(table, hide_index=True, width="stretch", column_config={
        "CV accuracy": st.column_config.NumberColumn(
            format="percent", help="Mean accuracy on the held-out folds."),
        "Spread (±)": st.column_config.NumberColumn(
            format="percent", help="Standard deviation over the folds."),
        "Folds": st.column_config.NumberColumn(
            help="Folds the setting was measured on: the best went on to more folds."),
    })


def _fine_tuned_text(run: Run) -> str:
    if not run.metrics.get("fine_tuned"):
        return "no"
    if run.averaged_epochs > 1:
        return f"yes, the average of the weights of {run.averaged_epochs} epochs"
    return "yes"


def model_section(run: Run) -> None:
    """Parameters (total, trainable, non-trainable), base facts and training time."""
    params = run.metrics.get("params") or {}
    cols = st.columns(4)
    for col, (key, label, tip) in zip(cols, (
        ("total", "Total parameters", "Every weight of the exported model."),
        ("trainable", "Trainable parameters", "Weights that training changed (the head, and "
                                              "the top of the base when fine-tuned)."),
        ("non_trainable", "Non-trainable parameters", "Frozen weights of the pretrained base."),
    ), strict=False):
        value = params.get(key)
        col.metric(label, "–" if value is None else f"{int(value):,}", help=tip)
    size = run.model_path.stat().st_size / 1e6 if run.model_path else None
    cols[3].metric("Model file", "–" if size is None else f"{size:.1f} MB")
    seconds = run.metrics.get("seconds") or {}
    config = run.config
    facts = {
        "Base": run.backbone, "Input size": f"{run.input_size} px" if run.input_size else None,
        "Base depth (layers)": run.metrics.get("depth"),
        "Hidden layers": (", ".join(map(str, config.hidden_units)) or "none") if config else None,
        "Training mode": run.training_mode,
        "Fine-tuned": _fine_tuned_text(run),
        "Fine-tune learning rate": run.fine_tune_rate_text,
        "Epochs": run.metrics.get("epochs_run"),
        "Training time": f"{seconds['total']:.0f} s" if seconds.get("total") else None,
        "Feature extraction": _BACKEND_NAMES.get(run.metrics.get("feature_backend"),
                                                 run.metrics.get("feature_backend")),
        "Unsure below": f"{run.unsure_threshold:.0%} top probability",
        "Dataset": run.dataset.get("name"),
        "Dataset audit": audit_text(run.dataset),
    }
    st.dataframe(pd.DataFrame({"": list(facts), "Value": [
        "–" if v is None else str(v) for v in facts.values()]}), hide_index=True,
        width="stretch")


_BACKEND_NAMES = {
    "tflite": "TensorFlow Lite (XNNPACK)",
    "keras": "Keras",
    "cache": "all from the feature cache",
}


def downloads(run: Run, result: EvalResult) -> None:
    """The model with its labels (zip, made when clicked), and the report for other people."""
    cols = st.columns(2)
    name = run.run_id
    if run.usable:  # completed, with a whole model and labels
        cols[0].download_button(
            "Model (.keras) with labels.json (zip)", lambda: report.model_zip(run),
            file_name=f"{name}-model.zip", mime="application/zip", on_click="ignore",
            icon=":material/download:", type="primary",
            help="model.keras takes a raw RGB photo and returns one probability per class; "
                 "labels.json names the classes; README.txt shows how to use them.")
    cols[1].download_button(
        "One-page report (HTML)", lambda: report.report_html(run, result).encode("utf-8"),
        file_name=f"{name}-report.html", mime="text/html", on_click="ignore",
        icon=":material/description:",
        help="Accuracy, class-by-class results and common mistakes in plain words, for "
             "colleagues who don't write code.")
