"""Export page: start a verified export as a background job, follow it, show and offer the files."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from core import files
from core.export import exporter as export
from core.export import formats as export_formats
from core.jobs import kinds as job_kinds
from core.jobs import manager as jobs
from ui import resources, roles
from ui.text import md

POLL_SECONDS = 1.0
KIND = job_kinds.EXPORT.name  # a queued export survives a server restart
FORMATS_KEY = "tl_export_formats"
START_KEY = "tl_export_start"
JOB_KEY = "tl_export_job"
RUN_KEY = "tl_export_run"
CANCEL_KEY = "tl_export_cancel"
PHONE_KEY = "tl_predict_phone"  # the Predict page's "As it runs on a phone" toggle
PHONE_FORMAT_KEY = "tl_predict_phone_format"       # which of them, when both were exported


def exports_dir() -> Path:
    """Where the app writes exports: <studio home>/exports/<run id>/."""
    return resources.home() / "exports"


def export_folder(run_id: str) -> Path:
    """The export folder of a run (it may not exist yet)."""
    return exports_dir() / run_id


def read_metadata(run_id: str) -> dict[str, Any] | None:
    """metadata.json of the run's last complete export, or None."""
    try:
        data = files.read_json(export_folder(run_id) / "metadata.json")
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def title(name: str) -> str:
    """A format's name for people ("TensorFlow Lite, int8 (full integer)")."""
    return export_formats.title(name)


def phone_models(run_id: str) -> dict[str, Path]:
    """The run's exported TFLite files a phone runs that verified: int8 first, then float16."""
    meta = read_metadata(run_id) or {}
    found = {}
    phone = [fmt.name for fmt in reversed(export_formats.FORMATS) if fmt.phone]  # smallest first
    for name in phone:
        entry = (meta.get("formats") or {}).get(name) or {}
        path = export_folder(run_id) / str(entry.get("file") or "")
        if entry.get("status") == export.OK and path.is_file():
            found[name] = path
    return found


def start(run_id: str, formats: list[str]) -> str:
    """Submits the export to the server's job manager (admins only); returns the job id.

    Raises:
        AccessDenied: The visitor is a viewer.
    """
    roles.require("export runs")
    job_id = resources.job_manager().submit(
        export.export_stored_run, title=f"Export {run_id}", kind=KIND, subject=run_id,
        home=str(resources.home()), run_id=run_id, out_dir=str(exports_dir()),
        formats=list(formats))
    st.session_state[JOB_KEY] = job_id
    return job_id


def latest_job(run_id: str) -> jobs.JobStatus | None:
    """The newest export job of this run known to the server (any session started it)."""
    found = resources.job_manager().jobs(kind=KIND, subject=run_id)
    return found[-1] if found else None


def format_picker() -> list[str]:
    """The formats to write (all by default)."""
    return st.multiselect("Formats", list(export_formats.NAMES), default=list(export_formats.NAMES),
                          format_func=export_formats.title, key=FORMATS_KEY,
                          help="Every format is loaded again in a clean process and scored "
                               "on the test photos before you download it.")


def progress_panel(run_id: str) -> None:
    """Live progress of the run's export job; reruns the page when it ends."""
    status = latest_job(run_id)
    if status is None:
        return
    if status.state == jobs.QUEUED:
        st.info(f"Waiting for the machine: position {status.position} in the queue.",
                icon=":material/schedule:")
    elif status.state == jobs.RUNNING:
        event = status.latest_event
        fraction = float(getattr(event, "fraction", 0.0) or 0.0)
        message = (event.message if event else None) or "Starting..."
        st.progress(min(max(fraction, 0.0), 1.0), text=f"Exporting: {md(message)}")
        st.button("Cancel export", key=f"{CANCEL_KEY}.{status.job_id}",
                  on_click=roles.cancel_job, args=(status.job_id,),
                  icon=":material/stop_circle:")
    elif status.state == jobs.FAILED:
        st.error(f"The export failed: {md(status.error)}", icon=":material/error:")
    elif status.state == jobs.INTERRUPTED:
        export.clean_leftovers(exports_dir(), run_id)
        st.warning("The last export of this run was interrupted (the server stopped while it "
                   "ran), so it did not finish; its temporary folder was removed. Export "
                   "again.", icon=":material/warning:")
    if not status.done:
        st.session_state[JOB_KEY] = status.job_id
    elif st.session_state.pop(JOB_KEY, None) == status.job_id:
        st.rerun()  # the whole page: show the new table


def formats_table(meta: dict[str, Any]) -> pd.DataFrame:
    """One row per format: size, accuracy, agreement, latency and the verdict."""
    rows = []
    for name, fmt in (meta.get("formats") or {}).items():
        ok = fmt.get("status") == export.OK
        verdict = ("recommended" if fmt.get("recommended") else fmt.get("note")) if ok \
            else f"{fmt.get('status')}: {fmt.get('error') or fmt.get('note')}"
        rows.append({
            "Format": export_formats.title(name), "File": fmt.get("file"),
            "Size (MB)": None if fmt.get("size_bytes") is None else fmt["size_bytes"] / 1e6,
            "Test accuracy": fmt.get("test_accuracy"), "Agreement": fmt.get("agreement"),
            "Latency p50 (ms)": fmt.get("latency_ms_p50"), "Verdict": verdict,
        })
    return pd.DataFrame(rows)


def show_table(meta: dict[str, Any]) -> None:
    """The format table with its explanation."""
    st.dataframe(formats_table(meta), hide_index=True, width="stretch", column_config={
        "Size (MB)": st.column_config.NumberColumn(format="%.2f"),
        "Test accuracy": st.column_config.NumberColumn(format="percent"),
        "Agreement": st.column_config.NumberColumn(format="percent"),
        "Latency p50 (ms)": st.column_config.NumberColumn(format="%.1f"),
    })
    st.caption(
        f"Keras model: {meta.get('keras_test_accuracy', 0):.1%} on {meta.get('test_photos')} "
        "test photos. Each file was loaded in a separate Python without the studio's code and "
        "scored on those photos. Agreement: share of photos with the Keras model's answer. "
        "Latency: one photo, median, on this server. A format more than 1 point below the "
        "Keras model (2 for int8) is not recommended.")


def _zip(folder: Path, inner: Path | None = None) -> bytes:
    """A zip of a folder, or of one sub-folder of it, under its own name."""
    buffer = io.BytesIO()
    top = inner or folder
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(top.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(top.parent).as_posix())
    return buffer.getvalue()


def verified_downloads(run_id: str) -> None:
    """On the pages anyone may open: the files of the run's last export, when there is one
    (exporting is for admins; taking a verified file is not)."""
    meta = read_metadata(run_id)
    if meta is None:
        return
    st.subheader(f"Verified exports ({md(meta.get('exported', ''))})")
    show_table(meta)
    downloads(run_id, meta)


DOWNLOADS_PER_ROW = 2


def downloads(run_id: str, meta: dict[str, Any]) -> None:
    """One button per exported format (the SavedModel zipped) and one for the whole folder."""
    folder = export_folder(run_id)
    st.download_button("Whole export folder (zip)", lambda: _zip(folder),
                       file_name=f"{run_id}-export.zip", mime="application/zip",
                       on_click="ignore", type="primary", icon=":material/folder_zip:",
                       help="Every file, labels.txt, metadata.json, predict.py and the report.")
    ready = [(name, fmt) for name, fmt in (meta.get("formats") or {}).items()
             if fmt.get("status") == export.OK and (folder / fmt["file"]).exists()]
    # Two buttons a row: five in one row cut their names off ("TensorFlow Lite, fl...").
    columns = st.columns(DOWNLOADS_PER_ROW)
    for n, (name, fmt) in enumerate(ready):
        path = folder / fmt["file"]
        data = (lambda p=path: _zip(folder, p)) if path.is_dir() else (
            lambda p=path: p.read_bytes())
        columns[n % DOWNLOADS_PER_ROW].download_button(
            export_formats.title(name), data, on_click="ignore",
            file_name=f"{fmt['file']}.zip" if path.is_dir() else fmt["file"],
            icon=":material/download:", key=f"tl_export_download.{name}", width="stretch")

