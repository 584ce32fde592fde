"""A saved dataset whose record (saved.json) is damaged is listed as damaged with the reason,
never dropped silently; it can be deleted. A dataset a running training reads cannot be."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from app_helpers import page
from dataset_helpers import img_bytes

from core.__main__ import main
from core.config import TrainConfig
from core.data.store import META_FILE, DatasetStore
from core.errors import DatasetError
from core.runs.store import RunStore
from ui import state


@pytest.fixture
def store(studio_home: Path) -> DatasetStore:
    store = DatasetStore(studio_home)
    store.create("pets")
    for k, cls in enumerate(["cats", "dogs"]):
        store.add_class("pets", cls)
        store.add_photos("pets", cls, [(f"{i}.png", img_bytes(k, i)) for i in range(3)])
    return store


def damage(store: DatasetStore, change: Any) -> Path:
    folder = store.dir / store.get("pets").id
    meta = json.loads((folder / META_FILE).read_text())
    text = change(meta)
    (folder / META_FILE).write_text(text if isinstance(text, str) else json.dumps(meta))
    return folder


DAMAGE = [
    lambda m: m.update(name=5),
    lambda m: m.update(kind="stolen"),
    lambda m: m.update(root=["/"]),
    lambda m: m.update(past_roots="x"),
    lambda m: m.update(created=12),
    lambda m: "{not json",
    lambda m: "[]",
]


@pytest.mark.parametrize("change", DAMAGE)
def test_a_damaged_record_is_listed_as_damaged_and_can_be_deleted(
        store: DatasetStore, change: Any, capsys: pytest.CaptureFixture[str]) -> None:
    folder = damage(store, change)
    [listed] = store.list()
    assert listed.damaged and META_FILE in listed.damaged
    assert not listed.available
    assert main(["--home", str(store.home), "datasets"]) == 0
    assert "damaged" in capsys.readouterr().out
    assert store.delete(listed.id) == []
    assert not folder.exists() and store.list() == []


def test_the_dataset_page_lists_a_damaged_dataset(store: DatasetStore) -> None:
    damage(store, lambda m: m.update(name=5))
    at = page("1_Dataset")
    at.session_state[state.SOURCE_KIND] = state.SOURCE_SAVED
    at.run()
    assert not at.exception, at.exception
    assert any("damaged" in str(e.value) for e in at.error)


def test_a_dataset_a_running_training_reads_cannot_be_deleted(store: DatasetStore) -> None:
    saved = store.get("pets")
    RunStore(store.home).create(TrainConfig(weights=None), ["cats", "dogs"], None,
                                {"name": "pets", "root": str(saved.root)}, input_size=32,
                                device={"kind": "cpu"})  # status "running", by this process
    with pytest.raises(DatasetError, match="in use by a training; cancel it first"):
        store.delete("pets", confirm_runs=True)
    assert store.get("pets")
