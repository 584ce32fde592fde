"""The Predict page driven by Streamlit's AppTest: upload photos, take one, read the cards."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from app_helpers import (
    TIMEOUT,
    all_text,
    chart_titled,
    page,
    png_bytes,
    texts,
    train_small_run,
    values,
)
from PIL import Image
from streamlit.testing.v1 import AppTest

from core.results.prediction import Prediction
from core.training.result import TrainResult
from ui import predict as ui_predict
from ui import state

LABELS = ["cats", "dogs", "fish"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    """A studio home with one completed run (random-weights base, 2 epochs)."""
    return train_small_run(tmp_path_factory, LABELS)


@pytest.fixture
def home(trained: TrainResult, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = trained.run_dir.parent.parent
    monkeypatch.setenv("TL_STUDIO_HOME", str(home))
    return home


def predict_page() -> AppTest:
    return page("4_Predict").run()


def jpeg_bytes(class_number: int, variant: int) -> bytes:
    buffer = io.BytesIO()
    Image.open(io.BytesIO(png_bytes(class_number, variant))).save(buffer, "JPEG")
    return buffer.getvalue()


def test_without_runs_the_page_says_to_train_first(studio_home: Path) -> None:
    at = predict_page()
    assert not at.exception, at.exception
    assert "No finished training run yet" in all_text(at)
    assert {link.proto.label for link in at.get("page_link")} >= {"Train a model"}
    assert not at.file_uploader


def test_uploaded_photos_get_top_k_bars_and_a_bad_one_its_error(
    home: Path, trained: TrainResult
) -> None:
    at = predict_page()
    assert not at.exception, at.exception
    assert at.selectbox(key=state.PREDICT_RUN).value == trained.run_id  # the latest run
    uploader = at.file_uploader(key=state.PREDICT_UPLOAD)
    assert uploader.accept_multiple_files
    assert set(uploader.allowed_type) >= {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp",
                                          ".tif", ".tiff"}
    assert "Upload one or more photos" in all_text(at)

    uploader.upload("dog.png", png_bytes(1, 500), "image/png")
    uploader.upload("broken.jpg", b"this is not a photo", "image/jpeg")
    at.run()
    assert not at.exception, at.exception
    assert texts(at.subheader) == ["dog.png", "broken.jpg"]
    assert any(e.startswith("Cannot read broken.jpg") for e in texts(at.error))

    table = at.dataframe[0].value
    assert table["Photo"].tolist() == ["dog.png", "broken.jpg"]
    assert table["Prediction"].iloc[0] in LABELS
    bars = chart_titled(at, "Top predictions")
    shown = values(bars["data"][0]["y"])
    assert len(shown) == 3 and set(shown) == set(LABELS)  # top-3 by default
    assert shown[0] == table["Prediction"].iloc[0]
    probabilities = values(bars["data"][0]["x"])
    assert probabilities == sorted(probabilities, reverse=True)
    assert sum(probabilities) == pytest.approx(1.0, abs=1e-4)

    # The photo as the model saw it: the run's input size, upright.
    image = at.get("image")[0]
    assert "224×224" in image.captions[0]

    at.slider(key=state.PREDICT_TOP_K).set_value(2).run()
    assert len(values(chart_titled(at, "Top predictions")["data"][0]["y"])) == 2


def test_the_same_photo_twice_gets_two_cards(home: Path) -> None:
    at = predict_page()
    uploader = at.file_uploader(key=state.PREDICT_UPLOAD)
    photo = jpeg_bytes(0, 3)
    uploader.upload("one.jpg", photo, "image/jpeg")
    uploader.upload("again.jpg", photo, "image/jpeg")
    at.run()
    assert not at.exception, at.exception  # identical predictions, identical charts
    assert texts(at.subheader) == ["one.jpg", "again.jpg"]
    assert len(at.get("plotly_chart")) == 2


def test_a_camera_photo_is_predicted_too(home: Path) -> None:
    at = predict_page()
    at.toggle(key=state.PREDICT_CAMERA_ON).set_value(True).run()
    at.camera_input(key=state.PREDICT_CAMERA).upload("camera.jpg", jpeg_bytes(2, 7))
    at.run()
    assert not at.exception, at.exception
    assert texts(at.subheader) == ["camera.jpg"]
    assert chart_titled(at, "Top predictions")


def test_unsure_predictions_carry_a_visible_warning() -> None:
    def card(unsure: bool) -> None:
        import numpy as np

        from core.results.prediction import Prediction
        from ui import predict as ui_predict

        probability = 0.45 if unsure else 0.92
        ui_predict.prediction_card(Prediction(
            file="photo.jpg", top_k=[("cats", probability), ("dogs", 1 - probability)],
            unsure=unsure, image=np.zeros((8, 8, 3), np.uint8), threshold=0.6), 8, 0)

    sure = AppTest.from_function(card, args=(False,), default_timeout=TIMEOUT).run()
    assert not sure.exception, sure.exception
    assert not sure.warning
    assert "### cats · 92%" in texts(sure.markdown)
    # A high probability is not called "sure": it is the closest class it knows (issue 27).
    assert any("closest of the classes it knows" in c for c in texts(sure.caption))
    assert "sure" not in " ".join(texts(sure.markdown) + texts(sure.caption)).replace(
        "unsure", "")
    unsure = AppTest.from_function(card, args=(True,), default_timeout=TIMEOUT).run()
    warning = " ".join(texts(unsure.warning))
    assert "The model is unsure" in warning and "45%" in warning and "60%" in warning


def test_the_model_is_loaded_once_until_its_file_changes(home: Path,
                                                         trained: TrainResult) -> None:
    first = ui_predict.predictor(trained.run_dir)
    assert ui_predict.predictor(trained.run_dir) is first
    model = trained.run_dir / "model.keras"
    stat = model.stat()
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    try:
        assert ui_predict.predictor(trained.run_dir) is not first
    finally:
        os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    prediction = first.predict(png_bytes(0, 3))[0]
    assert isinstance(prediction, Prediction) and prediction.label in LABELS
    assert prediction.image.shape == (224, 224, 3) and prediction.image.dtype == np.uint8


def test_a_damaged_model_is_an_error_message_not_a_traceback(
    trained: TrainResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    home = tmp_path / "home"
    run_dir = home / "runs" / trained.run_id
    shutil.copytree(trained.run_dir, run_dir)
    (run_dir / "model.keras").write_bytes(b"PK\x03\x04 not a real model")
    monkeypatch.setenv("TL_STUDIO_HOME", str(home))
    at = predict_page()
    assert not at.exception, at.exception
    warning = " ".join(texts(at.warning))
    assert trained.run_id in warning and "model.keras cannot be loaded" in warning
    assert not at.file_uploader  # the broken run is not offered
