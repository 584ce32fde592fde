"""The Compare page driven by Streamlit's AppTest: the runs table, overlaid curves, problem runs
and deleting with confirmation."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pandas as pd
import pytest
from app_helpers import FAST, all_text, chart_titled, page, share_caches, texts, train_run, values
from conftest import make_class_folders
from streamlit.testing.v1 import AppTest

from core.config import TrainConfig
from core.runs import interval
from core.runs.store import RunStore
from core.training.result import TrainResult
from ui import state


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> list[TrainResult]:
    """Two completed runs of one dataset (2 and 3 epochs), oldest first."""
    root = make_class_folders(tmp_path_factory.mktemp("data") / "pets",
                              {"cats": 12, "dogs": 12, "fish": 12})
    home = tmp_path_factory.mktemp("home")
    share_caches(home, tmp_path_factory)
    first = train_run(root, home)
    second = train_run(root, home, dataclasses.replace(FAST, epochs=3, hidden_units=(16,)))
    return [first, second]


@pytest.fixture
def home(two_runs: list[TrainResult], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the two runs' home (tests delete runs), plus a failed and a broken run."""
    home = tmp_path / "home"
    shutil.copytree(two_runs[0].run_dir.parent, home / "runs")
    store = RunStore(home)
    failed = store.create(TrainConfig(weights=None), ["cats", "dogs"], None,
                          {"name": "pets.zip"}, device={"kind": "cpu"})
    failed.set_status("failed", "Out of memory: lower the batch size.")
    broken = home / "runs" / "20200101-000000-mobilenet_v2-broken"
    shutil.copytree(two_runs[0].run_dir, broken)
    (broken / "config.json").unlink()
    monkeypatch.setenv("TL_STUDIO_HOME", str(home))
    return home


def compare_page() -> AppTest:
    return page("5_Compare").run()


def test_without_runs_the_page_says_to_train_first(studio_home: Path) -> None:
    at = compare_page()
    assert not at.exception, at.exception
    assert "No runs yet" in all_text(at)
    assert "Train a model" in {link.proto.label for link in at.get("page_link")}


def test_one_row_per_run_with_what_people_compare(home: Path,
                                                  two_runs: list[TrainResult]) -> None:
    at = compare_page()
    assert not at.exception, at.exception
    frame = at.dataframe[0].value
    # The run's name, then its test accuracy with the interval (issue 27): the first number.
    assert list(frame.columns[:2]) == ["Run", "Test accuracy (95% interval)"]
    assert not (frame.astype(str) == "None").to_numpy().any()
    table = frame.set_index("Id")
    assert len(table) == 4
    first, second = two_runs
    row = table.loc[second.run_id]
    assert row["Run"].startswith("small.zip · mobilenet_v2 · ")
    assert second.run_id not in row["Run"]
    photos = second.evaluation.num_samples
    assert row["Test accuracy (95% interval)"] == interval.accuracy_text(
        second.test_accuracy, photos)
    assert f"({photos} photos: " in row["Test accuracy (95% interval)"]
    assert row["Status"] == "completed" and row["Base"] == "mobilenet_v2"
    assert row["Training"] == "frozen base (head only)"
    assert row["Dataset"] == "small.zip"
    assert row["Parameters"] > 2_257_984 and row["Depth"] == 155
    assert row["Model size (MB)"] == pytest.approx(
        (second.run_dir / "model.keras").stat().st_size / 1e6)
    assert row["Avg s / epoch"] > 0
    assert row["Epochs"] == 3 and 1 <= row["Best epoch"] <= 3
    if row["CV accuracy"] is None or pd.isna(row["CV accuracy"]):
        assert row["Best val. accuracy"] == pytest.approx(second.best_val_accuracy)
    else:  # the search trained on the validation photos: no "validation" figure is shown
        assert pd.isna(row["Best val. accuracy"])
    assert table.loc[first.run_id, "Epochs"] == 2

    assert table.loc["20200101-000000-mobilenet_v2-broken", "Status"] == "broken"
    assert "config.json is missing" in table.loc["20200101-000000-mobilenet_v2-broken",
                                                 "Problem"]
    warning = " ".join(texts(at.warning))
    assert "config.json is missing" in warning and "Out of memory" in warning

    # Curves: the runs with epochs are overlaid, one line each.
    chosen = at.multiselect(key=state.COMPARE_RUNS)
    assert set(chosen.value) == {first.run_id, second.run_id, "20200101-000000-mobilenet_v2-broken"}
    figure = chart_titled(at, "Validation accuracy by run")
    # The legend names runs as the table does, never by id.
    assert {t["name"] for t in figure["data"]} <= set(table["Run"])
    chosen.set_value([first.run_id, second.run_id]).run()
    at.segmented_control(key=state.COMPARE_METRIC).set_value("loss").run()
    assert not at.exception, at.exception
    figure = chart_titled(at, "Training loss by run")
    lines = {t["name"]: len(values(t["x"])) for t in figure["data"]}
    assert lines == {table.loc[first.run_id, "Run"]: 2, table.loc[second.run_id, "Run"]: 3}


def test_delete_asks_first_then_removes_the_run(home: Path,
                                                two_runs: list[TrainResult]) -> None:
    at = compare_page()
    victim = two_runs[0].run_id
    assert at.button(key=state.COMPARE_DELETE_ASK).disabled
    at.selectbox(key=state.COMPARE_DELETE).set_value(victim).run()
    at.button(key=state.COMPARE_DELETE_ASK).click().run()
    assert not at.exception, at.exception
    assert "This cannot be undone" in all_text(at)
    assert (home / "runs" / victim).is_dir(), "nothing is deleted before confirming"

    at.button(key=state.COMPARE_DELETE_YES).click().run()
    assert not at.exception, at.exception
    assert not (home / "runs" / victim).exists()
    assert any(f"Deleted run {victim}" in s for s in texts(at.success))
    assert victim not in at.dataframe[0].value["Run"].tolist()

    # A broken run can be deleted too; "Keep it" keeps it.
    broken = "20200101-000000-mobilenet_v2-broken"
    at.selectbox(key=state.COMPARE_DELETE).set_value(broken).run()
    at.button(key=state.COMPARE_DELETE_ASK).click().run()
    at.button(key=state.COMPARE_DELETE_NO).click().run()
    assert (home / "runs" / broken).is_dir()
    at.selectbox(key=state.COMPARE_DELETE).set_value(broken).run()
    at.button(key=state.COMPARE_DELETE_ASK).click().run()
    at.button(key=state.COMPARE_DELETE_YES).click().run()
    assert not (home / "runs" / broken).exists()


def test_a_run_still_training_is_not_deleted(home: Path) -> None:
    writer = RunStore(home).create(TrainConfig(weights=None), ["cats", "dogs"], None,
                                   {"name": "pets.zip"}, device={"kind": "cpu"})
    at = compare_page()
    at.selectbox(key=state.COMPARE_DELETE).set_value(writer.run_id).run()
    at.button(key=state.COMPARE_DELETE_ASK).click().run()
    at.button(key=state.COMPARE_DELETE_YES).click().run()
    assert not at.exception, at.exception
    assert any("still training" in e for e in texts(at.error))
    assert writer.run_dir.is_dir()


def test_deleting_the_last_run_leaves_the_empty_state(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    writer = RunStore(home).create(TrainConfig(weights=None), ["cats", "dogs"], None,
                                   {"name": "pets.zip"}, device={"kind": "cpu"})
    writer.set_status("cancelled")
    monkeypatch.setenv("TL_STUDIO_HOME", str(home))
    at = compare_page()
    at.selectbox(key=state.COMPARE_DELETE).set_value(writer.run_id).run()
    at.button(key=state.COMPARE_DELETE_ASK).click().run()
    at.button(key=state.COMPARE_DELETE_YES).click().run()
    assert not at.exception, at.exception
    assert any(f"Deleted run {writer.run_id}" in s for s in texts(at.success))
    assert "No runs yet" in all_text(at)
