"""The live camera: the run's model classifies the camera stream in the visitor's browser.

A Streamlit component (ui/live_camera_web: plain HTML/JS, LiteRT.js vendored beside it with
its licence) runs core.export.browser's .tflite file on each frame. The server sends the file
once (from a same-origin component route, with its content hash in the address) and the labels,
input size and unsure threshold as the component's arguments; nothing goes back per frame.

"None of these": the browser model also gives the pooled features, and the run's reference
vectors are served beside it (core.export.browser.REFERENCE_FILE, float16) with k, the
per-class thresholds and the server's words as arguments, so the page scores each frame as
the server's Predictor does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st
import streamlit.components.v1 as components

from core.errors import AppError
from core.export import browser
from core.files import file_sha256
from core.results.prediction import Predictor
from ui import export as ui_export
from ui import links, resources
from ui import runs as ui_runs
from ui.errors import show_user_errors

WEB = Path(__file__).with_name("live_camera_web")
LIVE = links.LIVE  # ?live=1 in the address opens the demo view in live mode
TOGGLE = "tl_live_camera"  # + ".<where>": the "Live camera" toggle
LABEL = "Live camera"
HELP = ("The model runs in this browser on the camera picture and answers continuously. "
        "It runs on this device; no picture leaves it.")

_component = components.declare_component("live_camera", path=str(WEB))


class BrowserModelError(AppError):
    """The browser's model file could not be made for a run."""


@st.cache_resource(show_spinner="Preparing the model for the browser (once per model)...",
                   max_entries=32)
def _served(run_dir: str, stamp: tuple[int, ...], exported: str, _familiarity: Any
            ) -> dict[str, str | None]:
    """The addresses of the run's browser model and reference vectors, relative to the
    component's page ({"model": ..., "reference": ... or None}).

    The files' folder is registered as a component of its own, named after their hash:
    Streamlit then serves it from this server, the same origin as the page, and a new model
    or a new reference gets a new address.
    """
    del stamp  # part of the key: a new model, export or familiarity is prepared again
    run = ui_runs.load(run_dir)
    try:
        path = browser.model_file(run, Path(exported))
    except AppError:
        raise
    except Exception as exc:  # a conversion failure: say it, keep the page working
        raise BrowserModelError(
            f"the model could not be converted for the browser ({type(exc).__name__}: {exc}). "
            "Taking or uploading a photo still works.") from exc
    reference = None
    if _familiarity is not None and browser.has_features(path):
        reference = browser.reference_file(Path(run_dir), _familiarity)
    # the files' hashes name them in their address, so a new model is a new URL
    tag = file_sha256(path)[:16] + (file_sha256(reference)[:8] if reference else "")
    served = components.declare_component(f"model_{tag}", path=str(path.parent))
    return {"model": f"../{served.name}/{path.name}",
            "reference": f"../{served.name}/{reference.name}" if reference else None}


def requested() -> bool:
    """True when the address asks for the live camera (?live=1)."""
    return st.query_params.get(LIVE) in ("1", "true", "yes")


def toggle(where: str, *, default: bool = False, in_address: bool = False) -> bool:
    """The "Live camera" switch.

    Args:
        where: Names the switch on its page.
        default: Its first state in this session.
        in_address: Switching it puts live=1 in the address (or takes it out), so a copied
            address opens the same view.
    """
    key = f"{TOGGLE}.{where}"
    if key not in st.session_state:
        st.session_state[key] = default
    return st.toggle(LABEL, key=key, help=HELP, on_change=_follow if in_address else None,
                     args=(key,) if in_address else None)


def _follow(key: str) -> None:
    if st.session_state.get(key):
        st.query_params[LIVE] = "1"
    elif LIVE in st.query_params:
        del st.query_params[LIVE]


def live_view(run_dir: Path, run_id: str, predictor: Predictor, *, autostart: bool,
              where: str) -> None:
    """The camera picture, the top class in large letters and the top 3 bars, live.

    Args:
        run_dir: The run's folder.
        run_id: The run's id (finds its export).
        predictor: The server's predictor of the run: its labels and unsure threshold are the
            ones the browser uses, so both call the same photos "not sure".
        autostart: Ask for the camera at once (the browser still asks the visitor).
        where: Names the component on the page.
    """
    with show_user_errors("The live camera cannot start:") as preparing:
        exported = ui_export.export_folder(run_id)
        run = ui_runs.load(run_dir)
        fam = predictor.familiarity
        stamp = (resources.file_stamp(run.model_path) if run.model_path else 0,
                 resources.file_stamp(exported / browser.FILE),
                 resources.file_stamp(run.familiarity_path) if fam is not None else -1)
        urls = _served(str(run_dir), stamp, str(exported), fam)
    if preparing.failed:
        return
    familiarity = None
    if fam is not None and urls["reference"]:
        familiarity = {"reference_url": urls["reference"],
                       **browser.page_familiarity(fam, list(predictor.labels))}
    _component(model_url=urls["model"], labels=list(predictor.labels),
               size=int(predictor.input_size), threshold=float(predictor.threshold),
               familiarity=familiarity, autostart=bool(autostart),
               key=f"{TOGGLE}.{where}.view", default=None)
