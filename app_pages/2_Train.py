"""Train page: pick a pretrained base and options, start training, watch it live, cancel."""

from __future__ import annotations

import streamlit as st

from core.config import TrainConfig
from ui import dataset as ui_dataset
from ui import nav, state, train_form, train_monitor, widgets
from ui.text import md

st.title("Train")
st.markdown(
    "A network pretrained on ImageNet turns every photo into features; a small new **head** "
    "learns your classes from them. Training runs in the background on the server: you can "
    "switch pages or close the browser and come back."
)

current = state.current_dataset()
# A job this session started shows where its Start button was (the bottom), in view.
monitor_below = current is not None and train_monitor.started_here()
if not monitor_below:
    train_monitor.jobs_section()
if current is None:
    st.info("No dataset chosen yet. Upload a zip of class folders on the Dataset page and "
            "press **Use this dataset**, then come back here.", icon=":material/arrow_back:")
    nav.page_link(nav.DATASET, "Go to the Dataset page", ":material/photo_library:")
    st.stop()

st.header("New training")
ui_dataset.current_dataset_banner(current)

st.subheader("1. Pretrained base")
values = train_form.base_picker()

st.subheader("2. Options")
st.caption("Hover over the ? of an option for what it does and its allowed range.")
values |= train_form.options_form()
config = widgets.build_config(TrainConfig, values)

st.subheader("3. Start")
if monitor_below:  # where the Start button was: in view after pressing it
    train_monitor.jobs_section(heading=False)
if config is not None:
    train_form.head_advice(current, config)
    st.caption(f"Will train: {md(train_form.job_title(current, config))}.")
if st.button("Start training", type="primary", key=state.TRAIN_START,
             icon=":material/play_arrow:", disabled=config is None,
             help="Queues the training on this server; one training runs at a time."):
    if config is not None and train_form.start(current, config) is not None:
        st.rerun()
