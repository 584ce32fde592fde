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
    tf_version = getattr(info, "tensorflow_version", None)
    if tf_version and tf_version not in text:
        text += f" · TensorFlow {tf_version}"
    if getattr(info, "kind", "cpu") == "gpu":
        st.success(text, icon=":material/memory:")
    else:
        st.info(text, icon=":material/computer:")

RECENT_RUNS = 5  # runs listed on the Home page

RUN_COLUMNS = {
    "run_id": "Run", "created": "Created", "status": "Status", "dataset": "Dataset",
    "backbone": "Base",
    "epochs_run": "Epochs", "best_val_accuracy": "Best val. accuracy",
    "test_accuracy": "Test accuracy",
}


def runs_table(summaries: Sequence[Any]) -> pd.DataFrame:
    """A table of run summaries with the columns people compare first."""
    rows = [{name: getattr(s, name, None) for name in RUN_COLUMNS} for s in summaries]
    return pd.DataFrame(rows, columns=list(RUN_COLUMNS)).rename(columns=RUN_COLUMNS)


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
                     "Best val. accuracy": st.column_config.NumberColumn(format="percent"),
                     "Test accuracy": st.column_config.NumberColumn(format="percent"),
                 })
    return list(summaries)
