"""Evaluate page: how a run does on its test photos, class by class and photo by photo."""

from __future__ import annotations

import streamlit as st

from core.results import charts
from ui import evaluate, nav, state
from ui import export as ui_export
from ui import familiarity as ui_familiarity
from ui import runs as ui_runs
from ui.errors import show_user_errors
from ui.text import md

st.title("Evaluate")
st.markdown("How the model does on the **test photos**: photos of your dataset it never saw "
            "while training. Click a cell of the confusion matrix to see its photos.")

finished = ui_runs.completed_runs_or_stop("evaluate")

summary = ui_runs.run_picker(finished, key=state.EVAL_RUN)
with show_user_errors("Cannot read this run:") as reading:
    run = ui_runs.load(summary)
if reading.failed:
    st.stop()
result = run.evaluation
if result is None:
    st.error(f"Run {md(run.run_id)} has no test results (its metrics.json lacks them). Pick "
             "another run or train again.", icon=":material/error:")
    st.stop()
for problem in run.problems:
    st.warning(f"This run has a problem: {md(problem)}.", icon=":material/warning:")

evaluate.headline(run, result)

st.header("Class by class")
evaluate.per_class_section(result)

st.header("Confusion matrix")
evaluate.confusion_section(result, run.run_dir)

st.header("Test photos")
evaluate.gallery_section(result, run.run_dir)

st.header("None of these")
ui_familiarity.section(run)

st.header("Learning curves")
st.plotly_chart(charts.learning_curves(run.history, run.fine_tune_start_epoch), width="stretch")
st.caption("Loss should fall and accuracy rise. When validation accuracy stalls while training "
           "accuracy keeps rising, the head starts to memorise: more photos, augmentation or "
           "dropout help. A shaded part is the fine-tuning phase.")
evaluate.averaging_note(run)

st.header("How the head was chosen")
evaluate.head_choice_section(run)

st.header("Model")
evaluate.model_section(run)

st.header("Downloads")
evaluate.downloads(run, result)
ui_export.verified_downloads(run.run_id)
nav.page_link(nav.PREDICT, "Try this model on your own photos", ":material/image_search:")
