"""Predict page: upload photos or take one, and see what a trained model says about each."""

from __future__ import annotations

import streamlit as st

from ui import demo, links, live_camera, nav, state
from ui import explain as ui_explain
from ui import export as ui_export
from ui import predict as ui_predict
from ui import runs as ui_runs
from ui.errors import show_user_errors
from ui.text import md, md_list

if links.demo_requested():  # ?view=demo: only the photo, the answer and its heatmap
    demo.demo_view()
    st.stop()

st.title("Predict")
st.markdown("Upload photos (or take one) and see what a trained model calls them.")

finished = ui_runs.completed_runs_or_stop("predict with")

left, right = st.columns([3, 1])
with left:
    summary = ui_runs.run_picker(finished, key=state.PREDICT_RUN, label="Model (training run)",
                                 demo_link=True)
with show_user_errors("Cannot load this model:") as loading:
    predictor = ui_predict.predictor(summary.run_dir)
if loading.failed:
    st.stop()
with right:
    top_k = st.slider("Guesses shown", 1, min(5, len(predictor.labels)),
                      min(3, len(predictor.labels)), key=state.PREDICT_TOP_K,
                      help="How many of the most probable classes to show per photo.")
phone_files = ui_export.phone_models(summary.run_id)
if st.toggle("As it runs on a phone", key=ui_export.PHONE_KEY, disabled=not phone_files,
             help="Predict with the run's exported TensorFlow Lite file (int8 or float16), "
                  "the one you would deploy. Export the run on the Export page first."):
    chosen = st.radio("Phone model", list(phone_files), key=ui_export.PHONE_FORMAT_KEY,
                      format_func=ui_export.title, horizontal=True,
                      help="int8 is the smallest and fastest; float16 stays closest to the "
                           "trained model.") if len(phone_files) > 1 else next(iter(phone_files))
    phone_file = phone_files[chosen]
    with show_user_errors("Cannot load the exported model:") as phone_loading:
        predictor = ui_predict.phone_predictor(phone_file, predictor)
    if phone_loading.failed:
        st.stop()
    st.caption(f"Using the exported file {md(phone_file.name)}.")
st.caption(f"Classes it knows: {md_list(predictor.labels)}. It says it is unsure below "
           f"{predictor.threshold:.0%}" + (", and \"none of these\" when a photo looks like "
           "none of them." if getattr(predictor, "familiarity", None) is not None else "."))

if live_camera.toggle("predict"):
    live_camera.live_view(summary.run_dir, summary.run_id, predictor, autostart=True,
                          where="predict")
with show_user_errors("Cannot predict:") as predicting:
    photos = ui_predict.photo_inputs(predictor)  # each read once, then released
if predicting.failed:
    st.stop()
if not photos:
    st.info("Upload one or more photos above, or switch on the camera.",
            icon=":material/arrow_upward:")
    st.stop()

predictions = [ui_predict.shown(photo.prediction, top_k) for photo in photos]
if len(predictions) > 1:
    st.dataframe(ui_predict.summary_table(predictions), hide_index=True, width="stretch",
                 column_config={"Probability": st.column_config.NumberColumn(format="percent")})
for number, (prediction, photo) in enumerate(zip(predictions, photos, strict=True)):
    ui_predict.prediction_card(prediction, predictor.input_size, number, len(predictor.labels))
    if prediction.ok and photo.picture is not None:
        ui_explain.why_section(prediction, photo.picture, summary.run_dir,
                               f"{number}-{prediction.file}", expanded=len(predictions) == 1)
nav.page_link(nav.EVALUATE, "How good is this model? See its evaluation", ":material/insights:")
