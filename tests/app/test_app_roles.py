"""Viewers and admins (ui.roles): what each sees, signing in, and actions refused to viewers
even when the page is driven with the right widget keys."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from app_helpers import all_text, current_dataset, page, texts, train_small_run
from streamlit.testing.v1 import AppTest

from core.jobs import manager as jobs
from core.training.result import TrainResult
from ui import export as ui_export
from ui import resources, roles, state

PASSWORD = "correct horse"
SECRETS = {"studio": {"admin_password": PASSWORD}}
LOGIN_SECRETS = {"auth": {"redirect_uri": "http://localhost:8501/oauth2callback",
                          "cookie_secret": "x" * 32, "client_id": "id", "client_secret": "s",
                          "server_metadata_url": "https://id.example.org/.well-known/x"},
                 "studio": {"admin_emails": ["ada@example.org"]}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    return train_small_run(tmp_path_factory, ["cats", "dogs", "fish"])


@pytest.fixture
def home(trained: TrainResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    shutil.copytree(trained.run_dir.parent, home / "runs")
    monkeypatch.setenv("TL_STUDIO_HOME", str(home))
    return home


def open_page(name: str, secrets: dict | None = SECRETS, **session: Any) -> AppTest:
    at = page(name)
    at.secrets.update(secrets or {})
    for key, value in session.items():
        at.session_state[key] = value
    return at.run()


def sign_in(at: AppTest, password: str = PASSWORD) -> AppTest:
    at.main.text_input(key=f"{roles.PASSWORD}.page").input(password)
    next(b for b in at.main.button if b.label == "Sign in").click()
    return at.run()


def stopped_for_admins(at: AppTest, title: str) -> bool:
    return f"The {title} page changes the studio, so it is for admins only" in all_text(at)


def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def held_job(on_event: Any, should_stop: Any, release: threading.Event) -> Any:
    """A background job that runs until released or cancelled."""
    while not release.is_set() and not should_stop():
        time.sleep(0.02)
    return SimpleNamespace(status="completed", run_dir=None, test_accuracy=0.5, epochs_run=1,
                           run_id=None)


def test_without_settings_the_local_user_is_admin(studio_home: Path) -> None:
    at = open_page("2_Train", secrets=None)
    assert not at.exception, at.exception
    assert "No dataset chosen yet" in all_text(at)
    assert not stopped_for_admins(at, "Train")
    assert "Viewer" not in "\n".join(texts(at.sidebar.caption))


@pytest.mark.parametrize("name,title", [("1_Dataset", "Dataset"), ("2_Train", "Train"),
                                        ("6_Export", "Export")])
def test_a_viewer_is_stopped_on_admin_pages_even_with_their_widget_keys(
    home: Path, small_dataset: Path, trained: TrainResult, name: str, title: str
) -> None:
    at = open_page(name, **{state.CURRENT: current_dataset(small_dataset, home),
                            state.FOLDER: str(small_dataset), ui_export.RUN_KEY: trained.run_id})
    assert not at.exception, at.exception
    assert stopped_for_admins(at, title)
    labels = {b.label for b in at.main.button}
    assert labels == {"Sign in"}  # no Start, Load, Export, Cancel, Audit
    assert not at.file_uploader and not at.dataframe
    assert any("Viewer" in c for c in texts(at.sidebar.caption))


def test_a_viewer_sees_the_viewer_pages_and_downloads(home: Path) -> None:
    for name in ("0_Home", "3_Evaluate", "4_Predict", "5_Compare"):
        at = open_page(name)
        assert not at.exception, (name, at.exception)
        assert not stopped_for_admins(at, name.split("_")[1])
    at = open_page("3_Evaluate")
    assert at.get("download_button")  # reports and the model
    at = open_page("5_Compare")
    assert "Deleting runs is for admins." in all_text(at)
    assert not any(b.key == state.COMPARE_DELETE_ASK for b in at.button)


def test_a_viewer_takes_the_verified_export_files_from_the_evaluate_page(
    home: Path, trained: TrainResult
) -> None:
    import json

    from core.export import exporter as export
    from core.export import formats as export_formats

    at = open_page("3_Evaluate")
    assert "Verified exports" not in all_text(at)  # not exported yet
    folder = home / "exports" / trained.run_id
    folder.mkdir(parents=True)
    (folder / "model_int8.tflite").write_bytes(b"TFL3")
    (folder / "metadata.json").write_text(json.dumps({
        "exported": "2026-12-03T10:00:00+00:00", "keras_test_accuracy": 0.9, "test_photos": 9,
        "formats": {"tflite_int8": {"status": export.OK, "file": "model_int8.tflite",
                                    "size_bytes": 4, "test_accuracy": 0.9, "agreement": 1.0,
                                    "recommended": True},
                    "saved_model": {"status": "failed", "error": "no space left"}}}))
    at = open_page("3_Evaluate")
    assert not at.exception, at.exception
    assert "Verified exports (2026-12-03T10:00:00+00:00)" in all_text(at)
    labels = [b.label for b in at.get("download_button")]
    assert export_formats.title("tflite_int8") in labels and "Whole export folder (zip)" in labels
    assert export_formats.title("saved_model") not in labels  # a failed format is not offered


def test_the_password_makes_an_admin_and_signing_out_a_viewer(studio_home: Path) -> None:
    at = open_page("2_Train")
    sign_in(at, "wrong")
    assert not at.exception, at.exception
    assert any("Wrong password" in e for e in texts(at.error))
    assert stopped_for_admins(at, "Train")
    assert at.main.text_input(key=f"{roles.PASSWORD}.page").value == ""  # not kept

    sign_in(at)
    assert not at.exception, at.exception
    assert not stopped_for_admins(at, "Train")
    assert "No dataset chosen yet" in all_text(at)
    assert any("Admin" in c for c in texts(at.sidebar.caption))

    at.sidebar.button(key=roles.SIGN_OUT).click().run()
    assert stopped_for_admins(at, "Train")

    sign_in(at)
    assert not stopped_for_admins(at, "Train")
    at.secrets["studio"] = {"admin_password": "a new one"}  # every session is signed out
    at.run()
    assert stopped_for_admins(at, "Train")


def test_a_stale_delete_button_does_not_delete_for_a_viewer(home: Path,
                                                           trained: TrainResult) -> None:
    victim = trained.run_id
    at = open_page("5_Compare")
    sign_in(at)
    at.selectbox(key=state.COMPARE_DELETE).set_value(victim).run()
    at.button(key=state.COMPARE_DELETE_ASK).click().run()
    assert "This cannot be undone" in all_text(at)
    del at.session_state[roles.SIGNED_IN]  # signed out elsewhere; the dialog is still open
    at.button(key=state.COMPARE_DELETE_YES).click().run()
    assert not at.exception, at.exception
    assert (home / "runs" / victim).is_dir()
    assert any("Only an admin can delete runs" in e for e in texts(at.error))


def test_a_stale_cancel_or_start_does_nothing_for_a_viewer(
    home: Path, small_dataset: Path
) -> None:
    release = threading.Event()
    manager = resources.job_manager()
    job_id = manager.submit(held_job, title="pets · held", release=release)
    try:
        wait_for(lambda: manager.status(job_id).state == jobs.RUNNING)
        at = open_page("2_Train", **{state.CURRENT: current_dataset(small_dataset, home),
                                     state.JOB_ID: job_id})
        sign_in(at)
        cancel = at.button(key=f"{state.TRAIN_CANCEL}.{job_id}")
        start = at.button(key=state.TRAIN_START)
        before = len(manager.jobs(kind="train"))
        del at.session_state[roles.SIGNED_IN]
        cancel.click().run()
        assert not at.exception, at.exception
        assert any("Only an admin can cancel jobs" in e for e in texts(at.error))
        status = manager.status(job_id)
        assert status.state == jobs.RUNNING and not status.cancel_requested
        start.click().run()
        assert not at.exception, at.exception
        assert len(manager.jobs(kind="train")) == before
    finally:
        release.set()
        manager.wait(job_id, timeout=10)


def _call_actions(run_id: str, job_id: str) -> None:
    """Calls every state-changing action of the pages directly, as a page would."""
    import streamlit as st

    from core.config import TrainConfig
    from ui import compare, roles, train_form
    from ui import export as ui_export
    from ui.errors import show_user_errors

    with show_user_errors("Cannot start the export:"):
        ui_export.start(run_id, ["keras"])
    compare.delete_run(run_id)
    roles.cancel_job(job_id)
    st.session_state["started"] = train_form.start(
        st.session_state["current"], TrainConfig(weights=None, epochs=1))


def test_every_action_checks_the_role_itself(home: Path, small_dataset: Path,
                                            trained: TrainResult) -> None:
    release = threading.Event()
    manager = resources.job_manager()
    job_id = manager.submit(held_job, title="pets · held", release=release)
    try:
        at = AppTest.from_function(_call_actions, args=(trained.run_id, job_id),
                                   default_timeout=120)
        at.secrets.update(SECRETS)
        at.session_state["current"] = current_dataset(small_dataset, home)
        at.run()
        assert not at.exception, at.exception
        errors = "\n".join(texts(at.error))
        assert "Only an admin can export runs" in errors
        assert "Only an admin can start training" in errors
        assert at.session_state[state.COMPARE_DELETED][1].startswith(
            "Only an admin can delete runs")
        assert at.session_state[roles.REFUSED].startswith("Only an admin can cancel jobs")
        assert at.session_state["started"] is None
        assert (home / "runs" / trained.run_id).is_dir()
        assert not manager.status(job_id).cancel_requested
        assert [j.job_id for j in manager.jobs()] == [job_id]  # no export, no training
    finally:
        release.set()
        manager.wait(job_id, timeout=10)


@pytest.mark.parametrize("user,admin", [
    ({"is_logged_in": True, "email": "Ada@example.org"}, True),
    ({"is_logged_in": True, "email": "bob@example.org"}, False),
    ({"is_logged_in": False}, False),
])
def test_with_login_the_admin_emails_decide(studio_home: Path, user: dict,
                                            admin: bool) -> None:
    at = page("2_Train")
    at.secrets.update(LOGIN_SECRETS)
    at.user = user
    at.run()
    assert not at.exception, at.exception
    assert stopped_for_admins(at, "Train") is not admin
    if not admin:
        labels = {b.label for b in at.main.button}
        assert labels == ({"Log out"} if user["is_logged_in"] else {"Log in"})
        assert not at.main.text_input  # no password in this mode


def test_unreadable_settings_make_nobody_admin(studio_home: Path) -> None:
    at = open_page("2_Train", secrets={"studio": {"admin_password": 1234}})
    assert not at.exception, at.exception
    assert stopped_for_admins(at, "Train")
    assert any("admin_password in [studio] must be text" in e for e in texts(at.error))
