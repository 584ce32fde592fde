"""The live camera's page side (AppTest): the switch, live=1, the browser model it serves."""

from __future__ import annotations

from pathlib import Path

import pytest
from app_helpers import page
from conftest import make_class_folders
from run_helpers import make_run, tiny_classifier

from core.export import browser
from ui import demo, links, live_camera


@pytest.fixture
def run_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    photos = make_class_folders(tmp_path / "photos", {"cats": 6, "dogs": 6})
    home = tmp_path / "home"
    run = make_run(home, photos, tiny_classifier(2), train=False)
    monkeypatch.setenv("TL_STUDIO_HOME", str(home))
    return home, run.run_id

def test_live_1_opens_the_demo_view_on_the_live_camera(run_home: tuple[Path, str]) -> None:
    home, run_id = run_home
    at = page("4_Predict")
    at.query_params.update({links.RUN: run_id, links.VIEW: links.DEMO, links.LIVE: "1"})
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    (switch,) = at.toggle
    assert switch.label == "Live camera" and switch.value
    assert not at.camera_input  # one camera stream: the live one (a second stops it on iOS)
    assert [u.key for u in at.file_uploader] == [demo.UPLOAD]  # uploads still work beside it
    served = home / "runs" / run_id / browser.CACHE_FOLDER / browser.FILE
    assert served.is_file() and served.stat().st_size > 0  # made on demand, in the run folder
    # "None of these" travels with it: the features output and the run's reference vectors.
    assert browser.has_features(served)
    reference = served.parent / browser.REFERENCE_FILE
    assert reference.is_file() and reference.stat().st_size > 0

    switch.set_value(False).run()  # back to the snapshot; the address follows
    assert not at.exception, at.exception
    assert links.LIVE not in at.query_params
    assert [c.key for c in at.camera_input] == [demo.CAMERA]

def test_the_predict_page_has_the_switch_off_by_default(run_home: tuple[Path, str]) -> None:
    _, run_id = run_home
    at = page("4_Predict")
    at.query_params[links.RUN] = run_id
    at.run()
    assert not at.exception, at.exception
    live = next(t for t in at.toggle if t.label == live_camera.LABEL)
    assert not live.value
    live.set_value(True).run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
