"""A full disk is a message: which disk, how much is free, about how much was needed; what
was saved is kept, and the dataset builder says which photos were added and which not.
ENOSPC is simulated (a write that fails as on a full disk)."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
from app_helpers import FAST, current_dataset
from conftest import make_class_folders
from dataset_helpers import img_bytes

from core import files
from core.config import TrainConfig
from core.data.store import DatasetStore
from core.errors import AppError, DiskFullError
from core.runs.store import RunStore
from core.training import pipeline as training


def full_after(monkeypatch: pytest.MonkeyPatch, calls: int) -> None:
    """File syncs fail with ENOSPC after `calls` of them, as writes to a full disk do."""
    real, seen = os.fsync, [0]

    def fsync(fd: int) -> None:
        seen[0] += 1
        if seen[0] > calls:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd)

    monkeypatch.setattr(files.os, "fsync", fsync)


def test_an_atomic_write_on_a_full_disk_says_which_disk_and_how_much(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "old.json").write_text("{}")
    full_after(monkeypatch, 0)
    with pytest.raises(DiskFullError) as caught:
        files.write_bytes_atomic(tmp_path / "old.json", b"x" * 3_000_000)
    message = str(caught.value)
    assert f"The disk holding {tmp_path} is full" in message and "MB free" in message
    assert "needs about 3.0 MB" in message
    assert isinstance(caught.value, AppError) and isinstance(caught.value, OSError)
    assert (tmp_path / "old.json").read_text() == "{}"  # the previous version is kept
    assert [p.name for p in tmp_path.iterdir()] == ["old.json"]  # no temporary file left


def test_the_builder_says_which_photos_were_added_and_which_not(studio_home: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    store = DatasetStore(studio_home)
    store.create("pets")
    store.add_class("pets", "cats")
    full_after(monkeypatch, 3)
    photos = [(f"photo{i}.png", img_bytes(0, i)) for i in range(6)]
    result = store.add_photos("pets", "cats", photos)
    added = len(result.added)
    assert 1 <= added < 6
    assert [r["file"] for r in result.refused] == [name for name, _ in photos[added:]]
    assert all(r["reason"] == "not added: the disk is full" for r in result.refused)
    assert result.problem and "is full" in result.problem and "MB free" in result.problem
    monkeypatch.undo()
    assert store.get("pets").classes == {"cats": added}  # what was added is kept


def test_training_on_a_full_disk_fails_with_the_message_and_keeps_the_run(
        studio_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = make_class_folders(tmp_path / "data", {"cats": 8, "dogs": 8}, size=32)
    current = current_dataset(data, studio_home)

    def full(self, metrics) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(training.RunWriter, "write_metrics", full)
    config: TrainConfig = FAST
    with pytest.raises(DiskFullError, match="is full: .* MB free"):
        training.train(current.split, config, home=studio_home, dataset_info=current.info())
    [summary] = RunStore(studio_home).list()
    assert summary.status == "failed" and "is full" in (summary.error or "")
    status = json.loads((summary.run_dir / "status.json").read_text())
    assert "Errno 28" not in status["error"]
    assert (summary.run_dir / "model.keras").is_file()  # the model saved before is kept
