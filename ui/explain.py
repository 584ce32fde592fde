"""Explanations on the pages: Grad-CAM heatmaps under a prediction and for a test mistake."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st

from core.data import images
from core.results import explain, overlays
from core.results.explain import Explainer, Heatmap
from ui import predict as ui_predict
from ui import runs as ui_runs
from ui.errors import show_user_errors
from ui.text import md

# Session-state key prefixes of the widgets made here (one widget per photo: unique keys).
WHY_OPEN = "tl_why_open"
WHY_CLASS = "tl_why_class"
WHY_OPACITY = "tl_why_opacity"
WHY_BUTTON = "tl_why_button"
MISTAKE_OPACITY = "tl_why_mistake_opacity"

COLOUR_NOTE = ("Red: where the model found most evidence for the class; blue: none. The map "
               "is coarse (the base's last {grid} feature grid), so it points at regions, not "
               "outlines.")
SCORE_NOTE = {
    explain.SCORE_LOGIT: "computed from the class's score before softmax, so the map shows "
                         "the evidence for this class itself, even when the model is sure",
    explain.SCORE_PROBABILITY: "computed from the class's probability (this model's head has "
                               "no separate score before softmax)",
}


def explainer(run_dir: str | Path) -> Explainer:
    """The Explainer of a run's model, sharing the Predict page's cached model.

    Raises:
        ExplainError: The model cannot be explained (a TF Hub base, say).
        RunNotFoundError: The run has no usable model.
    """
    predictor = ui_predict.predictor(run_dir)
    return explain.explainer_for(predictor.model, predictor.labels)


@st.cache_data(show_spinner="Working out where the model looked...", max_entries=256)
def _heatmap(run_dir: str, model_stamp: tuple[int, ...], image: np.ndarray,
             target: str) -> Heatmap:
    del model_stamp  # part of the key: a replaced model explains again
    return explainer(run_dir).explain(image, target)


def heatmap(run_dir: str | Path, image: np.ndarray, target: str) -> Heatmap:
    """The heatmap of a photo (as the model saw it) for a class, cached per model file."""
    run_dir = Path(run_dir)
    return _heatmap(str(run_dir), ui_runs.fingerprint(run_dir),
                    np.asarray(image, np.uint8), str(target))


@st.cache_data(show_spinner=False, max_entries=32)
def _original_of_bytes(data: bytes) -> np.ndarray:
    return overlays.original_photo(data)


def _original(source: Any) -> np.ndarray:
    """The upright photo of an uploaded file, a camera shot, a path or bytes (at most 1024 px).

    Uploads are decoded once per content (the page reruns on every widget change).
    """
    getvalue = getattr(source, "getvalue", None)
    data = getvalue() if callable(getvalue) else source
    if isinstance(data, (bytes, bytearray, memoryview)):
        return _original_of_bytes(bytes(data))
    return overlays.original_photo(data)


def _caption(heat: Heatmap) -> str:
    words = f"{md(heat.label)}: {heat.probability:.0%}"
    return words + (" · nothing here speaks for it" if heat.empty else "")


def why_section(prediction: Any, source: Any, run_dir: str | Path, key: str, *,
                expanded: bool = False) -> None:
    """The "Why?" expander under a prediction: the heatmap of a class over the photo.

    The top class is explained first; any other class can be chosen ("what would make it a
    rose?"). The heatmap is shown over the photo as the model saw it and over the original
    photo (upright), with an opacity slider. Nothing is computed while it is closed.

    Args:
        prediction: A core.results.prediction.Prediction that was read (prediction.ok).
        source: The photo it came from (upload, camera shot, path or bytes).
        run_dir: The run whose model made the prediction.
        key: Unique per photo on the page; the widgets' keys are made from it.
        expanded: Open at first (the page opens it when there is one photo).
    """
    section = st.expander("Why? Where the model looked", expanded=expanded,
                          icon=":material/visibility:", key=f"{WHY_OPEN}-{key}",
                          on_change="rerun")
    if not section.open:
        return
    with section:
        with show_user_errors("Cannot explain this answer:") as explaining:
            labels = explainer(run_dir).labels
        if explaining.failed:
            return
        left, right = st.columns(2)
        target = left.selectbox(
            "Explain the class", labels, index=labels.index(prediction.label),
            key=f"{WHY_CLASS}-{key}",
            help="The model's answer first. Pick another class to see what in the photo "
                 "speaks for it: what would make it that class?")
        opacity = right.slider("Heatmap opacity", 0.0, 1.0, overlays.DEFAULT_OPACITY, 0.05,
                               key=f"{WHY_OPACITY}-{key}",
                               help="0 shows only the photo, 1 only the heatmap.")
        with show_user_errors("Cannot explain this answer:") as explaining:
            heat = heatmap(run_dir, prediction.image, target)
            original = _original(source)
        if explaining.failed:
            return
        seen, photo = st.columns(2)
        seen.image(explain.on_model_view(heat, opacity), width="stretch",
                   caption=f"As the model saw it · {_caption(heat)}")
        photo.image(explain.on_original(heat, original, opacity), width="stretch",
                    caption="On your photo, upright")
        st.caption(COLOUR_NOTE.format(grid=f"{heat.grid[0]}×{heat.grid[1]}") + " Heatmap "
                   + SCORE_NOTE[heat.score] + ".")


def answer_heatmap(prediction: Any, source: Any, run_dir: str | Path) -> None:
    """The heatmap of the model's answer over the upright photo, with its colour note.

    For Predict's demo view: no choices, the top class at the default opacity.

    Args:
        prediction: A core.results.prediction.Prediction that was read (prediction.ok).
        source: The photo it came from (upload, camera shot, path or bytes).
        run_dir: The run whose model made the prediction.
    """
    with show_user_errors("Cannot explain this answer:") as explaining:
        heat = heatmap(run_dir, prediction.image, prediction.label)
        original = _original(source)
    if explaining.failed:
        return
    st.image(explain.on_original(heat, original, overlays.DEFAULT_OPACITY), width="stretch",
             caption=f"Where the model saw {_caption(heat)}")
    st.caption(COLOUR_NOTE.format(grid=f"{heat.grid[0]}×{heat.grid[1]}"))


@st.dialog("Why did the model say that?", width="large")
def _mistake_dialog(run_dir: str, path: str, true: str, predicted: str) -> None:
    opacity = st.slider("Heatmap opacity", 0.0, 1.0, overlays.DEFAULT_OPACITY, 0.05,
                        key=MISTAKE_OPACITY, help="0 shows only the photo, 1 only the heatmap.")
    with show_user_errors("Cannot explain this photo:") as explaining:
        size = explainer(run_dir).input_size
        model_view = _model_view(path, size)
        original = overlays.original_photo(path)
        maps = [heatmap(run_dir, model_view, target) for target in (predicted, true)]
    if explaining.failed:
        return
    st.markdown(f"Taken for **{md(predicted)}**, but it is **{md(true)}**. Where did the model see "
                "each class?")
    for column, heat, what in zip(st.columns(2), maps, ("What it answered", "The true class"),
                                  strict=True):
        column.image(explain.on_original(heat, original, opacity), width="stretch",
                     caption=f"{what} · {_caption(heat)}")
    st.caption(COLOUR_NOTE.format(grid=f"{maps[0].grid[0]}×{maps[0].grid[1]}") + " Heatmaps "
               + SCORE_NOTE[maps[0].score] + ".")


def _model_view(path: str, size: int) -> np.ndarray:
    """A test photo as the model saw it (upright, squashed to size x size)."""
    return images.load_resized(path, size)


def why_button(run_dir: str | Path, row: Any, key: str) -> None:
    """A "Why?" button under a mistake; it opens its heatmaps for the predicted and true class.

    Args:
        run_dir: The run whose model made the mistake.
        row: A row of EvalResult.predictions (path, true, predicted).
        key: Unique per tile on the page.
    """
    if st.button("Why?", key=f"{WHY_BUTTON}-{key}", icon=":material/visibility:",
                 help="Where the model saw the class it answered, and the true class."):
        _mistake_dialog(str(run_dir), str(row.path), str(row.true), str(row.predicted))
