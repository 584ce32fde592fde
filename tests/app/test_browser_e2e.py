"""The real app in headless Chromium: upload a zip, train, evaluate, predict; screenshots saved.

Runs `streamlit run streamlit_app.py` on a free port with its own studio home, and drives
Debian's chromium through Debian's chromedriver with Selenium. Screenshots of every step land
in test-artifacts/browser/ (git-ignored). Skipped, saying why, when chromium, chromedriver or
selenium is missing (on Debian: apt-get install chromium chromium-driver).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import make_class_folders, patterned_image, zip_folder
from studio_server import CHROMEDRIVER, CHROMIUM, studio_for_browser

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "browser"
CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--window-size=1400,1000",
    # As Puppeteer does by default: a window the host starves of CPU must not have its timers
    # (Streamlit's run_every polling, websocket heartbeats) throttled as a hidden tab's are.
    "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
)
SERVER_START_SECONDS = 90
TRAINING_SECONDS = 150
CLASSES = ("cats", "dogs", "fish")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """The app (tests/studio_server.py) with an empty studio home; its log kept after."""
    with studio_for_browser(tmp_path, ARTIFACTS / "streamlit.log", public_url=True,
                            start_seconds=SERVER_START_SECONDS) as url:
        yield url


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A fresh headless Chromium session (its own profile: no cookies, no session)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="tl-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # console, for diagnosis
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def browser(server: str) -> Iterator[Any]:
    with chromium() as driver:
        yield driver


class App:
    """Small vocabulary for driving a Streamlit page in Selenium."""

    def __init__(self, driver: Any, url: str) -> None:
        from selenium.webdriver.common.by import By

        self.d = driver
        self.url = url
        self.by = By
        ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def wait(self, what: str, condition: Callable[[], Any], timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        last_error = ""
        while True:
            try:
                value = condition()
                if value:
                    return value
            except Exception as exc:  # an element replaced while read: try again, say it if stuck
                last_error = f"; the last failed check: {exc!r}"[:300]
            if time.monotonic() > deadline:
                thread = threading.current_thread()
                who = "" if thread is threading.main_thread() else f"{thread.name}-"
                shot = self.shot(f"timeout-{who}{re.sub(r'[^a-z0-9]+', '-', what.lower())}")
                page = ""
                with contextlib.suppress(Exception):
                    page = self.text()[-600:]
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} "
                                     f"({shot.name}); the page ends: {page!r}{last_error}")
            time.sleep(0.25)

    def text(self) -> str:
        """The main area's text as shown, in single spaces; read in one script (no element
        to go stale between finding and reading it)."""
        return " ".join(self.d.execute_script(
            "const m = document.querySelector('[data-testid=\"stMain\"]');"
            "return m ? m.innerText : '';").split())

    def wait_text(self, words: str, timeout: float = 60) -> None:
        words = " ".join(words.split())
        self.wait(f"'{words}'", lambda: words in self.text(), timeout)

    def running(self) -> bool:
        """True while a script run is in progress (Streamlit's status widget is shown)."""
        return bool(self.d.find_elements(self.by.CSS_SELECTOR,
                                         "[data-testid='stStatusWidget']"))

    def settle(self, timeout: float = 60) -> None:
        time.sleep(0.4)
        self.wait("the script run to end", lambda: not self.running(), timeout)

    def go(self, page: str) -> None:
        """Clicks the sidebar link of a page (keeps the session, unlike loading a URL)."""
        link = self.wait(f"link to {page}", lambda: self.d.find_element(
            self.by.CSS_SELECTOR, f"[data-testid='stSidebar'] a[href$='{page}']"))
        link.click()
        self.wait(f"the {page} page", lambda: self.d.find_element(
            self.by.CSS_SELECTOR, "h1").text.startswith(page.split("_")[0]))
        self.settle()

    def button(self, label: str) -> Any:
        return self.wait(f"button {label!r}", lambda: next(
            b for b in self.d.find_elements(self.by.CSS_SELECTOR, "button")
            if b.text.strip().endswith(label) and b.is_enabled()))

    def click(self, label: str) -> None:
        self.button(label).click()
        self.settle()

    def choose_radio(self, option: str) -> None:
        label = self.wait(f"radio option {option!r}", lambda: next(
            e for e in self.d.find_elements(self.by.CSS_SELECTOR, "[data-testid='stRadio'] label")
            if e.text.strip() == option))
        label.click()
        self.settle()

    def type_into(self, aria_label: str, text: str) -> None:
        from selenium.webdriver.common.keys import Keys

        field = self.wait(f"input {aria_label!r}", lambda: self.d.find_element(
            self.by.CSS_SELECTOR, f"input[aria-label='{aria_label}']"))
        field.send_keys(Keys.CONTROL, "a")
        field.send_keys(text, Keys.ENTER)
        self.settle()

    def upload(self, path: Path) -> None:
        field = self.wait("a file input", lambda: self.d.find_element(
            self.by.CSS_SELECTOR, "[data-testid='stFileUploader'] input[type='file']"))
        field.send_keys(str(path))

    def open_home(self) -> None:
        """Loads the app's address and waits for the Home page."""
        self.d.get(self.url)
        self.wait_text("Where to start", timeout=120)
        self.settle(120)

    def quick_training_settings(self, batch_size: int) -> None:
        """Train page: random weights (no download), 2 epochs, the given batch size."""
        self.go("Train")
        self.wait_text("Pretrained base")
        self.choose_radio("Random weights (for quick tests)")
        self.type_into("Epochs", "2")
        self.type_into("Batch size", str(batch_size))

    def top_prediction(self, photo: Path, classes: Iterable[str], timeout: float = 90) -> str:
        """Predict page: uploads the photo and returns its answer's heading ("cats · 40%")."""
        self.go("Predict")
        self.upload(photo)
        answer = re.compile(rf"({'|'.join(map(re.escape, classes))}) · \d+%")
        return self.wait("the top prediction", lambda: next(
            h.text for h in self.d.find_elements(self.by.CSS_SELECTOR, "h3")
            if answer.fullmatch(h.text.strip())), timeout=timeout)

    def shot(self, name: str) -> Path:
        """A full-page screenshot into test-artifacts/browser/<name>.png."""
        height = self.d.execute_script(
            "const m = document.querySelector('[data-testid=\"stMain\"]');"
            "return m ? m.scrollHeight : document.body.scrollHeight;")
        self.d.set_window_size(1400, int(min(max(1000, height + 80), 8000)))
        time.sleep(0.6)
        path = ARTIFACTS / f"{name}.png"
        self.d.save_screenshot(str(path))
        self.d.set_window_size(1400, 1000)
        return path


def test_upload_train_evaluate_predict_in_a_real_browser(
    server: str, browser: Any, tmp_path: Path
) -> None:
    started = time.monotonic()
    data = make_class_folders(tmp_path / "pets", {name: 12 for name in CLASSES})
    zip_path = zip_folder(data, tmp_path / "pets.zip", arc_prefix="pets/")
    photo = tmp_path / "a dog.png"
    patterned_image(1, 777, 96).save(photo)

    app = App(browser, server)
    app.open_home()
    app.shot("01-home")

    # Dataset: upload the zip, use it.
    app.go("Dataset")
    app.upload(zip_path)
    app.wait_text("Report: pets.zip", timeout=120)
    app.settle(120)
    # Explicit waits, not one-off reads: Streamlit may still be replacing elements.
    app.wait_text("Usable images\n36")
    app.shot("02-dataset")
    app.click("Use this dataset")
    app.wait_text("In use for training: pets.zip")

    # Train: random weights, 2 epochs, small batches; start and watch.
    app.quick_training_settings(batch_size=8)
    app.wait_text("pets.zip · MobileNetV2 · random weights · 2 epochs")
    # Augmentation is automatic unless chosen: open its group and read the choice shown.
    group = app.wait("the Augmentation group", lambda: next(
        (e for e in browser.find_elements(app.by.CSS_SELECTOR, "summary")
         if "Augmentation" in e.text), None))
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'}); "
                           "arguments[0].click();", group)
    app.wait("the automatic augmentation choice", lambda: "automatic (when fine-tuning)" in [
        e.get_attribute("value") for e in browser.find_elements(app.by.CSS_SELECTOR, "input")])
    # Fine-tuning's group offers the averaging of its epochs, on by default.
    group = app.wait("the Fine-tuning group", lambda: next(
        (e for e in browser.find_elements(app.by.CSS_SELECTOR, "summary")
         if "Fine-tuning" in e.text), None))
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'}); "
                           "arguments[0].click();", group)
    app.wait("the averaging checkbox, ticked", lambda: any(
        "Average the fine-tuning epochs" in box.text
        and box.find_element(app.by.CSS_SELECTOR, "input").is_selected()
        for box in browser.find_elements(app.by.CSS_SELECTOR, "[data-testid='stCheckbox']")))
    app.settle()
    app.shot("03-train-settings")
    app.click("Start training")
    app.wait("the progress bar", lambda: browser.find_elements(
        app.by.CSS_SELECTOR, "[data-testid='stProgress']") or "Finished in" in app.text())
    app.shot("04-train-progress")
    app.wait_text("Finished in", timeout=TRAINING_SECONDS)
    app.settle()
    app.wait("the test accuracy", lambda: re.search(r"test accuracy \d+% \(\d+ photos: \d+-\d+%\)",
                                                       app.text()))
    app.wait("the progress bar to go", lambda: not browser.find_elements(
        app.by.CSS_SELECTOR, "[data-testid='stProgress']"))
    app.shot("05-train-finished")

    # Evaluate: click the top-left cell of the confusion matrix.
    app.go("Evaluate")
    app.wait_text("Confusion matrix")
    from selenium.webdriver.common.action_chains import ActionChains

    matrix = app.wait("the confusion matrix", lambda: next(
        c for c in browser.find_elements(app.by.CSS_SELECTOR, "[data-testid='stPlotlyChart']")
        if "Confusion matrix" in c.text))
    area = matrix.find_element(app.by.CSS_SELECTOR, ".nsewdrag")
    box = area.rect
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", area)
    ActionChains(browser).move_to_element_with_offset(
        area, int(-box["width"] / 2 + box["width"] / 6),
        int(-box["height"] / 2 + box["height"] / 6)).click().perform()
    app.wait("the photos of the clicked cell",
             lambda: re.search(r"test photos? of cats correctly named", app.text()))
    app.settle()
    app.shot("06-evaluate")

    # Predict: upload a photo, read the top prediction.
    heading = app.top_prediction(photo, CLASSES)
    app.settle()
    app.wait_text("Top predictions")
    assert heading.split(" · ")[0] in CLASSES
    app.shot("07-predict")
    print(f"browser end-to-end: {time.monotonic() - started:.0f} s")


def test_a_shared_link_opens_the_run_in_a_fresh_browser(
    server: str, browser: Any, tmp_path: Path
) -> None:
    from app_helpers import train_run

    data = make_class_folders(tmp_path / "pets", {name: 12 for name in CLASSES})
    home = tmp_path / "studio-home"  # the server's
    newest = train_run(data, home).run_id
    older = "20200101-000000-mobilenet_v2-shared"
    shutil.copytree(home / "runs" / newest, home / "runs" / older)

    # The first session picks the older run on Evaluate: the address follows.
    app = App(browser, server)
    browser.get(f"{server}/Evaluate")
    app.wait_text("Confusion matrix", timeout=120)
    app.settle(120)
    assert browser.current_url.endswith(f"/Evaluate?run={newest}")
    picker = app.wait("the run picker", lambda: browser.find_element(
        app.by.CSS_SELECTOR, "[data-testid='stSelectbox']"))
    picker.click()
    app.wait("the older run in the list", lambda: next(
        o for o in browser.find_elements(app.by.CSS_SELECTOR, "[role='option']")
        if older in o.text)).click()
    app.settle()
    app.wait("the address to name the older run",
             lambda: browser.current_url.endswith(f"?run={older}"))
    app.wait("the Copy link button", lambda: next(
        b for b in browser.find_elements(app.by.CSS_SELECTOR, "button")
        if "Copy link" in b.text)).click()
    link = app.wait("the link", lambda: next(
        c.text.strip() for c in browser.find_elements(app.by.CSS_SELECTOR, "code")
        if f"?run={older}" in c.text))
    assert link == f"{server}/Evaluate?run={older}"

    # A second, fresh browser opens the link: the same run, nothing to choose.
    with chromium() as other:
        shared = App(other, server)
        other.get(link)
        shared.wait_text("Confusion matrix", timeout=120)
        shared.settle(120)
        def picker_text() -> str:
            box = other.find_element(shared.by.CSS_SELECTOR, "[data-testid='stSelectbox']")
            values = [i.get_attribute("value") or "" for i in
                      box.find_elements(shared.by.CSS_SELECTOR, "input")]
            return " ".join([box.text, *values])

        shared.wait("the picker to show the shared run", lambda: older in picker_text())
        assert newest not in picker_text()
        shared.shot("10-shared-link")

        # Its demo view: a photo in, the big answer and its heatmap, no menu.
        photo = tmp_path / "a fish.png"
        patterned_image(2, 778, 96).save(photo)
        other.get(f"{server}/Predict?run={older}&view=demo")
        field = shared.wait("the demo's upload", lambda: next(
            f for f in other.find_elements(shared.by.CSS_SELECTOR, "input[type='file']")
            if f.find_element(shared.by.XPATH, "ancestor::*[@data-testid='stFileUploader']")))
        assert not other.find_elements(shared.by.CSS_SELECTOR, "[data-testid='stSidebarNav']")
        field.send_keys(str(photo))
        # A random-weights model may well find the photo unlike its classes: either answer.
        shared.wait("the answer", lambda: "the closest of the classes it knows" in
                    shared.text() or "None of these" in shared.text(), timeout=90)
        shared.wait("the heatmap", lambda: any(
            "Where the model saw" in e.text for e in other.find_elements(
                shared.by.CSS_SELECTOR, "[data-testid='stImage']")), timeout=90)
        shared.settle()
        shared.shot("11-demo")


SESSIONS = 5
STALE_PAGE_SECONDS = 90
ENDINGS = ("Finished in", "Training failed", "Training was interrupted", "Training was cancelled")


def wait_for_the_end(app: App, store: Any, batch: int, timeout: float) -> str:
    """How the page says the session's job ended ("Finished in", "Training failed", ...).

    The page should say it within a few seconds of the job's end. If it has not after
    STALE_PAGE_SECONDS (the live panel stopped polling in this browser), the test says so in
    a warning with the browser's console, reloads the page as a person would, and takes the
    job's end from its run on disk; the page then shows the model on Predict.
    """
    deadline = time.monotonic() + timeout
    ended_on_disk: float | None = None
    failed_reads: list[str] = []
    while True:
        try:
            shown = next((words for words in ENDINGS if words in app.text()), None)
            if shown:
                return shown
        except Exception as exc:  # kept for the messages below
            failed_reads = [*failed_reads[-4:], repr(exc)[:200]]
        run = None
        with contextlib.suppress(Exception):  # a run being written
            run = next((s for s in store.list() if s.status != "running"
                        and store.load(s.run_id).config.batch_size == batch), None)
        if run is not None and ended_on_disk is None:
            ended_on_disk = time.monotonic()
        if ended_on_disk is not None and time.monotonic() - ended_on_disk > STALE_PAGE_SECONDS:
            name = threading.current_thread().name
            shot = app.shot(f"stale-{name}")
            console, page = [], ""
            with contextlib.suppress(Exception):
                console = [entry["message"][:200] for entry in app.d.get_log("browser")][-15:]
                page = app.text()[-300:]
            warnings.warn(f"{name}: the page did not show the end of its job (run {run.run_id}, "
                          f"{run.status}) {STALE_PAGE_SECONDS} s after it ended; reloaded. "
                          f"Screenshot {shot.name}; page: {page!r}; "
                          f"browser console: {console}; failed reads: {failed_reads}",
                          stacklevel=1)
            app.d.refresh()
            app.settle()
            return "Finished in" if run.status == "completed" else f"run {run.status}: {run.error}"
        if time.monotonic() > deadline:
            app.shot(f"timeout-{threading.current_thread().name}-the-end")
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for the job to end; "
                                 f"the page ends: {app.text()[-600:]!r}; "
                                 f"failed reads: {failed_reads}")
        time.sleep(0.5)


@pytest.mark.timeout(TRAINING_SECONDS * SESSIONS + 900)  # the sessions' own limits come first
def test_five_browser_sessions_upload_train_and_predict_at_once(
    server: str, tmp_path: Path
) -> None:
    """Five people at once on one server: no error anywhere, trainings run in the order started.

    Each session uploads the same zip, trains with its own batch size (which names its run),
    and predicts. The sessions press "Start training" one after another while earlier runs
    still train, so the queue holds several jobs at once.
    """
    from core.runs.store import RunStore

    store = RunStore(tmp_path / "studio-home")
    data = make_class_folders(tmp_path / "pets", {name: 8 for name in CLASSES})
    zip_path = zip_folder(data, tmp_path / "pets.zip", arc_prefix="pets/")
    photo = tmp_path / "a cat.png"
    patterned_image(0, 779, 96).save(photo)
    turns = [threading.Event() for _ in range(SESSIONS)]
    turns[0].set()
    started: list[int] = []  # batch sizes, in the order Start was pressed
    failures: dict[int, BaseException] = {}

    def session(number: int) -> None:
        batch = 4 + number
        try:
            with chromium() as driver:
                app = App(driver, server)
                driver.get(f"{server}/Dataset")
                app.upload(zip_path)
                app.wait_text("Report: pets.zip", timeout=300)
                app.settle(300)
                app.click("Use this dataset")
                app.wait_text("In use for training: pets.zip", timeout=120)
                app.quick_training_settings(batch)
                app.wait_text("pets.zip · MobileNetV2 · random weights · 2 epochs", timeout=120)
                if not turns[number].wait(900):
                    raise AssertionError("the session before never pressed Start")
                app.click("Start training")
                started.append(batch)
                app.wait("the job to be queued or running", lambda: driver.find_elements(
                    app.by.CSS_SELECTOR, "[data-testid='stProgress']")
                    or "Waiting in the queue" in app.text() or "Finished in" in app.text())
                if number + 1 < SESSIONS:
                    turns[number + 1].set()
                ended = wait_for_the_end(app, store, batch, TRAINING_SECONDS * SESSIONS)
                assert ended == "Finished in", f"session {number}: {ended}; {app.text()[-600:]}"
                app.settle()
                app.top_prediction(photo, CLASSES, timeout=180)
                app.settle()
                shown = driver.find_elements(app.by.CSS_SELECTOR, "[data-testid='stException']")
                assert not shown, f"session {number}: {shown[0].text[:500]}"
                app.shot(f"30-session-{number}")
        except BaseException as exc:  # reported from the main thread
            failures[number] = exc
            for later in turns[number + 1:]:
                later.set()  # the others need not wait for a session that failed

    threads = [threading.Thread(target=session, args=(n,), name=f"session-{n}")
               for n in range(SESSIONS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TRAINING_SECONDS * SESSIONS + 900)
    assert not any(t.is_alive() for t in threads), "a session never finished"
    runs = sorted(store.list(), key=lambda summary: summary.created)
    assert not failures, "; ".join(f"session {n}: {e!r}" for n, e in sorted(failures.items())) \
        + f". Runs on disk: {[(s.run_id, s.status, s.error) for s in runs]}"
    assert [s.status for s in runs] == ["completed"] * SESSIONS
    ran = [store.load(s.run_id).config.batch_size for s in runs]
    assert ran == started, "the runs did not train in the order their sessions started them"


def test_build_a_dataset_from_files_train_and_predict_in_a_real_browser(
    server: str, browser: Any, tmp_path: Path
) -> None:
    started = time.monotonic()
    photos: dict[str, list[str]] = {}
    for k, name in enumerate(("cats", "dogs")):
        folder = tmp_path / name
        folder.mkdir()
        for i in range(6):
            patterned_image(k, i, 64).save(folder / f"{name}-{i}.png")
        photos[name] = [str(p) for p in sorted(folder.iterdir())]
    photo = tmp_path / "a dog.png"
    patterned_image(1, 777, 96).save(photo)

    app = App(browser, server)
    app.open_home()
    app.go("Dataset")
    app.choose_radio("New dataset")
    app.type_into("Dataset name", "my pets")
    app.click("Create dataset")
    app.wait_text("Dataset: my pets")
    for name in photos:
        app.type_into("New class", name)  # Enter adds the class
        app.wait_text(f"{name} · 0 photos")

    def file_inputs() -> list[Any]:
        return browser.find_elements(
            app.by.CSS_SELECTOR, "[data-testid='stFileUploader'] input[type='file']")

    for n, name in enumerate(photos):
        fields = app.wait("a file input per class", lambda: len(file_inputs()) == 2
                          and file_inputs())
        fields[n].send_keys("\n".join(photos[name]))
        app.wait_text(f"{name} · 6 photos", timeout=90)
        app.settle()
    app.shot("20-builder")
    app.click("Check the photos and split")
    app.wait_text("Report: my pets", timeout=120)
    app.settle(120)
    app.wait_text("Split")
    use = app.wait("the split's Use this dataset", lambda: [
        b for b in browser.find_elements(app.by.CSS_SELECTOR, "button")
        if b.text.strip().endswith("Use this dataset") and b.is_enabled()][-1])
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'}); "
                           "arguments[0].click();", use)
    app.settle()
    app.wait_text("In use for training: my pets")

    app.quick_training_settings(batch_size=4)
    app.click("Start training")
    app.wait_text("Finished in", timeout=2 * TRAINING_SECONDS)  # a loaded machine
    app.settle()

    heading = app.top_prediction(photo, photos)
    assert heading.split(" · ")[0] in photos
    print(f"browser build-train-predict: {time.monotonic() - started:.0f} s")


def test_a_zip_larger_than_a_photo_loads_from_the_disk_in_a_real_browser(
    server: str, browser: Any, tmp_path: Path
) -> None:
    """A zip over the photo limit is kept on disk by the upload store (ui/upload_store.py),
    not in the server's memory; the Dataset page reads it from there as before."""
    import zipfile

    from ui import upload_store

    data = make_class_folders(tmp_path / "pets", {name: 12 for name in CLASSES})
    zip_path = zip_folder(data, tmp_path / "pets.zip", arc_prefix="pets/")
    with zipfile.ZipFile(zip_path, "a", zipfile.ZIP_STORED) as archive:  # hidden: ignored
        archive.writestr("pets/.padding", os.urandom((upload_store.SPOOL_ABOVE_MB + 5) * 2**20))
    assert zip_path.stat().st_size > upload_store.SPOOL_ABOVE_MB * 2**20

    app = App(browser, server)
    app.open_home()
    app.go("Dataset")
    app.upload(zip_path)
    app.wait_text("Report: pets.zip", timeout=180)
    app.settle(120)
    app.wait_text("Usable images\n36")
    app.shot("large-zip-dataset")
