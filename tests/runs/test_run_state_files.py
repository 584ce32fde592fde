"""State files are untrusted: wrong types in the run index or a run folder's files never
crash `core runs` or a page. A bad index is rebuilt; a bad run is listed as broken with the
reason."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from app_helpers import page
from conftest import make_class_folders
from run_helpers import make_run, tiny_classifier

from core.__main__ import main
from core.runs.store import RunStore
from core.status import BROKEN, COMPLETED


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home with one completed run, copied by each test before damaging it."""
    root = tmp_path_factory.mktemp("state")
    data = make_class_folders(root / "data", {"cats": 6, "dogs": 6}, size=32)
    home = root / "home"
    make_run(home, data, tiny_classifier(2), train=False)
    RunStore(home).list()  # writes the index
    return home


@pytest.fixture
def home(pristine: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    shutil.copytree(pristine, home, symlinks=True)
    monkeypatch.setenv("TL_STUDIO_HOME", str(home))
    return home


def run_dir(home: Path) -> Path:
    return next(p for p in (home / "runs").iterdir() if not p.name.startswith("."))


def edit(path: Path, change: Any) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def cli_runs(home: Path, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["--home", str(home), "runs"]) == 0
    return capsys.readouterr().out


def pages_load(*names: str) -> None:
    for name in names:
        at = page(name).run()
        assert not at.exception, (name, at.exception)


INDEX_DAMAGE = [
    lambda d: next(iter(d["runs"].values()))["summary"].update(test_accuracy="abc"),
    lambda d: next(iter(d["runs"].values()))["summary"].update(epochs_run=[1]),
    lambda d: next(iter(d["runs"].values()))["summary"].update(created=5),
    lambda d: next(iter(d["runs"].values())).update(summary="x"),
    lambda d: next(iter(d["runs"].values()))["summary"].pop("run_dir"),
]


@pytest.mark.parametrize("damage", INDEX_DAMAGE)
def test_a_damaged_index_is_rebuilt(home: Path, damage: Any,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    index = home / "runs" / ".index.json"
    edit(index, damage)
    index.touch()
    [summary] = RunStore(home).list()
    assert summary.status == COMPLETED
    assert isinstance(summary.test_accuracy, float)
    assert "abc" not in index.read_text()  # rewritten from the folder
    assert "completed" in cli_runs(home, capsys)


RUN_DAMAGE = {
    "metrics.json": [
        lambda d: d.update(test_accuracy="abc"),
        lambda d: d.update(unsure_threshold=7),
        lambda d: d["test"].update(accuracy="high"),
        lambda d: d["test"]["per_class"][0].update(precision="x"),
        lambda d: d["test"].update(confusion="none"),
        lambda d: d["test"]["predictions"][0].update(confidence=None),
        lambda d: d.update(test=[1, 2]),
        lambda d: d.update(params={"total": "many"}),
    ],
    "status.json": [
        lambda d: d.update(status=3),
        lambda d: d.update(pid="abc"),
        lambda d: d.update(started=12),
    ],
}
CASES = [(name, damage) for name, damages in RUN_DAMAGE.items() for damage in damages]


@pytest.mark.parametrize(("name", "damage"), CASES)
def test_a_run_with_wrong_types_is_listed_as_broken_with_the_reason(
        home: Path, name: str, damage: Any, capsys: pytest.CaptureFixture[str]) -> None:
    edit(run_dir(home) / name, damage)
    [summary] = RunStore(home).list()
    assert summary.status == BROKEN
    assert name in (summary.error or "")
    out = cli_runs(home, capsys)
    assert "broken" in out


def test_pages_keep_working_with_a_broken_run(home: Path) -> None:
    edit(run_dir(home) / "metrics.json", lambda d: d.update(test_accuracy="abc"))
    pages_load("0_Home", "3_Evaluate", "4_Predict", "5_Compare", "6_Export")
    at = page("5_Compare").run()
    assert any("metrics.json" in str(w.value) for w in at.warning)


def test_damaged_optional_files_are_problems_the_run_still_works(home: Path) -> None:
    edit(run_dir(home) / "dataset.json", lambda d: d.update(split_counts="x", name=5))
    [summary] = RunStore(home).list()
    assert summary.status == COMPLETED
    run = RunStore(home).load(summary.run_id)
    assert any("dataset.json" in p for p in run.problems)
    pages_load("3_Evaluate", "5_Compare")
