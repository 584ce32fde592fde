"""Dataset page: upload a zip, name a server folder, open or build a saved dataset; split, use."""

from __future__ import annotations

import streamlit as st

from core.audit.choices import audit_record
from core.config import SplitConfig
from ui import audit as ui_audit
from ui import dataset as ui_dataset
from ui import dataset_builder, nav, saved_datasets, state, widgets
from ui.text import md

st.title("Dataset")
st.markdown(
    "Photos sorted into **one folder per class**, for example `flowers/daisy/*.jpg` and "
    "`flowers/roses/*.jpg`. JPEG, PNG, BMP, GIF, WebP and TIFF are read by content; "
    "damaged, tiny and duplicate photos are reported, not used."
)

current = state.current_dataset()
if current is not None:
    ui_dataset.current_dataset_banner(current)
    nav.page_link(nav.TRAIN, "Continue to training", ":material/arrow_forward:")

kind = st.radio("Where are the photos?", [state.SOURCE_UPLOAD, state.SOURCE_FOLDER,
                                          state.SOURCE_SAVED, state.SOURCE_BUILD],
                horizontal=True, key=state.SOURCE_KIND, persist_state="session")
if kind == state.SOURCE_UPLOAD:
    limit_mb = int(st.get_option("server.maxUploadSize"))
    upload = st.file_uploader(
        f"Zip of class folders (up to {limit_mb:,} MB)", type=["zip"], key=state.UPLOAD,
        help="A single wrapping folder (flowers.zip -> flowers/daisy/...) is fine.",
    )
    st.caption(f"Upload limit: {limit_mb:,} MB per zip (server.maxUploadSize in "
               ".streamlit/config.toml). For larger datasets, copy them to the server and "
               "choose \"Folder on the server\". No zip? Choose \"New dataset\".")
    if upload is not None:
        ui_dataset.load_upload(upload)
elif kind == state.SOURCE_FOLDER:
    folder = st.text_input("Folder on the server", key=state.FOLDER, persist_state="session",
                           placeholder="/data/flowers",
                           help=ui_dataset.folder_help())
    if st.button("Load this folder", key=state.LOAD_FOLDER, icon=":material/folder_open:"):
        ui_dataset.load_folder(folder)
elif kind == state.SOURCE_SAVED:
    saved_datasets.saved_list()
else:
    dataset_builder.builder()

loaded = state.loaded_dataset()
if loaded is None:
    if kind in (state.SOURCE_UPLOAD, state.SOURCE_FOLDER):
        st.info("No dataset loaded yet. Upload a zip with one folder per class, or choose "
                "\"Folder on the server\", type its path and press **Load this folder**.",
                icon=":material/arrow_upward:")
    st.stop()

report = loaded.dataset.report
st.header(f"Report: {md(loaded.name)}")
ui_dataset.validation_report(report)
with st.expander("Thumbnails per class", expanded=True):
    ui_dataset.thumbnail_grid(loaded.dataset)
if not report.usable:
    st.error("This dataset cannot be used yet: fix the errors above, then load it again.",
             icon=":material/block:")
    st.stop()

audit, choices = ui_audit.audit_section(loaded)

st.header("Split")
st.caption("Each class is split in the same proportions; identical photos, and the "
           "near-duplicates an audit found, stay in one split. The validation set guides "
           "early stopping; the test set is only used to measure.")
config = widgets.config_form(SplitConfig, key_prefix=state.SPLIT_PREFIX, columns=4,
                             initial=current.split_config if current is not None else None)
split = (ui_audit.split_with_audit(loaded, config, audit, choices) if config is not None
         else None)
if split is None:
    st.stop()
ui_dataset.split_summary(split)

in_use = (current is not None and current.loaded.source == loaded.source
          and current.split_config == config)
if st.button("Use this dataset", type="primary", key=state.USE_DATASET,
             icon=":material/check:", on_click=state.use_dataset,
             args=(loaded, split, config, audit_record(audit, choices)),
             help="Keeps this dataset and split for the Train page."):
    st.success(f"{md(loaded.name)} and this split will be used for training.",
               icon=":material/check_circle:")
elif in_use:
    st.caption("This dataset and split are the ones in use.")
if in_use:
    nav.page_link(nav.TRAIN, "Continue to training", ":material/arrow_forward:")
