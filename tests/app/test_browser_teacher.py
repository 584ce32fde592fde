"""A teacher's first hour in headless Chromium, from photos to a link a parent opens (issue 27).

With an admin password set (visitors are viewers): sign in, build a three-class dataset from
uploaded photos, train with the defaults, fine-tune with the defaults, evaluate, predict,
export; then a fresh browser opens the shared link as a viewer, and the demo view. Every page
is checked for errors; screenshots of every step land in test-artifacts/browser/ (the README's
screenshots are refreshed from them). Kept cheap: tiny generated photos, random weights.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import patterned_image
from studio_server import studio_for_browser
from test_browser_e2e import (
    ARTIFACTS,
    SERVER_START_SECONDS,
    App,
    chromium,
)

pytestmark = pytest.mark.browser

PASSWORD = "a long teacher passphrase"
CLASSES = ("daisy", "roses", "tulips")
PHOTOS_PER_CLASS = 5
STEP_SECONDS = 600  # one training or export on a loaded 2-core machine


@pytest.fixture
def viewer_server(tmp_path: Path) -> Iterator[str]:
    """The app with an admin password (its own secrets file) and an empty studio home; its
    shared links name this machine's network address, as a teacher's do."""
    secrets = tmp_path / "secrets.toml"
    secrets.write_text(f'[studio]\nadmin_password = "{PASSWORD}"\n')
    with studio_for_browser(tmp_path, ARTIFACTS / "teacher-streamlit.log", secrets=secrets,
                            start_seconds=SERVER_START_SECONDS) as url:
        yield url


def no_error(app: App, where: str) -> None:
    """No exception box and no error message on the page."""
    boxes = app.d.find_elements(app.by.CSS_SELECTOR,
                                "[data-testid='stException'], [data-testid='stAlertContentError']")
    shown = [b.text[:300] for b in boxes if b.text.strip()]
    assert not shown, f"{where}: {shown}"


def in_view(app: App, element: Any) -> bool:
    """Whether the element is (at least partly) inside the browser window now."""
    return bool(app.d.execute_script(
        "const r = arguments[0].getBoundingClientRect();"
        "return r.bottom > 0 && r.top < window.innerHeight;", element))


def open_group(app: App, title: str) -> None:
    group = app.wait(f"the {title} group", lambda: next(
        (e for e in app.d.find_elements(app.by.CSS_SELECTOR, "summary") if title in e.text),
        None))
    app.d.execute_script("arguments[0].scrollIntoView({block: 'center'}); "
                         "arguments[0].click();", group)
    app.settle()


def press(app: App, label: str) -> None:
    """Clicks a button by its label wherever it is on the page (scrolled into view first)."""
    button = app.button(label)
    app.d.execute_script("arguments[0].scrollIntoView({block: 'center'});", button)
    button.click()
    app.settle()


def sign_in(app: App) -> None:
    open_group_in_sidebar = app.wait("the sidebar's Admin sign-in", lambda: next(
        e for e in app.d.find_elements(app.by.CSS_SELECTOR, "[data-testid='stSidebar'] summary")
        if "Admin sign-in" in e.text))
    open_group_in_sidebar.click()
    app.type_into("Admin password", PASSWORD)
    app.wait("the admin badge", lambda: "Admin" in app.d.find_element(
        app.by.CSS_SELECTOR, "[data-testid='stSidebar']").text and app.button("Sign out"))


def build_dataset(app: App, tmp_path: Path) -> None:
    """New dataset from uploads: classes added with Enter, photos with their own names."""
    app.go("Dataset")
    app.choose_radio("New dataset")
    app.type_into("Dataset name", "flowers")
    press(app, "Create dataset")
    app.wait_text("Dataset: flowers")
    for name in CLASSES:
        app.type_into("New class", name)  # Enter adds it (issue 27)
        app.wait_text(f"{name} · 0 photos")
    no_error(app, "adding classes with Enter")
    for n, name in enumerate(CLASSES):
        folder = tmp_path / name
        folder.mkdir()
        for i in range(PHOTOS_PER_CLASS):
            patterned_image(n, i, 64).save(folder / f"{name} {i + 1}.png")
        fields = app.wait("a file input per class", lambda: (lambda f: len(f) == 3 and f)(
            app.d.find_elements(app.by.CSS_SELECTOR,
                                "[data-testid='stFileUploader'] input[type='file']")))
        fields[n].send_keys("\n".join(str(p) for p in sorted(folder.iterdir())))
        app.wait_text(f"{name} · {PHOTOS_PER_CLASS} photos", timeout=120)
        app.settle()
    # The uploader empties once the photos are added: the thumbnails are the truth.
    app.wait("the uploaders to empty", lambda: not app.d.find_elements(
        app.by.CSS_SELECTOR, "[data-testid='stFileUploaderFile']"))
    no_error(app, "the builder")
    app.shot("40-teacher-builder")
    press(app, "Check the photos and split")
    app.wait_text("Report: flowers", timeout=180)
    app.settle(180)
    # The report's thumbnails carry the names the teacher gave the files.
    app.wait_text("daisy 1.png")
    use = app.wait("the one Use this dataset", lambda: [
        b for b in app.d.find_elements(app.by.CSS_SELECTOR, "button")
        if b.text.strip().endswith("Use this dataset")])
    assert len(use) == 1, "two buttons named Use this dataset"
    no_error(app, "the dataset report")
    app.shot("41-teacher-dataset-report")
    press(app, "Use this dataset")
    app.wait_text("In use for training: flowers")


def train(app: App, name: str, fine_tune_layers: int = 0) -> None:
    """Train page with the defaults (random weights, the only change, so nothing downloads)."""
    app.go("Train")
    app.wait_text("Pretrained base")
    app.choose_radio("Random weights (for quick tests)")
    if fine_tune_layers:
        open_group(app, "Fine-tuning")
        app.type_into("Fine-tune layers", str(fine_tune_layers))
    no_error(app, f"{name}: the Train page")
    press(app, "Start training")
    # The progress shows where the Start button was, in view (issue 27).
    bar = app.wait("the progress", lambda: next(iter(app.d.find_elements(
        app.by.CSS_SELECTOR, "[data-testid='stProgress']")), None) or (
        "Finished in" in app.text() and "finished"), timeout=120)
    if bar != "finished":
        if not in_view(app, bar):
            app.d.save_screenshot(str(ARTIFACTS / f"42-teacher-{name}-viewport.png"))
            where = app.d.execute_script(
                "const r = arguments[0].getBoundingClientRect(); return [r.top, r.bottom, "
                "window.innerHeight, window.scrollY, document.querySelector("
                "'[data-testid=\"stMain\"]').scrollTop];", bar)
            raise AssertionError(f"the training's progress is out of view: {where}")
        app.shot(f"42-teacher-{name}-progress")
    app.wait_text("Finished in", timeout=STEP_SECONDS)
    app.settle()
    no_error(app, f"{name}: the finished training")
    app.shot(f"43-teacher-{name}-finished")


def test_a_teachers_first_hour_in_a_real_browser(viewer_server: str, tmp_path: Path) -> None:
    started = time.monotonic()
    photo = tmp_path / "a daisy.png"
    patterned_image(0, 901, 96).save(photo)
    with chromium() as driver:
        app = App(driver, viewer_server)
        app.open_home()
        no_error(app, "Home")
        app.shot("39-teacher-home")
        sign_in(app)
        build_dataset(app, tmp_path)
        train(app, "train")
        train(app, "fine-tune", fine_tune_layers=30)  # fine-tuning with the defaults

        app.go("Evaluate")
        app.wait_text("Confusion matrix", timeout=120)
        app.settle()
        assert re.search(r"95% interval: \d+%-\d+%", app.text()), "no interval shown"
        app.wait_text("test photos: the true accuracy could be anywhere")
        no_error(app, "Evaluate")
        app.shot("44-teacher-evaluate")
        app.wait("the Copy link button", lambda: next(
            b for b in driver.find_elements(app.by.CSS_SELECTOR, "button")
            if "Copy link" in b.text)).click()
        link = app.wait("the shared link", lambda: next(
            c.text.strip() for c in driver.find_elements(app.by.CSS_SELECTOR, "code")
            if "?run=" in c.text))
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.keys import Keys

        ActionChains(driver).send_keys(Keys.ESCAPE).perform()  # closes the popover
        app.settle()

        heading = app.top_prediction(photo, CLASSES, timeout=180)
        assert heading.split(" · ")[0] in CLASSES
        app.wait_text("closest of the classes it knows")
        assert " sure" not in app.text().replace("unsure", "")
        no_error(app, "Predict")
        app.shot("45-teacher-predict")

        app.go("Export")
        press(app, "Export and verify")
        app.wait_text("Whole export folder", timeout=STEP_SECONDS)
        app.settle()
        downloads = app.wait("the download buttons", lambda: [
            b for b in driver.find_elements(app.by.CSS_SELECTOR,
                                            "[data-testid='stDownloadButton'] button")
            if "TensorFlow Lite" in b.text])
        for button in downloads:  # full names, not "TensorFlow Lite, fl..."
            assert driver.execute_script(
                "const e = arguments[0]; return [...e.querySelectorAll('*')].every("
                "c => c.scrollWidth <= c.clientWidth + 1);", button), button.text
        no_error(app, "Export")
        app.shot("46-teacher-export")

        app.go("Compare")
        app.wait_text("Learning curves side by side")
        no_error(app, "Compare")
        app.shot("47-teacher-compare")

    # A parent opens the link: a viewer, the run shown, nothing to change. The link names
    # this machine's network address; the test server listens on 127.0.0.1 only.
    shared = urlsplit(link)
    assert shared.query.startswith("run=") and shared.path.endswith("/Evaluate"), link
    link = f"{viewer_server}{shared.path}?{shared.query}"
    with chromium() as driver:
        parent = App(driver, viewer_server)
        driver.get(link)
        parent.wait_text("Confusion matrix", timeout=180)
        parent.settle(120)
        sidebar = driver.find_element(parent.by.CSS_SELECTOR, "[data-testid='stSidebar']").text
        assert "Viewer" in sidebar
        no_error(parent, "the shared link")
        parent.shot("48-teacher-shared-link")

        run_id = link.split("?run=")[1]
        driver.get(f"{viewer_server}/Predict?run={run_id}&view=demo")
        field = parent.wait("the demo's upload", lambda: driver.find_element(
            parent.by.CSS_SELECTOR, "[data-testid='stFileUploader'] input[type='file']"),
            timeout=180)
        field.send_keys(str(photo))
        parent.wait_text("closest of the classes it knows", timeout=180)
        parent.settle()
        no_error(parent, "the demo view")
        parent.shot("49-teacher-demo")

        # A mistyped link is no dead end.
        driver.get(f"{viewer_server}/Predict?run=no-such-run&view=demo")
        parent.wait_text("Open the demo of the newest model", timeout=120)
        parent.shot("50-teacher-demo-bad-link")
    print(f"teacher walk: {time.monotonic() - started:.0f} s")
