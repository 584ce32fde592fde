"""Predict's demo view (?run=<id>&view=demo): a photo in, the big answer and where it looked.

&live=1 opens it on the live camera (ui.live_camera), the model running in the browser.

For a projector or a phone: no menu, no sidebar, no options; the run comes from the address.
"""

from __future__ import annotations

import html
from typing import Any

import streamlit as st

from core.results import familiarity
from core.results.prediction import Prediction
from core.runs.store import RunSummary
from ui import explain as ui_explain
from ui import links, live_camera, nav, uploads
from ui import predict as ui_predict
from ui import runs as ui_runs
from ui.errors import show_user_errors
from ui.text import md, md_list

CAMERA = "tl_demo_camera"
UPLOAD = "tl_demo_upload"
ANSWER_STYLE = ("font-size: clamp(2.5rem, 11vw, 6rem); font-weight: 700; line-height: 1.1; "
                "margin: 0.2em 0 0.1em 0; overflow-wrap: anywhere")
PROBABILITY_STYLE = "font-size: clamp(1.4rem, 5vw, 2.5rem); opacity: 0.8"


def demo_run() -> RunSummary | None:
    """The run the address names; the newest completed run when it names none.

    Returns None after saying why (no run yet, or the address names no usable run).
    """
    with show_user_errors("Cannot list the runs:") as listing:
        known = ui_runs.all_runs()
    if listing.failed:
        return None
    usable = [s for s in known if s.usable]
    if links.address_run() is None:
        if not usable:
            st.info("No finished training run yet: train a model first.",
                    icon=":material/info:")
            return None
        return usable[0]
    wanted = links.requested_run(usable, known)  # says why when refused
    chosen = next((s for s in usable if s.run_id == wanted), None)
    if chosen is None:
        ways_out(usable)
    return chosen


def ways_out(usable: list[RunSummary]) -> None:
    """After a refused address: the newest model's demo, and the Predict page's run picker."""
    if usable:
        st.page_link(nav.PREDICT, label=f"Open the demo of the newest model "
                                         f"({ui_runs.run_name(usable[0])})",
                     icon=":material/slideshow:",
                     query_params={links.RUN: usable[0].run_id, links.VIEW: links.DEMO})
    st.page_link(nav.PREDICT, label="Choose a model on the Predict page",
                 icon=":material/image_search:")


def photo(predictor: Any, live: bool = False) -> ui_predict.Photo | None:
    """The camera shot, else the uploaded photo, read once (then released: ui.uploads), with
    the predictor's answer; None before either.

    Beside the live camera only the upload is offered: a second stream of the same camera
    stops the first on some phones (iOS); switching "Live camera" off brings the snapshot back.

    Raises what predictor.predict raises.
    """
    shot = None if live else st.camera_input("Take a photo", key=CAMERA)
    upload = st.file_uploader("Upload a photo" if live else "or upload one",
                              type=ui_predict.PHOTO_TYPES, key=UPLOAD,
                              max_upload_size=uploads.PHOTO_MB)
    upload = next(iter(uploads.within_limit([upload], key=UPLOAD)), None)
    shots = [] if live else ui_predict.kept_photos(CAMERA, [shot], predictor)
    if live:
        uploads.forget(CAMERA)
    photos = shots or ui_predict.kept_photos(UPLOAD, [upload], predictor)
    return photos[0] if photos else None


def answer(prediction: Prediction, n_classes: int) -> None:
    """The label in very large letters, its probability under it, and the unsure warning.

    A photo that looks like none of the classes gets "None of these" in large letters and
    the closest class second.
    """
    if prediction.unknown:
        st.markdown(f"<div style='{ANSWER_STYLE}'>{familiarity.NONE_OF_THESE}</div>"
                    f"<div style='{PROBABILITY_STYLE}'>"
                    f"Closest: {html.escape(prediction.label)}</div>",
                    unsafe_allow_html=True)
        st.info(familiarity.none_of_these(n_classes, md(prediction.label)),
                icon=":material/search_off:")
        return
    st.markdown(f"<div style='{ANSWER_STYLE}'>{html.escape(prediction.label)}</div>"
                f"<div style='{PROBABILITY_STYLE}'>{prediction.probability:.0%}: "
                f"{ui_predict.CLOSEST_NOTE}</div>",
                unsafe_allow_html=True)
    if prediction.unsure:
        st.warning("The model is unsure: this photo may show none of its classes.",
                   icon=":material/help:")


def demo_view() -> None:
    """The whole demo page: photo inputs, the answer, its heatmap."""
    summary = demo_run()
    if summary is None:
        return
    with show_user_errors("Cannot load this model:") as loading:
        predictor = ui_predict.predictor(summary.run_dir)
    if loading.failed:
        return
    live = live_camera.toggle("demo", default=live_camera.requested(), in_address=True)
    if live:
        live_camera.live_view(summary.run_dir, summary.run_id, predictor, autostart=True,
                              where="demo")
    inputs, result = st.columns(2, gap="large")  # side by side on a projector, stacked on a phone
    with inputs, show_user_errors("Cannot predict:") as predicting, st.spinner("Looking..."):
        chosen = photo(predictor, live)
    if predicting.failed:
        return
    with result:
        if chosen is None:
            st.caption(f"It knows: {md_list(predictor.labels)}.")
            return
        prediction = ui_predict.shown(chosen.prediction, 1)
        if not prediction.ok:
            st.error(md(prediction.error), icon=":material/broken_image:")
            return
        answer(prediction, len(predictor.labels))
        if chosen.picture is not None:
            ui_explain.answer_heatmap(prediction, chosen.picture, summary.run_dir)
