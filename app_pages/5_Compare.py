"""Compare page: every run side by side, their curves overlaid, and deleting runs."""

from __future__ import annotations

import streamlit as st

from ui import compare, nav
from ui import runs as ui_runs
from ui.errors import show_user_errors

st.title("Compare runs")
st.markdown("Every training run kept in the studio home, from this app or the command line "
            "(`python -m core train`), newest first.")

compare.delete_outcome()
with show_user_errors("Cannot list the runs:") as listing:
    summaries = ui_runs.all_runs()
if listing.failed:
    st.stop()
if not summaries:
    st.info("No runs yet: train a model and it will be listed here.", icon=":material/info:")
    nav.page_link(nav.TRAIN, "Train a model", ":material/model_training:")
    nav.page_link(nav.DATASET, "Choose a dataset first", ":material/photo_library:")
    st.stop()

compare.runs_table(summaries)

st.header("Learning curves side by side")
compare.curves(summaries)

st.header("Delete a run")
compare.delete_section(summaries)
