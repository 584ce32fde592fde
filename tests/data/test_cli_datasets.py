"""`python -m core datasets`, and train / inspect taking a saved dataset's name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dataset_helpers import img_bytes
from test_cli import run_cli

from core.data.store import DatasetStore
from core.errors import DatasetError


def test_datasets_json_lists_saved_and_train_accepts_a_name(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert json.loads(run_cli("datasets", "--json", home=home).stdout) == []
    store = DatasetStore(home)
    store.create("pets")
    for k, cls in enumerate(["cats", "dogs"]):
        store.add_class("pets", cls)
        store.add_photos("pets", cls, [(f"{i}.png", img_bytes(k, i)) for i in range(6)])
    rows = json.loads(run_cli("datasets", "--json", home=home).stdout)
    assert [(r["name"], r["classes"], r["source"], r["runs"]) for r in rows] == [
        ("pets", {"cats": 6, "dogs": 6}, "built here", [])]
    assert set(rows[0]) == {"name", "classes", "created", "source", "runs"}

    report = json.loads(run_cli("inspect", "PETS", "--json", home=home).stdout)
    assert report["classes"] == {"cats": 6, "dogs": 6} and report["usable"]

    done = run_cli("train", "pets", "--backbone", "mobilenet_v2", "--weights", "none",
                   "--epochs", "1", "--batch-size", "8", "--json", home=home)
    run_id = json.loads(done.stdout)["run_id"]
    rows = json.loads(run_cli("datasets", "--json", home=home).stdout)
    assert rows[0]["runs"] == [run_id]
    runs = json.loads(run_cli("runs", "--json", home=home).stdout)
    assert runs[0]["dataset"] == "pets"

    with pytest.raises(DatasetError, match=run_id):  # deleting asks first, naming the run
        store.delete("pets")
    assert store.delete("pets", confirm_runs=True) == [run_id]
    photo = tmp_path / "cat.png"
    photo.write_bytes(img_bytes(0, 99))
    predicted = run_cli("predict", run_id, str(photo), "--json", home=home)
    assert "cats" in predicted.stdout  # the run still predicts without its dataset


def test_a_folder_read_once_becomes_a_saved_dataset(tmp_path: Path) -> None:
    home = tmp_path / "home"
    folder = tmp_path / "flowers"
    for k, cls in enumerate(["daisy", "rose"]):
        (folder / cls).mkdir(parents=True)
        for i in range(3):
            (folder / cls / f"{i}.png").write_bytes(img_bytes(k, i))
    run_cli("inspect", str(folder), "--json", home=home)
    run_cli("inspect", str(folder), "--json", home=home)  # the second read saves nothing new
    rows = json.loads(run_cli("datasets", "--json", home=home).stdout)
    assert [(r["name"], r["classes"], r["source"]) for r in rows] == [
        ("flowers", {"daisy": 3, "rose": 3}, str(folder.resolve()))]
    missing = run_cli("train", "no-such-dataset", home=home, check=False)
    assert missing.returncode == 2 and "no saved dataset has that name (saved: flowers)" in missing.stderr
    text = run_cli("datasets", home=home).stdout
    assert text.startswith("flowers  (daisy 3, rose 3; from ")
