"""The Export page driven by Streamlit's AppTest, and the Predict page's phone model."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from app_helpers import all_text, page, png_bytes
from conftest import make_class_folders
from run_helpers import LABELS, make_run, tiny_classifier

from core.runs.store import Run


@pytest.fixture(scope="module")
def tiny_home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Run]:
    root = tmp_path_factory.mktemp("app-export")
    data = make_class_folders(root / "data", {name: 12 for name in LABELS})
    home = root / "home"
    return home, make_run(home, data, tiny_classifier(len(LABELS)))


def test_export_runs_in_the_background_then_shows_the_table_and_downloads(
        tiny_home: tuple[Path, Run], monkeypatch: pytest.MonkeyPatch) -> None:
    home, run = tiny_home
    monkeypatch.setenv("TL_STUDIO_HOME", str(home))
    at = page("6_Export").run()
    assert not at.exception, at.exception
    assert "not been exported yet" in all_text(at)
    at.multiselect(key="tl_export_formats").set_value(["tflite_float32", "tflite_int8",
                                                       "tflite_float16"])
    at.button(key="tl_export_start").click().run()
    assert not at.exception, at.exception
    metadata = home / "exports" / run.run_id / "metadata.json"
    deadline = time.monotonic() + 600
    while not metadata.is_file() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert metadata.is_file(), all_text(at)
    time.sleep(1.0)  # the job records its end just after the folder is published
    at.run()
    assert not at.exception, at.exception
    table = at.dataframe[0].value
    assert list(table["File"]) == ["model_float32.tflite", "model_float16.tflite",
                                   "model_int8.tflite"]
    assert set(table["Verdict"]) == {"recommended"}
    assert (table["Latency p50 (ms)"] > 0).all() and (table["Size (MB)"] > 0).all()
    labels = {b.proto.label for b in at.get("download_button")}
    assert labels == {"Whole export folder (zip)", "TensorFlow Lite, float32",
                      "TensorFlow Lite, int8 (full integer)", "TensorFlow Lite, float16"}

    predict = page("4_Predict").run()
    assert not predict.exception, predict.exception
    predict.toggle(key="tl_predict_phone").set_value(True).run()
    assert not predict.exception, predict.exception
    assert "model_int8.tflite" in all_text(predict)  # int8 first: what a phone would run
    predict.radio(key="tl_predict_phone_format").set_value("tflite_float16").run()
    assert not predict.exception, predict.exception
    assert "model_float16.tflite" in all_text(predict)
    predict.file_uploader(key="tl_predict_upload").upload("fish.png", png_bytes(2, 50),
                                                          "image/png")
    predict.run()
    assert not predict.exception, predict.exception
    assert [s.value for s in predict.subheader] == ["fish.png"]
    assert not predict.error
