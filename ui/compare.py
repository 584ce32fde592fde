"""Compare page: the table of all runs, overlaid curves, and deleting a run with confirmation."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import streamlit as st

from core.errors import AppError
from core.results import charts
from core.runs.store import RunSummary
from core.status import BROKEN, FAILED, INTERRUPTED
from ui import links, roles, state
from ui import runs as ui_runs
from ui.text import md

METRICS = {"val_accuracy": "Validation accuracy", "accuracy": "Training accuracy",
           "val_loss": "Validation loss", "loss": "Training loss",
           "seconds": "Seconds per epoch"}
CURVES_SHOWN_FIRST = 3
PROBLEM_STATUSES = (BROKEN, INTERRUPTED, FAILED)


def table(summaries: Sequence[RunSummary]) -> pd.DataFrame:
    """One row per run: its name, then the test accuracy with its interval, then the rest.

    Empty cells stay empty (never "None"). The validation accuracy is shown only where the
    validation photos were held out (a manual head); the search trained on them, and its
    runs show the cross-validated accuracy instead.
    """
    names = ui_runs.run_names(summaries)
    frame = pd.DataFrame([{
        "Run": names[s.run_id], "Test accuracy (95% interval)": s.test_accuracy_text,
        "Status": s.status, "Dataset": s.dataset, "Base": s.backbone, "Training": s.training_mode,
        "Created": s.created, "CV accuracy": s.cv_accuracy,
        "Best val. accuracy": s.best_val_accuracy if s.cv_accuracy is None else None,
        "Epochs": s.epochs_run, "Best epoch": s.best_epoch, "Parameters": s.total_params,
        "Depth": s.depth, "Model size (MB)": s.model_size_mb,
        "Avg s / epoch": s.seconds_per_epoch, "Problem": s.error, "Id": s.run_id,
        links.OPEN_COLUMN: links.evaluate_link(s),
    } for s in summaries])
    return blank_empty_text(frame)


TEXT_COLUMNS = ("Run", "Test accuracy (95% interval)", "Status", "Dataset", "Base",
                "Problem")


def blank_empty_text(frame: pd.DataFrame) -> pd.DataFrame:
    """Text columns with "" for a missing value: a table would show it as "None"."""
    for column in TEXT_COLUMNS:
        if column in frame.columns:
            frame[column] = frame[column].map(lambda v: "" if v is None else v)
    return frame


COLUMN_CONFIG = {
    "Created": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm"),
    "Parameters": st.column_config.NumberColumn(format="localized"),
    "Model size (MB)": st.column_config.NumberColumn(format="%.1f"),
    "Avg s / epoch": st.column_config.NumberColumn(format="%.2f"),
    "Best epoch": st.column_config.NumberColumn(
        help="Epoch with the best validation accuracy."),
    "Best val. accuracy": st.column_config.NumberColumn(
        format="percent", help="Best accuracy on the held-out validation photos (empty when "
                               "the head search trained on them: see CV accuracy)."),
    "CV accuracy": st.column_config.NumberColumn(
        format="percent", help="Cross-validated accuracy of the searched head (empty: the "
                               "head was set by hand)."),
    "Test accuracy (95% interval)": st.column_config.TextColumn(
        help="Share of the test photos named correctly; in brackets how many photos, and "
             "the range the true accuracy lies in with 95% confidence (Wilson interval)."),
    "Problem": st.column_config.TextColumn(width="large"),
    links.OPEN_COLUMN: links.open_column(),
}


def runs_table(summaries: Sequence[RunSummary]) -> None:
    """All runs, and a warning naming each failed, interrupted or broken one with its reason."""
    st.dataframe(table(summaries), hide_index=True, width="stretch",
                 column_config=COLUMN_CONFIG)
    troubled = [s for s in summaries if s.status in PROBLEM_STATUSES]
    if troubled:
        lines = "\n".join(f"- **{md(s.run_id)}** ({md(s.status)}): "
                          f"{md(s.error or 'no reason recorded')}"
                          for s in troubled)
        st.warning(f"{len(troubled)} run{'s' if len(troubled) != 1 else ''} did not finish "
                   f"properly; you can delete them below.\n\n{lines}",
                   icon=":material/warning:")


def curves(summaries: Sequence[RunSummary]) -> None:
    """Runs chosen to overlay one metric per epoch."""
    with_history = [s for s in summaries if s.epochs_run > 0]
    if not with_history:
        st.caption("No run has a finished epoch yet, so there are no curves to compare.")
        return
    labels = ui_runs.run_names(with_history)
    chosen = st.multiselect("Runs to overlay", list(labels), format_func=labels.get,
                            default=list(labels)[:CURVES_SHOWN_FIRST], key=state.COMPARE_RUNS)
    metric = st.segmented_control("Metric", list(METRICS), format_func=METRICS.get,
                                  default="val_accuracy", key=state.COMPARE_METRIC)
    histories = {}
    for run_id in chosen:
        summary = next(s for s in with_history if s.run_id == run_id)
        try:
            histories[labels[run_id]] = ui_runs.load(summary).history
        except AppError as exc:
            st.warning(f"Cannot read the history of {md(run_id)}: {md(exc)}", icon=":material/warning:")
    st.plotly_chart(charts.compare_curves(histories, metric or "val_accuracy"), width="stretch")


def delete_run(run_id: str) -> None:
    """on_click of the dialog's confirm button: delete (admins only), remember the outcome."""
    try:
        roles.require("delete runs")
        ui_runs.store().delete(run_id)
    except AppError as exc:
        st.session_state[state.COMPARE_DELETED] = ("error", md(exc))
    else:
        st.session_state[state.COMPARE_DELETED] = ("done", f"Deleted run {md(run_id)}.")


@st.dialog("Delete this run?")
def _confirm(summary: RunSummary) -> None:
    if state.COMPARE_DELETED in st.session_state:
        st.rerun()  # deleted (or refused): close the dialog and redraw the page
    st.markdown(f"**{md(ui_runs.run_label(summary))}**  \nStatus: {md(summary.status)}. Its model, "
                "history and results are removed from the disk. This cannot be undone.")
    yes, no = st.columns(2)
    yes.button("Delete it", type="primary", key=state.COMPARE_DELETE_YES, on_click=delete_run,
               args=(summary.run_id,), icon=":material/delete:")
    if no.button("Keep it", key=state.COMPARE_DELETE_NO):
        st.rerun()


def delete_outcome() -> None:
    """Says what the last confirmed delete did (once)."""
    outcome = st.session_state.pop(state.COMPARE_DELETED, None)
    if outcome is not None:
        kind, message = outcome
        (st.success if kind == "done" else st.error)(
            message, icon=":material/check_circle:" if kind == "done" else ":material/error:")


def delete_section(summaries: Sequence[RunSummary]) -> None:
    """Choose a run and delete it after confirming in a dialog (admins; viewers: sign-in)."""
    if not roles.is_admin():
        st.caption("Deleting runs is for admins.")
        roles.sign_in_form()
        return
    labels = {s.run_id: f"{ui_runs.run_label(s)} · {s.status}" for s in summaries}
    by_id = {s.run_id: s for s in summaries}
    run_id = st.selectbox("Run to delete", list(labels), format_func=labels.get,
                          key=state.COMPARE_DELETE, index=None,
                          placeholder="Choose a run...")
    if st.button("Delete...", key=state.COMPARE_DELETE_ASK, icon=":material/delete:",
                 disabled=run_id is None):
        _confirm(by_id[run_id])
