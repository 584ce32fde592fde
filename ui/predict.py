"""Predict page: the cached model of a run, photo inputs, and one card per prediction."""

from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st
from PIL import Image

from core.data.images import ImageError
from core.results import charts, familiarity, overlays
from core.results.prediction import Prediction, Predictor
from ui import resources, state, uploads
from ui import runs as ui_runs
from ui.text import md

PHOTO_TYPES = ["jpg", "jpeg", "png", "bmp", "gif", "webp", "tif", "tiff"]


@st.cache_resource(show_spinner="Loading the model...", max_entries=4)
def _predictor(run_dir: str, stamp: tuple[int, ...]) -> Predictor:
    del stamp  # part of the key: a retrained or replaced model is loaded again
    return Predictor.from_run(Path(run_dir))


def predictor(run_dir: str | Path) -> Predictor:
    """The run's model, loaded once per server for as long as the run's files are unchanged.

    Raises:
        RunNotFoundError: when the run has no usable model or labels.
    """
    run_dir = Path(run_dir)
    return _predictor(str(run_dir), ui_runs.fingerprint(run_dir))


@st.cache_resource(show_spinner="Loading the exported TFLite model...", max_entries=4)
def _phone_predictor(path: str, stamp: int, labels: tuple[str, ...], threshold: float
                     ) -> Predictor:
    del stamp  # part of the key: a new export is loaded again
    from core.export.runtime import TFLitePredictor

    return TFLitePredictor(path, labels, threshold=threshold)


def phone_predictor(path: Path, keras_predictor: Predictor) -> Predictor:
    """The run's exported TFLite file (int8 or float16) with the Keras model's labels."""
    return _phone_predictor(str(path), resources.file_stamp(path),
                            tuple(keras_predictor.labels), keras_predictor.threshold)


@dataclass(frozen=True)
class Photo:
    """What a page keeps of a photo once read (the upload itself is released).

    Attributes:
        name: The file's name as uploaded.
        picture: The photo upright, at most overlays.ORIGINAL_MAX_SIDE pixels, as JPEG bytes
            (for the heatmap over it, and to predict again with another model); None when
            the photo could not be read.
        prediction: The model's answer with every class (pages show the first top_k).
        model: Which model answered (model_key): another one predicts again from picture.
    """

    name: str
    picture: bytes | None
    prediction: Prediction
    model: str


def model_key(predictor: Predictor) -> str:
    """Names a predictor for Photo.model: its class, run, file and threshold."""
    return "|".join(str(part) for part in (
        type(predictor).__name__, getattr(predictor, "run_dir", ""),
        getattr(predictor, "path", ""), predictor.threshold, tuple(predictor.labels)))


def _picture(source: Any) -> bytes | None:
    """The photo upright and small (JPEG), None when it cannot be read."""
    getvalue = getattr(source, "getvalue", None)
    try:
        pixels = overlays.original_photo(getvalue() if callable(getvalue) else source)
    except (ImageError, OSError, ValueError):
        return None
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


def read_photos(predictor: Predictor, files: list[Any]) -> list[Photo]:
    """Predicts the files (every class) and keeps a small upright copy of each."""
    key = model_key(predictor)
    pictures = [_picture(f) for f in files]
    predictions = predictor.predict(files, top_k=len(predictor.labels))
    return [Photo(p.file, picture, p, key)
            for picture, p in zip(pictures, predictions, strict=True)]


def current(predictor: Predictor, photos: list[Photo]) -> list[Photo]:
    """The photos with this predictor's answers: those another model answered are predicted
    again from their kept picture."""
    key = model_key(predictor)
    stale = [i for i, photo in enumerate(photos) if photo.model != key and photo.picture]
    if not stale:
        return photos
    again = predictor.predict([photos[i].picture for i in stale], top_k=len(predictor.labels))
    photos = list(photos)
    for i, prediction in zip(stale, again, strict=True):
        photos[i] = dataclasses.replace(
            photos[i], model=key, prediction=dataclasses.replace(prediction,
                                                                 file=photos[i].name))
    return photos


def shown(prediction: Prediction, top_k: int) -> Prediction:
    """The prediction with its first top_k guesses."""
    return dataclasses.replace(prediction, top_k=prediction.top_k[:top_k])


def kept_photos(key: str, files: list[Any], predictor: Predictor) -> list[Photo]:
    """The photos the uploader or camera `key` lists, each read once and then released from
    the server's memory (ui.uploads.read_once), answered by this predictor.

    Raises what predictor.predict raises (pages show it with show_user_errors).
    """
    return uploads.read_once(key, files, lambda new: read_photos(predictor, new),
                             refresh=lambda photos: current(predictor, photos))


def photo_inputs(predictor: Predictor) -> list[Photo]:
    """Uploaded photos, and a camera photo when the camera is switched on, read once.

    Raises what predictor.predict raises.
    """
    files = uploads.within_limit(st.file_uploader(
        "Photos", type=PHOTO_TYPES, accept_multiple_files=True, key=state.PREDICT_UPLOAD,
        help="One or more photos: " + ", ".join(t.upper() for t in PHOTO_TYPES)
             + f"; up to {uploads.PHOTO_MB} MB each, {uploads.PHOTOS_AT_ONCE} at once.",
        max_upload_size=uploads.PHOTO_MB,
    ) or [], at_most=uploads.PHOTOS_AT_ONCE, key=state.PREDICT_UPLOAD)
    shot = None
    camera = st.toggle("Take a photo with the camera", key=state.PREDICT_CAMERA_ON,
                       help="Your browser asks for permission to use the camera.")
    if camera:
        shot = st.camera_input("Camera", key=state.PREDICT_CAMERA)
    with st.spinner("Looking at the photos..."):
        photos = kept_photos(state.PREDICT_UPLOAD, files, predictor)
        if camera:
            photos += kept_photos(state.PREDICT_CAMERA, [shot], predictor)
        else:
            uploads.forget(state.PREDICT_CAMERA)
    return photos


def summary_table(predictions: list[Prediction]) -> pd.DataFrame:
    """One row per photo: file, answer ("None of these" or the class), closest class, its
    probability, unsure, error."""
    return pd.DataFrame([{
        "Photo": p.file,
        "Prediction": familiarity.NONE_OF_THESE if p.unknown else p.label,
        "Closest class": p.label, "Probability": p.probability,
        "Unsure": p.unsure if p.ok else None, "Problem": p.error,
    } for p in predictions])


# What a probability means, said wherever one is shown: the softmax spreads 100% over the
# classes the model knows, so a photo of something else still gets a high one.
CLOSEST_NOTE = "the closest of the classes it knows"


def none_of_these(prediction: Prediction, n_classes: int) -> None:
    """The 'none of these' answer: the photo looks like none of the classes, closest second."""
    st.markdown(f"### {familiarity.NONE_OF_THESE}")
    st.info(familiarity.none_of_these(n_classes, md(prediction.label))
            + f" (Its best guess, {md(prediction.label)}, has {prediction.probability:.0%} "
            "probability: probabilities always add up to 100% over the classes the model "
            "knows, even for a photo of something else.)", icon=":material/search_off:")


def prediction_card(prediction: Prediction, input_size: int, position: int,
                    n_classes: int | None = None) -> None:
    """The photo as the model saw it, the top-k bars, and a warning when the model is unsure.

    Args:
        prediction: One photo's prediction.
        input_size: The model's input size in pixels.
        position: The photo's place in the list: keys its elements, so two photos with the
            same prediction (the same photo twice) still get elements of their own.
        n_classes: How many classes the model knows (for 'none of these').
    """
    st.subheader(md(prediction.file))
    if not prediction.ok:
        st.error(md(prediction.error), icon=":material/broken_image:")
        return
    left, right = st.columns([1, 2])
    with left:
        st.image(prediction.image, width="stretch",
                 caption=f"As the model saw it: upright, squashed to {input_size}×{input_size}")
    with right:
        if prediction.unknown:
            none_of_these(prediction, n_classes or len(prediction.top_k))
        else:
            st.markdown(f"### {md(prediction.label)} · {prediction.probability:.0%}")
            st.caption(f"{CLOSEST_NOTE.capitalize()}: the {prediction.probability:.0%} is "
                       "shared among its classes only, so a photo of something else still "
                       "gets one.")
        if prediction.unsure and not prediction.unknown:
            st.warning(
                f"**The model is unsure**: its best guess has {prediction.probability:.0%} "
                f"probability, below the {prediction.threshold:.0%} it needs to be trusted "
                "(chosen on the validation photos). The photo may show none of the classes, "
                "or look like several.", icon=":material/help:")
        st.plotly_chart(charts.top_k_bars(prediction.top_k), width="stretch",
                        key=f"{state.PREDICT_CARD}.{position}.top_k")
