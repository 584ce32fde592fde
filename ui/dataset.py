"""Loading a dataset from an upload or a server folder with visible progress, and splitting it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, BinaryIO

import pandas as pd
import streamlit as st

from core import datasets, splits
from core.config import SplitConfig
from ui import resources, state
from ui.errors import show_user_errors

PROGRESS_EVERY_SECONDS = 0.25


class _ProgressBar:
    """ingest's on_progress(stage, done, total) callback drawing a throttled st.progress bar."""

    STAGES = {"extracting": "Extracting the zip", "checking": "Checking photos"}

    def __init__(self, what: str) -> None:
        self._what = what
        self._bar = st.progress(0.0, text=f"Reading {what}...")
        self._last = 0.0

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self._last < PROGRESS_EVERY_SECONDS:
            return
        self._last = now
        fraction = min(1.0, done / total) if total else 0.0
        doing = self.STAGES.get(stage, str(stage).capitalize())
        self._bar.progress(fraction, text=f"{doing}: {done:,} of {total:,} files")

    def empty(self) -> None:
        self._bar.empty()


def ingest_with_progress(source: str | Path | bytes | BinaryIO, name: str,
                         origin: str) -> state.LoadedDataset | None:
    """Ingests a zip or folder showing progress, keeps it in session state, and returns it.

    Args:
        source: What core.datasets.ingest accepts: a folder or zip path, zip bytes or a file.
        name: Short name for people (zip file name or folder name).
        origin: What was loaded ("upload:<file id>" or the folder path), to avoid reloading.

    Returns:
        The loaded dataset, or None after an error was shown with st.error.
    """
    with st.status(f"Loading {name}...", expanded=True) as status:
        bar = _ProgressBar(name)
        started = time.monotonic()
        with show_user_errors() as outcome:
            dataset = datasets.ingest(source, home=resources.home(), on_progress=bar)
        bar.empty()
        if outcome.failed:
            status.update(label=f"Could not load {name}", state="error", expanded=True)
            return None
        seconds = time.monotonic() - started
        usable = sum(dataset.report.classes.values())
        status.update(
            label=f"Loaded {name}: {usable:,} usable images in {len(dataset.report.classes)} "
                  f"classes ({seconds:.1f} s)",
            state="complete" if dataset.report.usable else "error", expanded=False,
        )
    loaded = state.LoadedDataset(dataset=dataset, name=name, source=origin)
    state.set_loaded_dataset(loaded)
    return loaded


def load_upload(upload: Any) -> state.LoadedDataset | None:
    """Ingests an st.file_uploader file once; later reruns reuse the loaded dataset."""
    origin = f"upload:{upload.file_id}"
    loaded = state.loaded_dataset()
    if loaded is not None and loaded.source == origin:
        return loaded
    return ingest_with_progress(upload, upload.name, origin)


def load_folder(text: str) -> state.LoadedDataset | None:
    """Ingests a folder (or a zip file) on the server given as typed text."""
    text = (text or "").strip().strip('"').strip("'")
    if not text:
        st.error("Type the path of a folder on the server, such as /data/flowers: one "
                 "subfolder per class, photos inside.", icon=":material/error:")
        return None
    path = Path(text).expanduser()
    return ingest_with_progress(path, path.name or str(path), str(path))


def split_dataset(loaded: state.LoadedDataset, config: SplitConfig) -> pd.DataFrame | None:
    """The dataset's stratified split, or None after showing why it cannot be split."""
    with show_user_errors("Cannot split this dataset:") as outcome:
        split = splits.split(loaded.dataset.index, config)
    return None if outcome.failed else split
