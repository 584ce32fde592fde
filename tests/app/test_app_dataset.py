"""The Dataset page driven by Streamlit's AppTest: upload, folder, report, split, use."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import streamlit as st
from conftest import make_class_folders, patterned_image, zip_folder
from streamlit.testing.v1 import AppTest

from ui import state

REPO = Path(__file__).resolve().parents[2]
APP = str(REPO / "streamlit_app.py")
TIMEOUT = 120  # seconds per script run; ingestion starts worker processes on 2 shared cores


@pytest.fixture
def messy_folder(tmp_path: Path) -> Path:
    """Three classes with a file that is not an image, a tiny image and a duplicate."""
    root = make_class_folders(tmp_path / "pets", {"cats": 8, "dogs": 8, "fish": 8})
    (root / "cats" / "notes.jpg").write_bytes(b"this is a text file, not a photo")
    patterned_image(0, 99, size=8).save(root / "dogs" / "tiny.png")
    (root / "fish" / "copy.png").write_bytes((root / "fish" / "img_0000.png").read_bytes())
    (root / ".DS_Store").write_bytes(b"\0\0")
    return root


def page() -> AppTest:
    """The app showing the Dataset page (not run yet), as the browser opens /Dataset."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    return at.switch_page("app_pages/1_Dataset.py")


def texts(elements) -> list[str]:
    return [str(e.value) for e in elements]


def all_text(at: AppTest) -> str:
    parts = [*texts(at.markdown), *texts(at.caption), *texts(at.info), *texts(at.success),
             *texts(at.warning), *texts(at.error), *texts(at.header), *texts(at.subheader)]
    return "\n".join(parts)


def rejected_table(at: AppTest):
    for frame in at.dataframe:
        if "reason" in frame.value.columns:
            return frame.value
    raise AssertionError("no table of rejected files on the page")


def upload(at: AppTest, zip_path: Path) -> AppTest:
    at.file_uploader(key=state.UPLOAD).upload(zip_path.name, zip_path.read_bytes(),
                                               "application/zip")
    return at.run()


def test_without_a_dataset_the_page_says_what_to_do(studio_home: Path) -> None:
    at = page().run()
    assert not at.exception
    assert "No dataset loaded yet" in all_text(at)
    assert "Load this folder" in all_text(at)
    limit = int(st.get_option("server.maxUploadSize"))
    uploader = at.file_uploader(key=state.UPLOAD)
    assert f"{limit:,} MB" in uploader.label
    assert any(f"Upload limit: {limit:,} MB" in c for c in texts(at.caption))
    assert uploader.allowed_type == [".zip"]
    assert not at.button  # nothing to use or load yet on the upload route
    assert state.CURRENT not in at.session_state


def test_config_sets_an_upload_limit_of_at_least_one_gigabyte() -> None:
    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert config["server"]["maxUploadSize"] >= 1024
    assert config["server"]["runOnSave"] is False
    assert config["browser"]["gatherUsageStats"] is False
    assert config["client"]["showErrorDetails"] in ("type", "none")


def test_config_turns_off_the_full_garbage_collection_after_every_script_run() -> None:
    """With TensorFlow loaded a full collection holds the GIL for about a second, and every
    open Train page reruns its live panel each second: on by default, it starved training
    (bench/live_panel_gc.py)."""
    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert config["runner"]["postScriptGC"] is False


def test_uploaded_zip_shows_the_report_and_can_be_used(
    studio_home: Path, messy_folder: Path, tmp_path: Path
) -> None:
    zip_path = zip_folder(messy_folder, tmp_path / "pets.zip", arc_prefix="pets/")
    at = upload(page().run(), zip_path)
    assert not at.exception, at.exception

    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Classes"] == "3"
    assert metrics["Usable images"] == "24"
    assert metrics["Rejected files"] == "2"
    assert metrics["Duplicate groups"] == "1"
    assert metrics["Ignored files"] == "1"

    rejected = rejected_table(at)
    reasons = dict(zip(rejected["file"], rejected["reason"], strict=True))
    assert "not an image" in reasons["cats/notes.jpg"]
    assert "too small" in reasons["dogs/tiny.png"]
    assert len(at.get("plotly_chart")) == 2  # images per class, and per class and split
    assert len(at.get("image")) == 18  # six thumbnails per class
    assert any("only 8 images" in w for w in texts(at.warning))
    assert not at.error

    split = next(f.value for f in at.dataframe if "Train" in f.value.columns)
    assert split.loc["all classes", "Total"] == 24
    assert set(split.index) == {"cats", "dogs", "fish", "all classes"}

    # the extraction lands under the studio home
    assert any((studio_home / "uploads").iterdir())

    at.button(key=state.USE_DATASET).click().run()
    assert not at.exception
    current = at.session_state[state.CURRENT]
    assert current.name == "pets.zip"
    assert sorted(current.split["split"].unique()) == ["test", "train", "val"]
    assert len(current.split) == 24
    shown = split.loc["all classes"]
    assert current.split_counts() == {
        "train": shown["Train"], "val": shown["Validation"], "test": shown["Test"]}
    assert "In use for training: pets.zip" in all_text(at)
    assert current.info()["classes"] == ["cats", "dogs", "fish"]


def test_same_upload_is_not_ingested_again_on_rerun(
    studio_home: Path, small_dataset: Path, tmp_path: Path
) -> None:
    at = upload(page().run(), zip_folder(small_dataset, tmp_path / "small.zip"))
    first = at.session_state[state.LOADED]
    at.run()
    assert at.session_state[state.LOADED] is first


def test_folder_on_the_server_route(studio_home: Path, messy_folder: Path) -> None:
    at = page().run()
    at.radio(key=state.SOURCE_KIND).set_value(state.SOURCE_FOLDER).run()
    at.text_input(key=state.FOLDER).input(str(messy_folder))
    at.button(key=state.LOAD_FOLDER).click().run()
    assert not at.exception, at.exception
    assert {m.label: m.value for m in at.metric}["Usable images"] == "24"
    assert "not an image" in rejected_table(at).set_index("file").loc["cats/notes.jpg", "reason"]
    assert at.session_state[state.LOADED].name == "pets"


def test_server_folders_are_limited_to_the_data_roots(
    studio_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = make_class_folders(tmp_path / "shared" / "pets", {"cats": 4, "dogs": 4}).parent
    secret = make_class_folders(tmp_path / "secret" / "pets", {"cats": 4, "dogs": 4})
    (shared / "link").symlink_to(secret, target_is_directory=True)
    monkeypatch.setenv("TL_STUDIO_DATA_ROOTS", f"{tmp_path / 'elsewhere'}:{shared}")
    at = page().run()
    at.radio(key=state.SOURCE_KIND).set_value(state.SOURCE_FOLDER).run()
    for outside in (secret, shared / ".." / "secret" / "pets", shared / "link", Path("/etc")):
        at.text_input(key=state.FOLDER).input(str(outside))
        at.button(key=state.LOAD_FOLDER).click().run()
        assert not at.exception, at.exception
        assert any("outside the folders this server shares" in e and str(shared) in e
                   for e in texts(at.error)), (outside, texts(at.error))
        assert state.LOADED not in at.session_state, outside
    # Links inside a shared folder do not lead out of it either: a linked class folder and a
    # linked photo are listed as refused, never read or shown.
    (shared / "pets" / "fish").symlink_to(secret / "cats", target_is_directory=True)
    (shared / "pets" / "cats" / "stolen.png").symlink_to(next((secret / "dogs").iterdir()))
    at.text_input(key=state.FOLDER).input(str(shared / "pets"))
    at.button(key=state.LOAD_FOLDER).click().run()
    assert not at.exception, at.exception
    loaded = at.session_state[state.LOADED]
    assert loaded.name == "pets"
    assert loaded.dataset.report.classes == {"cats": 4, "dogs": 4}
    assert not any(str(secret) in p for p in loaded.dataset.index["path"])
    refused = {r["file"]: r["reason"] for r in loaded.dataset.report.rejected}
    assert "outside the folders this server shares" in refused["cats/stolen.png"]
    assert sum("outside the folders" in r for f, r in refused.items() if f.startswith("fish/")) == 4
    # Opened again from the saved datasets, the same links stay refused.
    at.radio(key=state.SOURCE_KIND).set_value(state.SOURCE_SAVED).run()
    at.selectbox(key=state.SAVED_CHOICE).set_value("pets").run()
    at.button(key=state.SAVED_OPEN).click().run()
    assert not at.exception, at.exception
    again = at.session_state[state.LOADED].dataset
    assert again.report.classes == {"cats": 4, "dogs": 4}
    assert not any(str(secret) in p for p in again.index["path"])


def test_missing_folder_and_empty_path_give_clear_errors(
    studio_home: Path, tmp_path: Path
) -> None:
    at = page().run()
    at.radio(key=state.SOURCE_KIND).set_value(state.SOURCE_FOLDER).run()
    at.button(key=state.LOAD_FOLDER).click().run()
    assert not at.exception
    assert any("Type the path of a folder" in e for e in texts(at.error))

    at.text_input(key=state.FOLDER).input(str(tmp_path / "no-such-folder"))
    at.button(key=state.LOAD_FOLDER).click().run()
    assert not at.exception
    assert any("no-such-folder" in e for e in texts(at.error)), texts(at.error)
    assert state.LOADED not in at.session_state


def test_not_a_zip_upload_is_a_clear_error(studio_home: Path) -> None:
    at = page().run()
    at.file_uploader(key=state.UPLOAD).upload("photos.zip", b"not really a zip file",
                                              "application/zip")
    at.run()
    assert not at.exception
    assert at.error, "an unreadable zip must be reported with st.error"
    assert state.LOADED not in at.session_state


def test_unusable_dataset_shows_errors_and_cannot_be_used(
    studio_home: Path, tmp_path: Path
) -> None:
    one_class = make_class_folders(tmp_path / "one", {"only": 5})
    at = upload(page().run(), zip_folder(one_class, tmp_path / "one.zip"))
    assert not at.exception
    assert any("Only one class folder" in e for e in texts(at.error))
    assert any("cannot be used yet" in e for e in texts(at.error))
    assert not [b for b in at.button if b.key == state.USE_DATASET]


def test_split_settings_come_from_split_config_and_bad_ones_are_explained(
    studio_home: Path, small_dataset: Path, tmp_path: Path
) -> None:
    at = upload(page().run(), zip_folder(small_dataset, tmp_path / "small.zip"))
    train = at.slider(key=f"{state.SPLIT_PREFIX}.train_fraction")
    assert train.label == "Train share"
    assert (train.min, train.max, train.step) == (0.05, 0.95, 0.05)
    assert "Share of each class used to train" in train.help
    assert at.number_input(key=f"{state.SPLIT_PREFIX}.seed").value == 0

    train.set_value(0.8).run()
    assert not at.exception
    assert any("add up to 1" in e for e in texts(at.error))
    assert not [b for b in at.button if b.key == state.USE_DATASET]

    at.slider(key=f"{state.SPLIT_PREFIX}.val_fraction").set_value(0.1)
    at.slider(key=f"{state.SPLIT_PREFIX}.test_fraction").set_value(0.1)
    at.number_input(key=f"{state.SPLIT_PREFIX}.seed").set_value(7)
    at.run()
    assert not at.error
    at.button(key=state.USE_DATASET).click().run()
    current = at.session_state[state.CURRENT]
    assert current.split_config.train_fraction == pytest.approx(0.8)
    assert current.split_config.seed == 7
    assert current.split_counts()["train"] > current.split_counts()["val"]


def test_coming_back_shows_the_dataset_in_use(
    studio_home: Path, small_dataset: Path, tmp_path: Path
) -> None:
    at = upload(page().run(), zip_folder(small_dataset, tmp_path / "small.zip"))
    at.button(key=state.USE_DATASET).click().run()
    # As after a page switch: the uploader is empty again, the session remembers.
    at.file_uploader(key=state.UPLOAD).clear()
    at.run()
    assert not at.exception
    assert "In use for training: small.zip" in all_text(at)
    assert "Report: small.zip" in all_text(at)
    assert {m.label: m.value for m in at.metric}["Usable images"] == "36"
