"""The Home page's parts: the compute-device banner and the table of recent runs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import streamlit as st

from ui import links, resources


def device_banner() -> None:
    """One line about the compute device: GPU name and memory, or CPU only and why."""
    info = resources.device_info()
    text = info.summary()
    # For admins: a teacher does not need it first, so it stays in a fold.
    with st.expander("Compute device (for admins)", icon=":material/memory:"):
        _device_line(info, text)


def _device_line(info: Any, text: str) -> None:
    tf_version = getattr(info, "tensorflow_version", None)
    if tf_version and tf_version not in text:
        text += f" · TensorFlow {tf_version}"
    if getattr(info, "kind", "cpu") == "gpu":
        st.success(text, icon=":material/memory:")
    else:
        st.info(text, icon=":material/computer:")


RECENT_RUNS = 5  # runs listed on the Home page


def runs_table(summaries: Sequence[Any]) -> pd.DataFrame:
    """The newest runs: name, test accuracy with its interval, status, created."""
    from ui import compare
    from ui import runs as ui_runs

    names = ui_runs.run_names(summaries)
    return compare.blank_empty_text(pd.DataFrame([{
        "Run": names[s.run_id], "Test accuracy (95% interval)": s.test_accuracy_text,
        "Status": s.status, "Created": s.created,
    } for s in summaries], columns=["Run", "Test accuracy (95% interval)", "Status",
                                    "Created"]))


def recent_runs() -> list[Any]:
    """Shows the newest runs of the studio home; returns their summaries (maybe empty)."""
    from core.runs.store import RunStore

    summaries = RunStore(resources.home()).list()[:RECENT_RUNS]
    if not summaries:
        st.caption("No runs yet: train a model and it will be listed here.")
        return []
    table = runs_table(summaries)
    table[links.OPEN_COLUMN] = [links.evaluate_link(s) for s in summaries]
    st.dataframe(table, hide_index=True, width="stretch",
                 column_config={
                     links.OPEN_COLUMN: links.open_column(),
                     "Created": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm"),
                     "Test accuracy (95% interval)": st.column_config.TextColumn(
                         help="Share of the test photos named correctly; in brackets how "
                              "many, and the range the true accuracy lies in with 95% "
                              "confidence."),
                 })
    return list(summaries)
