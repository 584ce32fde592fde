"""With TL_STUDIO_DATA_ROOTS set, a saved dataset whose folder lies outside those folders
says so when opened, instead of "No class folders found"."""

from __future__ import annotations

from pathlib import Path

import pytest
from app_helpers import page, texts
from conftest import make_class_folders

from core.data import datasets
from core.data.store import ingest_saved
from core.errors import DatasetError
from ui import state


def test_ingest_refuses_a_folder_outside_the_shared_ones(tmp_path: Path) -> None:
    pets = make_class_folders(tmp_path / "private" / "pets", {"cats": 4, "dogs": 4}, size=32)
    with pytest.raises(DatasetError, match="outside the folders this server shares"):
        datasets.ingest(pets, within=[tmp_path / "shared"])


def test_a_saved_folder_outside_the_data_roots_says_so(
        studio_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pets = make_class_folders(tmp_path / "private" / "pets", {"cats": 4, "dogs": 4}, size=32)
    ingest_saved(pets, home=studio_home)  # saved before the server shared fewer folders
    (tmp_path / "shared").mkdir()
    monkeypatch.setenv("TL_STUDIO_DATA_ROOTS", str(tmp_path / "shared"))
    at = page("1_Dataset")
    at.session_state[state.SOURCE_KIND] = state.SOURCE_SAVED
    at.run()
    at.selectbox(key=state.SAVED_CHOICE).set_value("pets").run()
    at.button(key=state.SAVED_OPEN).click().run()
    assert not at.exception, at.exception
    errors = texts(at.error)
    assert any("outside the folders this server shares" in e for e in errors), errors
    assert not any("No class folders found" in e for e in errors)
