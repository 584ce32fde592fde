"""The live camera in real Chromium: the app with a fake camera, and the answers it shows.

Shared by tests/app/test_live_camera_browser.py and bench/live_camera_benchmark.py. Chromium
plays a Y4M clip (tests/video_helpers.py) as its camera; the answers are read from the live
view's aria-live region, recorded by a MutationObserver as they change.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from studio_server import CHROMEDRIVER, CHROMIUM

REPO = Path(__file__).resolve().parents[1]
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--disable-background-timer-throttling",
         "--disable-renderer-backgrounding", "--disable-backgrounding-occluded-windows",
         "--use-fake-ui-for-media-stream")
FAKE_CAMERA = "--use-fake-device-for-media-stream"
COMPONENT_FRAME = "iframe[title='ui.live_camera.live_camera']"

# Installed in the component's page: every change of the answer region is kept.
RECORDER = """
const answer = document.getElementById('answer');
window.__answers = [];
const keep = () => window.__answers.push({
  label: answer.dataset.label, unsure: answer.dataset.unsure, text: answer.textContent,
  unknown: answer.dataset.unknown, familiarity: Number(answer.dataset.familiarity),
  detail: document.getElementById('answer-detail').textContent,
  probability: Number(answer.dataset.probability), signature: answer.dataset.signature,
  count: Number(answer.dataset.count), at: performance.now()});
new MutationObserver(keep).observe(answer, {attributes: true, subtree: true, childList: true,
                                            characterData: true});
"""


@contextlib.contextmanager
def chromium(clip: Path | None, window: str = "1400,1000", *, camera: bool = True
             ) -> Iterator[Any]:
    """Headless Chromium whose camera plays clip (a fake camera, allowed without asking).

    Args:
        clip: A .y4m file; None: Chromium's own test pattern.
        window: Window size "width,height".
        camera: False: no camera at all (the machine's own, which a server has none of).
    """
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--window-size={window}")
    if camera:
        options.add_argument(FAKE_CAMERA)
    if clip is not None:
        options.add_argument(f"--use-file-for-fake-video-capture={clip}")
    profile = tempfile.mkdtemp(prefix="tl-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(90)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def enter_live_view(driver: Any, timeout: float = 180) -> None:
    """Switches into the live camera component once its page is there; installs RECORDER."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(
        ec.frame_to_be_available_and_switch_to_it((By.CSS_SELECTOR, COMPONENT_FRAME)))
    WebDriverWait(driver, 30).until(
        lambda d: d.execute_script("return !!document.getElementById('answer')"))
    driver.execute_script(RECORDER)


def answers(driver: Any) -> list[dict[str, Any]]:
    """The answers recorded so far (inside the component's frame)."""
    return list(driver.execute_script("return window.__answers || []"))


def message(driver: Any) -> str:
    """The live view's message box text ('' when hidden)."""
    return str(driver.execute_script(
        "const m = document.getElementById('message'); return m.hidden ? '' : m.textContent"))


def wait_for_answers(driver: Any, count: int, timeout: float) -> list[dict[str, Any]]:
    """Waits until count answers were recorded; raises with the page's message otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = answers(driver)
        if len(got) >= count:
            return got
        time.sleep(0.5)
    logs = "\n".join(str(e) for e in driver.get_log("browser")[-15:])
    raise AssertionError(f"{len(answers(driver))} answers in {timeout:.0f} s; the page says: "
                         f"{message(driver)!r}\n{logs}")
