"""Export page: every deployable format of a run, each reloaded and measured, then downloads."""

from __future__ import annotations

import streamlit as st

from ui import export as ui_export
from ui import nav
from ui import runs as ui_runs
from ui.errors import show_user_errors
from ui.text import md

st.title("Export")
st.markdown(
    "Take a trained model out of the studio: **Keras** for a notebook, a **SavedModel** for "
    "TF Serving, and **TensorFlow Lite** files (float32, float16, int8) for a phone or a "
    "Raspberry Pi. Every file is loaded again in a clean Python, without the studio's code, "
    "and scored on the run's test photos before you download it.")

finished = ui_runs.completed_runs_or_stop("export")
summary = ui_runs.run_picker(finished, key=ui_export.RUN_KEY)
run_id = summary.run_id

formats = ui_export.format_picker()
job = ui_export.latest_job(run_id)
busy = job is not None and not job.done
if st.button("Export and verify", type="primary", icon=":material/ios_share:",
             disabled=busy or not formats, key=ui_export.START_KEY,
             help="Runs in the background: you can switch pages or refresh, it goes on."):
    with show_user_errors("Cannot start the export:"):
        ui_export.start(run_id, formats)
        st.rerun()

st.fragment(run_every=ui_export.POLL_SECONDS if busy else None)(ui_export.progress_panel)(
    run_id)

meta = ui_export.read_metadata(run_id)
if meta is None:
    st.info("This run has not been exported yet. Exporting takes a minute or a few: each "
            "format is converted, then loaded and measured.", icon=":material/info:")
    st.stop()

st.header("Formats")
st.caption(f"Exported {md(meta.get('exported', ''))} to {md(ui_export.export_folder(run_id))}")
ui_export.show_table(meta)

st.header("Downloads")
ui_export.downloads(run_id, meta)
st.markdown("`predict.py` in the folder prints the top-3 classes of photos with only "
            "TensorFlow Lite (or TensorFlow) and Pillow: `python predict.py photo.jpg`. "
            "`metadata.json` says how to prepare a photo and what each format measured.")
nav.page_link(nav.PREDICT, "Try the phone model on your own photos", ":material/image_search:")
