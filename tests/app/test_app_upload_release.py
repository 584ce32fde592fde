"""Photos leave the server's upload store once a page read them, and their answers stay.

Streamlit's AppTest registers every staged upload again before each run; a browser uploads a
file once and then only lists it in the widget's state. The `browser` fixture does the same
(each file is put in the store once) and records the stores, so a test can see what the page
left in them.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from app_helpers import all_text, page, texts
from conftest import make_class_folders, patterned_image, zip_folder
from run_helpers import make_run, tiny_classifier
from streamlit.runtime.memory_uploaded_file_manager import MemoryUploadedFileManager
from streamlit.testing.v1 import AppTest, local_script_runner

from ui import demo, links, state, uploads
from ui import familiarity as ui_familiarity

SESSION = "test session id"  # AppTest's session


def png(variant: int = 0) -> bytes:
    buffer = io.BytesIO()
    patterned_image(variant % 2, variant, 32).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def run_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("release")
    data = make_class_folders(root / "data", {"cats": 6, "dogs": 6}, size=32)
    make_run(root / "home", data, tiny_classifier(2), train=False)
    return root / "home"


class Browser:
    """Puts each file in the session's store once (as a browser does) and keeps the stores."""

    def __init__(self) -> None:
        self.put: dict[str, bytes] = {}
        self.stores: list[MemoryUploadedFileManager] = []

    def register(self, runner: Any, record: Any) -> None:
        self.stores.append(runner._uploaded_file_mgr)
        if record.file_id in self.put:
            return
        self.put[record.file_id] = record.data
        runner._uploaded_file_mgr.add_file(SESSION, record)

    def held(self) -> list[str]:
        """File ids the last run's store still holds."""
        store = self.stores[-1]
        return list(store.file_storage.get(SESSION, {}))


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch, run_home: Path) -> Browser:
    monkeypatch.setenv("TL_STUDIO_HOME", str(run_home))
    seen = Browser()
    monkeypatch.setattr(local_script_runner.LocalScriptRunner, "register_file",
                        lambda runner, record: seen.register(runner, record))
    return seen


def test_predict_releases_each_photo_once_read_and_keeps_showing_its_answer(
        browser: Browser) -> None:
    at = page("4_Predict").run()
    uploader = at.file_uploader(key=state.PREDICT_UPLOAD)
    uploader.upload("first.png", png(0), "image/png")
    uploader.upload("second.png", png(1), "image/png")
    uploader.upload("broken.jpg", b"not a photo", "image/jpeg")
    at.run()
    assert not at.exception, at.exception
    assert len(browser.put) == 3
    assert browser.held() == []  # read, answered, released
    # Streamlit keeps the widget's UploadedFile objects until the next run: emptied too.
    assert [f.getvalue() for f in at.session_state[state.PREDICT_UPLOAD]] == [b"", b"", b""]
    assert texts(at.subheader) == ["first.png", "second.png", "broken.jpg"]
    first_bars = len(at.get("plotly_chart"))
    kept = at.session_state[uploads.KEPT][state.PREDICT_UPLOAD]
    assert len(kept) == 3
    assert all(len(photo.picture or b"") < 200_000 for photo in kept.values())  # small copies

    at.slider(key=state.PREDICT_TOP_K).set_value(1).run()  # a rerun: the store is empty now
    assert not at.exception, at.exception
    assert browser.held() == []
    assert texts(at.subheader) == ["first.png", "second.png", "broken.jpg"]
    assert len(at.get("plotly_chart")) == first_bars == 2
    assert any(e.startswith("Cannot read broken.jpg") for e in texts(at.error))
    assert "Upload one or more photos" not in all_text(at)

    assert [e.label for e in at.expander].count("Why? Where the model looked") == 2


def test_predict_forgets_a_photo_removed_in_the_browser(browser: Browser) -> None:
    at = page("4_Predict").run()
    at.file_uploader(key=state.PREDICT_UPLOAD).upload("only.png", png(2), "image/png")
    at.run()
    assert texts(at.subheader) == ["only.png"]
    at.file_uploader(key=state.PREDICT_UPLOAD).clear()
    at.run()
    assert not at.exception, at.exception
    assert not at.subheader
    assert "Upload one or more photos" in all_text(at)
    assert not at.session_state[uploads.KEPT][state.PREDICT_UPLOAD]


def test_the_demo_view_releases_the_photo_and_keeps_its_answer(browser: Browser) -> None:
    at = page("4_Predict")
    at.query_params[links.VIEW] = links.DEMO
    at.run()
    at.file_uploader(key=demo.UPLOAD).upload("dog.png", png(3), "image/png")
    at.run()
    assert not at.exception, at.exception
    assert browser.held() == []
    answer = [m.value for m in at.markdown if "font-size" in m.value]
    assert answer
    assert len(at.get("image")) == 1  # the heatmap over the kept copy
    at.run()
    assert not at.exception, at.exception
    assert browser.held() == []
    assert [m.value for m in at.markdown if "font-size" in m.value] == answer
    assert len(at.get("image")) == 1


def test_evaluate_try_photos_are_released_and_their_answers_stay(browser: Browser) -> None:
    at = page("3_Evaluate").run()
    assert not at.exception, at.exception
    uploaders = [u for u in at.file_uploader if u.key == ui_familiarity.TRY_KEY]
    if not uploaders:
        pytest.fail("no try-out uploader for an admin: " + all_text(at)[:500])
    uploaders[0].upload("other.png", png(4), "image/png")
    at.run()
    assert not at.exception, at.exception
    assert browser.held() == []
    shown = all_text(at)
    at.run()
    assert not at.exception, at.exception
    assert browser.held() == []
    assert all_text(at) == shown
    assert at.session_state[uploads.KEPT][ui_familiarity.TRY_KEY]
    assert at.file_uploader(key=ui_familiarity.TRY_KEY).proto.max_upload_size_mb \
        == uploads.PHOTO_MB


def test_the_dataset_zip_is_released_once_extracted(browser: Browser, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TL_STUDIO_HOME", str(tmp_path / "home"))
    data = make_class_folders(tmp_path / "pets", {"cats": 4, "dogs": 4}, size=32)
    zip_path = zip_folder(data, tmp_path / "pets.zip", arc_prefix="pets/")
    at = page("1_Dataset").run()
    at.file_uploader(key=state.UPLOAD).upload("pets.zip", zip_path.read_bytes(),
                                              "application/zip")
    at.run()
    assert not at.exception, at.exception
    assert "Report: pets.zip" in all_text(at)
    assert browser.held() == []
    assert at.session_state[state.UPLOAD].getvalue() == b""  # Streamlit's own copy, emptied


def test_what_refresh_makes_of_kept_photos_is_kept() -> None:
    """Another model answers a kept photo once (from its kept copy), not on every rerun.

    AppTest's own way (each run lists the file again): a browser's third run would too.
    """

    def script() -> None:
        import streamlit as st

        from ui import uploads

        files = st.file_uploader("Photos", accept_multiple_files=True, key="up")
        model = st.radio("Model", ["a", "b"], key="model")

        def refresh(kept: list[tuple[str, str]]) -> list[tuple[str, str]]:
            stale = sum(answered_by != model for _name, answered_by in kept)
            st.session_state["answered again"] = st.session_state.get("answered again", 0) + stale
            return [(name, model) for name, _answered_by in kept]

        shown = uploads.read_once("up", files, lambda new: [(f.name, model) for f in new],
                                  refresh=refresh)
        st.text(repr(shown))

    at = AppTest.from_function(script).run()
    at.file_uploader(key="up").upload("x.png", png(5), "image/png")
    at.run()
    assert [t.value for t in at.text] == ["[('x.png', 'a')]"]
    at.radio(key="model").set_value("b").run()
    assert [t.value for t in at.text] == ["[('x.png', 'b')]"]
    at.run()
    assert [t.value for t in at.text] == ["[('x.png', 'b')]"]
    assert at.session_state["answered again"] == 1
