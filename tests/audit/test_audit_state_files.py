"""A damaged audit.json or choices.json (valid JSON, wrong types) is set aside with a warning;
the split, training's audit record and the Dataset page keep working as if never audited."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from app_helpers import page
from conftest import make_class_folders

from core.audit import choices as audit_choices
from core.audit import findings
from core.config import SplitConfig
from core.data import datasets
from ui import state


@pytest.fixture
def dataset(tmp_path: Path) -> datasets.Dataset:
    root = make_class_folders(tmp_path / "pets", {"cats": 6, "dogs": 6}, size=32)
    return datasets.ingest(root)


def good_audit(dataset: datasets.Dataset) -> dict[str, Any]:
    names = findings.relative_names(dataset.index, dataset.root)
    return {
        "label_issues": [{"file": names[0], "given": "cats", "suggested": "dogs", "score": 0.9}],
        "near_duplicates": [{"files": names[:2], "similarity": 0.99, "cross_class": False,
                             "spans_splits": False}],
        "outliers": [{"file": names[3], "label": "cats", "score": 2.0}],
        "summary": {"dataset_key": findings.dataset_key(dataset), "audit_id": "a1",
                    "images": 12, "classes": 2, "backbone": "mobilenet_v2"},
    }


AUDIT_DAMAGE = [
    lambda d: d.update(label_issues="none"),
    lambda d: d["label_issues"][0].update(score="high"),
    lambda d: d["near_duplicates"][0].update(files="a.png"),
    lambda d: d["near_duplicates"][0].update(similarity=None),
    lambda d: d["outliers"][0].pop("label"),
    lambda d: d.update(summary=[1]),
    lambda d: d["summary"].update(images=-3),
]


def write(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def test_a_good_audit_is_read(dataset: datasets.Dataset, studio_home: Path) -> None:
    write(findings.audit_dir(studio_home, findings.dataset_key(dataset)) / "audit.json",
          good_audit(dataset))
    assert findings.load_audit(dataset, studio_home) is not None


@pytest.mark.parametrize("damage", AUDIT_DAMAGE)
def test_a_damaged_audit_is_set_aside_and_the_split_still_works(
        dataset: datasets.Dataset, studio_home: Path, damage: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    data = good_audit(dataset)
    damage(data)
    path = write(findings.audit_dir(studio_home, findings.dataset_key(dataset)) / "audit.json",
                 data)
    result = findings.load_audit(dataset, studio_home)
    assert result is None
    assert not path.exists() and findings.set_aside_files(dataset, studio_home)
    assert "damaged" in caplog.text
    split = audit_choices.audited_split(dataset, SplitConfig(seed=1), result, {})
    assert len(split) == 12
    assert audit_choices.audit_record(result, {}) == {"ran": False}


CHOICES_DAMAGE = [
    {"choices": "all"},
    {"choices": {"cats/img_0000.png": {"action": 5}}},
    {"choices": {"cats/img_0000.png": {"action": "move"}}},
    {"choices": {"cats/img_0000.png": {"action": "move", "label": ["dogs"]}}},
    [1, 2],
]


@pytest.mark.parametrize("data", CHOICES_DAMAGE)
def test_damaged_choices_are_set_aside(dataset: datasets.Dataset, studio_home: Path,
                                       data: Any) -> None:
    path = write(findings.audit_dir(studio_home, findings.dataset_key(dataset))
                 / "choices.json", data)
    assert audit_choices.load_choices(dataset, studio_home) == {}
    assert not path.exists()
    # Choosing again works and writes a good file.
    audit_choices.set_choice(dataset, "cats/img_0001.png", "exclude", home=studio_home)
    assert audit_choices.load_choices(dataset, studio_home) == {
        "cats/img_0001.png": {"action": "exclude"}}


def test_the_dataset_page_says_an_audit_was_set_aside(dataset: datasets.Dataset,
                                                      studio_home: Path) -> None:
    data = good_audit(dataset)
    data["label_issues"] = "none"
    write(findings.audit_dir(studio_home, findings.dataset_key(dataset)) / "audit.json", data)
    at = page("1_Dataset")
    at.session_state[state.LOADED] = state.LoadedDataset(dataset=dataset, name="pets",
                                                         source="upload:pets")
    at.run()
    assert not at.exception, at.exception
    assert any("set aside" in str(w.value) for w in at.warning)
