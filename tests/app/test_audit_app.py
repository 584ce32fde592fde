"""The Dataset page's audit section driven by AppTest: galleries, choices, grouped split, job."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from app_helpers import page
from conftest import make_class_folders
from streamlit.testing.v1 import AppTest

from core.audit import choices as audit_choices
from core.audit import findings as audit
from core.data import datasets
from ui import audit as ui_audit
from ui import state


def _load(folder: Path) -> AppTest:
    at = page("1_Dataset").run()
    at.radio(key=state.SOURCE_KIND).set_value(state.SOURCE_FOLDER).run()
    at.text_input(key=state.FOLDER).input(str(folder))
    return at.button(key=state.LOAD_FOLDER).click().run()


def _planted_audit(folder: Path, home: Path) -> tuple[datasets.Dataset, audit.AuditResult]:
    """An audit saved in the home from synthetic features: one flip, one pair, one outlier."""
    dataset = datasets.ingest(folder, home=home)
    y = dataset.index["label_index"].to_numpy()
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, (2, 64))
    truth = y.copy()
    truth[2] = 1 - y[2]
    x = centres[truth] * 2 + rng.normal(0, 1, (len(y), 64))
    x[5] = x[4] + 0.001
    x[20] = -centres[truth[20]] * 2
    result = audit.audit(dataset, features=x.astype(np.float32), home=home,
                         check_pixels=False)
    return dataset, result


def test_audit_sections_choices_and_the_grouped_split(studio_home: Path,
                                                      tmp_path: Path) -> None:
    folder = make_class_folders(tmp_path / "bugs", {"ants": 12, "bees": 12}, size=32)
    dataset, result = _planted_audit(folder, studio_home)
    assert result.label_issues and result.near_duplicates and result.outliers
    at = _load(folder)
    assert not at.exception, at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Likely wrong labels"] == str(len(result.label_issues))
    assert metrics["Near-duplicate groups"] == "1"
    assert any(t.label.startswith("Label issues") for t in at.tabs)
    names = audit.relative_names(dataset.index, dataset.root)
    flipped = names[2]
    issue = next(i for i in result.label_issues if i["file"] == flipped)
    assert any(flipped in m.value and issue["suggested"] in m.value for m in at.markdown)
    # Scores in words (issue 27): what the photo looks like, how unlike its class, how alike.
    like = f"only {1 - issue['score']:.0%} like {issue['given']}"
    assert any(f"looks like **{issue['suggested']}**" in m.value and like in m.value
               for m in at.markdown), like
    assert any("times farther from the other photos of its class" in m.value
               for m in at.markdown)
    assert any("% alike" in m.value for m in at.markdown)
    # One count of likely wrong labels, not a second estimate that disagrees with it.
    assert "Estimated wrong labels" not in metrics

    # Move the flipped photo to its suggested class, exclude the outlier.
    at.radio(key=ui_audit.choice_key("label", flipped)).set_value("move").run()
    outlier = result.outliers[0]["file"]
    at.radio(key=ui_audit.choice_key("outlier", outlier)).set_value("exclude").run()
    assert not at.exception, at.exception
    saved = audit_choices.load_choices(dataset, studio_home)
    assert saved[flipped] == {"action": "move", "label": issue["suggested"]}
    assert saved[outlier] == {"action": "exclude"}

    at.button(key=state.USE_DATASET).click().run()
    current = at.session_state[state.CURRENT]
    split = current.split
    assert len(split) == len(dataset.index) - 1
    row = split[split["path"] == str(dataset.root / flipped)]
    assert row["label"].item() == issue["suggested"]
    pair = result.near_duplicates[0]["files"]
    assert split[split["path"].isin([str(dataset.root / f) for f in pair])]["split"].nunique() == 1
    record = current.info()["audit"]
    assert record["audit_id"] == result.audit_id and record["moved"] == 1
    assert record["excluded"] == 1

    # A fresh session (a restart) finds the audit and the choices again.
    again = _load(folder)
    assert again.radio(key=ui_audit.choice_key("label", flipped)).value == "move"


def test_audit_button_runs_a_background_job(studio_home: Path, tmp_path: Path) -> None:
    folder = make_class_folders(tmp_path / "bugs", {"ants": 6, "bees": 6}, size=32)
    at = _load(folder)
    at.button(key=ui_audit.START).click().run()
    assert not at.exception, at.exception
    jobs_started = at.session_state[ui_audit.JOBS]
    assert len(jobs_started) == 1
    job_id = next(iter(jobs_started.values()))
    from ui import resources

    manager = resources.job_manager()
    assert manager.status(job_id).kind == "audit"
    status = manager.wait(job_id, timeout=600)
    at.run()
    assert not at.exception, at.exception
    if status.state == "failed":  # no pretrained weights here: the reason is shown
        assert any("audit failed" in e.value for e in at.error)
    else:
        assert status.state == "completed"
        assert "Likely wrong labels" in [m.label for m in at.metric]


def test_an_audit_running_for_another_session_is_shown_not_started_again(
        studio_home: Path, tmp_path: Path) -> None:
    import threading

    from ui import resources

    folder = make_class_folders(tmp_path / "bugs", {"ants": 6, "bees": 6}, size=32)
    key = audit.dataset_key(datasets.ingest(folder, home=studio_home))
    release = threading.Event()
    manager = resources.job_manager()
    job = manager.submit(lambda on_event, should_stop: release.wait(60),
                         title="Audit of bugs", kind="audit", subject=key)
    other = manager.submit(lambda on_event, should_stop: release.wait(60),
                           title="Audit of bugs", kind="audit", subject="another-dataset")
    try:
        at = _load(folder)  # a fresh session: it did not start the audit
        assert not at.exception, at.exception
        assert not [b for b in at.button if b.key == ui_audit.START]
        assert any(b.key == f"{ui_audit.CANCEL}.{job}" for b in at.button)
    finally:
        release.set()
        manager.wait(job, timeout=60)
        manager.wait(other, timeout=60)
