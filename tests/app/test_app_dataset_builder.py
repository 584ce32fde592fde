"""The Dataset page's builder and saved datasets, driven by Streamlit's AppTest."""

from __future__ import annotations

from pathlib import Path

import pytest
from app_helpers import all_text, page
from dataset_helpers import img_bytes
from streamlit.testing.v1 import AppTest

from core.audit import choices as audit_choices
from core.config import SplitConfig
from core.data import datasets
from core.data.store import DatasetStore
from core.features import weights as base_weights
from ui import state


def open_builder() -> AppTest:
    at = page("1_Dataset").run()
    return at.radio(key=state.SOURCE_KIND).set_value(state.SOURCE_BUILD).run()


def create(at: AppTest, name: str, classes: list[str]) -> str:
    at.text_input(key=state.BUILD_NAME).input(name)
    at.button(key=state.BUILD_CREATE).click().run()
    for cls in classes:
        at.text_input(key=state.BUILD_NEW_CLASS).input(cls)
        at.button(key=state.BUILD_ADD_CLASS).click().run()
    assert not at.exception, at.exception
    return at.session_state[state.BUILD_DATASET]


def pngs(k: int, n: int, start: int = 0) -> list[tuple[str, bytes, str]]:
    return [(f"{k}-{i}.png", img_bytes(k, i), "image/png") for i in range(start, start + n)]


def headings(at: AppTest) -> list[str]:
    return [m for m in (str(e.value) for e in at.markdown) if m.startswith("#### ")]


def test_build_two_classes_from_uploads_then_use_it(studio_home: Path) -> None:
    at = open_builder()
    dataset_id = create(at, "pets", ["cats", "dogs"])
    at.file_uploader(key=f"{state.BUILD_FILES}{dataset_id}.cats").set_value(pngs(0, 3))
    at.file_uploader(key=f"{state.BUILD_FILES}{dataset_id}.dogs").set_value(
        [*pngs(1, 3), ("broken.jpg", b"\xff\xd8\xff\xe0 cut short", "image/jpeg")])
    at.run()
    assert not at.exception, at.exception
    assert headings(at) == ["#### cats · 3 photos", "#### dogs · 3 photos"]
    assert any("broken.jpg: refused" in str(e.value) for e in at.error)
    at.run()  # a rerun sends the same files again: nothing is added twice
    assert headings(at) == ["#### cats · 3 photos", "#### dogs · 3 photos"]
    assert not at.warning and not at.error
    assert DatasetStore(studio_home).get("pets").classes == {"cats": 3, "dogs": 3}

    # Added photos leave the uploader: its chips (and their X) would look removable there.
    assert at.session_state[state.BUILD_UPLOADER_GENERATION][f"{dataset_id}.cats"] == 1
    assert not at.file_uploader(key=f"{state.BUILD_FILES}{dataset_id}.cats.1").value
    assert f"{state.BUILD_FILES}{dataset_id}.cats" not in [u.key for u in at.file_uploader]

    # One "Use this dataset" button: the builder's checks the photos, the page's chooses.
    assert at.button(key=state.BUILD_USE).label == "Check the photos and split"
    at.button(key=state.BUILD_USE).click().run()
    assert not at.exception, at.exception
    assert "Report: pets" in all_text(at)
    assert [b.label for b in at.button].count("Use this dataset") == 1
    # The report's thumbnails carry the names the files were given, not content hashes.
    captions = [img.caption for element in at.get("image") for img in element.proto.imgs]
    assert "0-0.png" in captions and "1-2.png" in captions, captions
    at.button(key=state.USE_DATASET).click().run()
    current = at.session_state[state.CURRENT]
    assert current.name == "pets" and len(current.split) == 6


def test_camera_shots_are_added_once_each(studio_home: Path) -> None:
    at = open_builder()
    dataset_id = create(at, "desk", ["mug", "pen"])
    at.toggle(key=f"{state.BUILD_CAMERA_ON}{dataset_id}.mug").set_value(True).run()
    camera = at.camera_input(key=f"{state.BUILD_CAMERA}{dataset_id}.mug")
    camera.upload("shot.jpg", img_bytes(2, 1, fmt="JPEG")).run()
    assert headings(at)[0] == "#### mug · 1 photo · add 2 more"
    at.run()  # the same frame comes back on every rerun
    assert headings(at)[0] == "#### mug · 1 photo · add 2 more"
    assert not at.warning
    at.camera_input(key=f"{state.BUILD_CAMERA}{dataset_id}.mug").upload(
        "shot.jpg", img_bytes(2, 2, fmt="JPEG")).run()
    assert headings(at)[0] == "#### mug · 2 photos · add 1 more"
    assert "Class 'pen' needs 3 more photo(s)." in all_text(at)
    assert at.button(key=state.BUILD_USE).disabled
    # The camera alone builds a usable two-class dataset.
    at.camera_input(key=f"{state.BUILD_CAMERA}{dataset_id}.mug").upload(
        "shot.jpg", img_bytes(2, 3, fmt="JPEG")).run()
    at.toggle(key=f"{state.BUILD_CAMERA_ON}{dataset_id}.pen").set_value(True).run()
    for i in range(3):
        at.camera_input(key=f"{state.BUILD_CAMERA}{dataset_id}.pen").upload(
            "shot.jpg", img_bytes(3, i, fmt="JPEG")).run()
    assert headings(at) == ["#### mug · 3 photos", "#### pen · 3 photos"]
    at.button(key=state.BUILD_USE).click().run()
    assert not at.exception, at.exception
    assert "Report: desk" in all_text(at)
    assert {m.label: m.value for m in at.metric}["Usable images"] == "6"


def test_every_photo_of_a_large_class_can_be_shown_and_removed(studio_home: Path) -> None:
    at = open_builder()
    dataset_id = create(at, "many", ["a", "b"])
    DatasetStore(studio_home).add_photos("many", "a", [(n, b) for n, b, _m in pngs(0, 30)])
    at.run()

    def removes() -> list:
        return [b for b in at.button
                if str(b.key).startswith(f"{state.BUILD_REMOVE_PHOTO}{dataset_id}.a.")]

    assert len(removes()) == 24 and "Showing 24 of 30 photos." in all_text(at)
    at.button(key=f"{state.BUILD_SHOWN}{dataset_id}.a.more").click().run()
    assert len(removes()) == 30 and "Showing" not in all_text(at)
    removes()[0].click().run()  # the oldest photo, hidden before "Show more"
    assert not at.exception, at.exception
    assert headings(at)[0] == "#### a · 29 photos"


def test_reopen_in_a_new_session_rename_a_class_and_remove_a_photo(studio_home: Path) -> None:
    store = DatasetStore(studio_home)
    saved = store.create("fruit")
    store.add_class("fruit", "aples")
    added = store.add_photos("fruit", "aples", [(n, b) for n, b, _m in pngs(0, 3)]).added
    at = page("1_Dataset").run()  # a new session: nothing uploaded
    at.radio(key=state.SOURCE_KIND).set_value(state.SOURCE_SAVED).run()
    assert "aples (3)" in at.dataframe[0].value["classes"].iloc[0]
    at.button(key=state.SAVED_EDIT).click().run()
    assert at.session_state[state.SOURCE_KIND] == state.SOURCE_BUILD
    assert headings(at) == ["#### aples · 3 photos"]

    at.text_input(key=f"{state.BUILD_RENAME}{saved.id}.aples").input("apples")
    at.button(key=f"{state.BUILD_RENAME_GO}{saved.id}.aples").click().run()
    assert headings(at) == ["#### apples · 3 photos"]
    at.button(key=f"{state.BUILD_REMOVE_PHOTO}{saved.id}.apples.{added[0]}").click().run()
    assert not at.exception, at.exception
    assert headings(at) == ["#### apples · 2 photos · add 1 more"]
    assert store.get("fruit").classes == {"apples": 2}
    assert added[0] not in [p.name for p in store.photos("fruit", "apples")]


def test_bad_names_are_refused_with_what_to_do(studio_home: Path) -> None:
    at = open_builder()
    at.text_input(key=state.BUILD_NAME).input("a/b")
    at.button(key=state.BUILD_CREATE).click().run()
    assert any("contains /" in str(e.value) for e in at.error)
    create(at, "ok", ["Cats"])
    for bad, words in (("cats", "only in case"), ("CON", "Windows keeps"), ("x.", "ends with")):
        at.text_input(key=state.BUILD_NEW_CLASS).input(bad)
        at.button(key=state.BUILD_ADD_CLASS).click().run()
        assert any(words in str(e.value) for e in at.error), (bad, [e.value for e in at.error])
    assert DatasetStore(studio_home).get("ok").classes == {"Cats": 0}


def test_rename_and_delete_a_saved_dataset_with_confirmation(studio_home: Path) -> None:
    store = DatasetStore(studio_home)
    store.create("old")
    at = page("1_Dataset").run()
    at.radio(key=state.SOURCE_KIND).set_value(state.SOURCE_SAVED).run()
    at.text_input(key=state.SAVED_RENAME).input("new")
    at.button(key=state.SAVED_RENAME_GO).click().run()
    assert [s.name for s in store.list()] == ["new"]
    at.button(key=state.SAVED_DELETE).click().run()
    assert "Delete 'new'?" in all_text(at) and "No run was trained on it" in all_text(at)
    at.button(key=state.SAVED_DELETE_YES).click().run()
    assert not at.exception, at.exception
    assert store.list() == [] and "No saved datasets yet" in all_text(at)


def test_train_now_goes_through_the_train_page_start(
        studio_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline without cached weights, the default options cannot start: the same refusal as
    the Train page's, after the dataset was loaded and split with the default split."""
    keras_home = tmp_path / "keras-home"
    (keras_home / "models").mkdir(parents=True)
    monkeypatch.setenv("KERAS_HOME", str(keras_home))
    monkeypatch.setenv(base_weights.OFFLINE_ENV_VAR, "1")
    store = DatasetStore(studio_home)
    saved = store.create("quick")
    for k, cls in enumerate(["a", "b"]):
        store.add_class("quick", cls)
        store.add_photos("quick", cls, [(n, b) for n, b, _m in pngs(k, 4)])
    at = open_builder()
    at.session_state[state.BUILD_DATASET] = saved.id
    at.run()
    # The audit's choices shown on the Dataset page hold here too: one way to train (issue 27).
    dataset = datasets.ingest(store.get("quick").root)
    excluded = audit_choices.relative_names(dataset.index, dataset.root)[0]
    audit_choices.set_choice(dataset, excluded, audit_choices.EXCLUDE, home=studio_home)
    at.button(key=state.BUILD_TRAIN_NOW).click().run()
    assert not at.exception, at.exception
    current = at.session_state[state.CURRENT]
    assert current.name == "quick" and current.split_config == SplitConfig()
    assert len(current.split) == 7, current.split  # 8 photos, one excluded
    assert current.audit == {"ran": False}
    assert any("Cannot start training" in str(e.value) for e in at.error)
    assert state.JOB_ID not in at.session_state



def test_a_saved_dataset_opens_again_without_uploading(studio_home: Path) -> None:
    store = DatasetStore(studio_home)
    store.create("kept")
    for k, cls in enumerate(["x", "y"]):
        store.add_class("kept", cls)
        store.add_photos("kept", cls, [(n, b) for n, b, _m in pngs(k, 4)])
    at = page("1_Dataset").run()
    at.radio(key=state.SOURCE_KIND).set_value(state.SOURCE_SAVED).run()
    table = at.dataframe[0].value
    assert table.iloc[0]["dataset"] == "kept" and table.iloc[0]["photos"] == 8
    assert table.iloc[0]["source"] == "built here"
    at.button(key=state.SAVED_OPEN).click().run()
    assert not at.exception, at.exception
    assert "Report: kept" in all_text(at)
    assert {m.label: m.value for m in at.metric}["Usable images"] == "8"
    at.button(key=state.USE_DATASET).click().run()
    assert at.session_state[state.CURRENT].loaded.source.startswith("saved:")


def test_a_saved_dataset_whose_photos_are_gone_says_how_to_bring_them_back(
        studio_home: Path, tmp_path: Path) -> None:
    """An upload's extraction or a server folder deleted outside the studio: listed, not opened."""
    import shutil

    from dataset_helpers import two_classes, write_files, zip_bytes

    from core.data import datasets

    store = DatasetStore(studio_home)
    upload = datasets.ingest(zip_bytes(two_classes(3, "pets/")), home=studio_home)
    store.register(upload.root, name="pets.zip", source="pets.zip", kind="upload")
    folder = write_files(tmp_path / "flowers", two_classes(3))
    store.register(folder, name="flowers", source=str(folder), kind="folder")
    shutil.rmtree(upload.root.parent)
    shutil.rmtree(folder)
    at = page("1_Dataset").run()
    at.radio(key=state.SOURCE_KIND).set_value(state.SOURCE_SAVED).run()
    assert not at.exception, at.exception
    classes = dict(zip(at.dataframe[0].value["dataset"], at.dataframe[0].value["classes"],
                       strict=True))
    assert classes == {"pets": "its photos are gone: upload the zip again",
                       "flowers": "its folder is gone from the server"}
    for name, again in (("pets", "Upload the same zip again"),
                        ("flowers", f"Put the folder back at {folder}")):
        at.selectbox(key=state.SAVED_CHOICE).set_value(name).run()
        assert any(again in w.value for w in at.warning), [w.value for w in at.warning]
        assert at.button(key=state.SAVED_OPEN).disabled


def test_the_saved_list_names_the_runs_trained_on_each_dataset(tmp_path: Path) -> None:
    from dataclasses import replace

    from core.data.store import SavedDataset
    from ui.saved_datasets import _table

    pets = SavedDataset(id="x", name="pets", created="2026-12-03T08:00:00+00:00",
                        source="pets.zip", kind="upload", root=tmp_path, classes={"a": 3},
                        runs=[f"run-{i}" for i in range(5)])
    table = _table([pets, replace(pets, name="two", runs=["r1", "r2"]),
                    replace(pets, name="new", runs=[])])
    assert table["runs"].tolist() == ["run-0, run-1, run-2 and 2 more", "r1, r2", "none"]
