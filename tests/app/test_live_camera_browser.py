"""The live camera in headless Chromium, with a fake camera playing the run's test photos.

The browser's answers (LiteRT.js running the run's browser model on each frame) must agree with
the server's Predictor on the same frames: the same top class on at least 95% of the answers,
and the same "not sure" decision wherever the server's top probability is not within MARGIN of
the threshold. "None of these" too: the clip also shows real photos of things the run never saw
(../shared/assets/images/imagenet_sanity), and the browser's unknown/known decision must be the
server's wherever the server's familiarity score is not within FAMILIAR_MARGIN of its threshold.
Once as the admin of an open studio (Predict's demo view, live=1), once as a viewer of a studio
with an admin password.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import make_class_folders, require_asset
from live_helpers import (
    RECORDER,
    answers,
    chromium,
    enter_live_view,
    message,
    wait_for_answers,
)
from PIL import Image
from run_helpers import make_run, tiny_classifier
from studio_server import browser_missing, studio
from video_helpers import browser_squash, frame_of, signature, write_y4m

from core.data import images
from core.results import familiarity
from core.results.prediction import Predictor
from ui.live_camera import WEB

pytestmark = pytest.mark.browser

FRAME = (160, 120)    # the clip's width and height
REPEAT = 12           # frames per photo (1.2 s at 10 frames/s)
FPS = 10
MARGIN = 0.02         # |p_top - threshold| below which "not sure" may differ (measured: float32
                      # numbers of the same pixels differ by < 1e-5; pixels by YUV rounding)
MATCH = 4.0           # mean |difference| of the 4 x 4 signatures for an answer to name a frame
FAMILIAR_MARGIN = 0.01  # |familiarity - its threshold| below which "none of these" may differ
                        # (cosine similarities; measured differences: docs/benchmarks.md)
UNSEEN = ("cat.bmp", "grace_hopper.bmp", "hot_dog.jpg", "parrot.jpg")  # never seen by the run


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tiny trained run, its clip, and the server's answers for each frame of the clip."""
    if browser_missing():
        pytest.skip(browser_missing())
    root = tmp_path_factory.mktemp("live")
    photos = make_class_folders(root / "photos", {"cats": 12, "dogs": 12, "fish": 12})
    home = root / "studio-home"
    run = make_run(home, photos, tiny_classifier(3))
    test = run.split[run.split["split"] == "test"]
    photos_ = [frame_of(Image.open(p), *FRAME) for p in test["path"]]
    # Halfway blends of photos of two classes: frames the model is not sure about.
    blends = [((a.astype(np.uint16) + b) // 2).astype(np.uint8)
              for a, b in zip(photos_, photos_[1:] + photos_[:1])]
    unseen = [frame_of(Image.open(require_asset(f"images/imagenet_sanity/{name}")), *FRAME)
              for name in UNSEEN]
    frames = [f for pair in zip(photos_, blends) for f in pair] + unseen
    clip = root / "clip.y4m"
    shown = write_y4m(clip, frames, REPEAT, FPS)
    first = Predictor.from_run(run.run_dir)  # fits the run's familiarity on first use
    feats, probs = first.features_and_probabilities(
        np.stack([images.load_resized(Image.fromarray(f), run.input_size) for f in shown]))
    tops = probs.max(axis=1)
    print("top probabilities of the frames:", np.round(tops, 4).tolist())
    _set_threshold(run.run_dir, _threshold_between(tops))  # some frames sure, some not
    # The tiny model's features of its patterned photos are nearly identical, so its fitted
    # thresholds sit at ~1.0, within the margin of its own test photos' scores: put them in
    # the widest gap between the frames' scores instead (the unseen photos fall below it).
    scores, _ = first.familiarity_scores(feats)
    print("familiarity of the frames, fitted:", np.round(scores, 4).tolist())
    _set_familiarity_threshold(run, _threshold_between(scores))
    predictor = Predictor.from_run(run.run_dir)
    server = predictor.predict([Image.fromarray(f) for f in shown], top_k=1)
    assert any(p.unsure for p in server) and not all(p.unsure for p in server)
    # Both answers occur: photos of things the run never saw are "none of these", its own not.
    print("familiarity of the frames:", [round(p.familiarity, 4) for p in server],
          "unknown:", [p.unknown for p in server])
    assert any(p.unknown for p in server) and not all(p.unknown for p in server)
    inputs = [images.load_resized(Image.fromarray(f), run.input_size) for f in shown]
    return {"home": home, "run": run, "clip": clip, "threshold": predictor.threshold,
            "server": server, "signatures": np.stack([signature(x) for x in inputs])}


def _threshold_between(tops: np.ndarray) -> float:
    """A threshold in the widest gap between the frames' values, near the middle."""
    ordered = np.sort(tops)
    gaps = np.diff(ordered)
    middle = len(ordered) // 2
    at = max(range(1, len(ordered) - 1), key=lambda i: gaps[i - 1] - 0.01 * abs(i - middle))
    return float((ordered[at - 1] + ordered[at]) / 2)


def _set_familiarity_threshold(run: Any, threshold: float) -> None:
    fam = familiarity.Familiarity.load(run.familiarity_path)
    fam.class_thresholds = np.full_like(fam.class_thresholds, threshold)
    fam.threshold = threshold
    fam.save(run.familiarity_path)


def _set_threshold(run_dir: Path, threshold: float) -> None:
    path = run_dir / "metrics.json"
    metrics = json.loads(path.read_text())
    metrics["unsure_threshold"] = threshold
    path.write_text(json.dumps(metrics))


def _compare(trained: dict[str, Any], seen: list[dict[str, Any]]) -> dict[str, Any]:
    """Matches each browser answer to its frame by signature; counts agreements."""
    matched = agree = unsure_same = unsure_checked = unknown_same = unknown_checked = 0
    unknown_agree = 0
    checked_answers: set[bool] = set()
    frames = set()
    distances, familiarity_differences = [], []
    for item in seen:
        sig = np.array([float(v) for v in item["signature"].split(",")])
        distance = np.abs(trained["signatures"] - sig).mean(axis=1)
        frame = int(distance.argmin())
        if distance[frame] > MATCH:
            continue
        matched += 1
        frames.add(frame)
        distances.append(float(distance[frame]))
        server = trained["server"][frame]
        agree += item["label"] == server.label
        if abs(server.probability - trained["threshold"]) >= MARGIN:
            unsure_checked += 1
            unsure_same += (item["unsure"] == "true") == server.unsure
        familiarity_differences.append(abs(item["familiarity"] - server.familiarity))
        unknown_agree += (item["unknown"] == "true") == server.unknown
        if abs(server.familiarity - server.familiarity_threshold) >= FAMILIAR_MARGIN:
            unknown_checked += 1
            unknown_same += (item["unknown"] == "true") == server.unknown
            checked_answers.add(bool(server.unknown))
    return {"answers": len(seen), "matched": matched, "frames": len(frames),
            "clip_frames": len(trained["server"]), "agree": agree,
            "unsure_checked": unsure_checked, "unsure_same": unsure_same,
            "browser_unsure": sum(item["unsure"] == "true" for item in seen),
            "unknown_checked": unknown_checked, "unknown_same": unknown_same,
            "unknown_agree": unknown_agree, "checked_answers": sorted(checked_answers),
            "browser_unknown": sum(item["unknown"] == "true" for item in seen),
            "server_unknown_frames": sum(bool(p.unknown) for p in trained["server"]),
            "largest_familiarity_difference": max(familiarity_differences, default=None),
            "largest_signature_distance": max(distances, default=None)}


def _live_answers(url: str, trained: dict[str, Any], *, viewer: bool = False
                  ) -> list[dict[str, Any]]:
    run_id = trained["run"].run_id
    with chromium(trained["clip"]) as driver:
        driver.get(f"{url}/Predict?run={run_id}&view=demo&live=1")
        enter_live_view(driver)
        wait_for_answers(driver, 1, timeout=240)
        time.sleep(len(trained["server"]) * REPEAT / FPS + 2)  # the whole clip, at least once
        seen = answers(driver)
        text = driver.find_element("id", "answer").text
        privacy = driver.find_element("css selector", ".privacy").text
        if viewer:  # the same session is a viewer: the Train page asks for the password
            from selenium.webdriver.support.ui import WebDriverWait

            driver.switch_to.default_content()
            driver.get(f"{url}/Train")
            WebDriverWait(driver, 120).until(
                lambda d: "Admin password" in d.find_element("tag name", "body").text)
    assert text.strip(), "the aria-live region shows no answer"
    assert "no picture leaves it" in privacy
    return seen


def _check(trained: dict[str, Any], seen: list[dict[str, Any]]) -> None:
    facts = _compare(trained, seen)
    print("live camera parity:", facts)
    assert facts["matched"] >= 0.9 * facts["answers"], facts
    assert facts["agree"] >= 0.95 * facts["matched"], facts
    assert facts["unsure_same"] == facts["unsure_checked"], facts
    assert facts["unknown_same"] == facts["unknown_checked"], facts
    assert facts["unknown_agree"] >= 0.95 * facts["matched"], facts  # near the line too
    assert facts["checked_answers"] == [False, True], facts  # both, away from the line
    assert 0 < facts["browser_unknown"] < facts["answers"], facts  # both answers occur
    # In the server's words, the closest class named second.
    for item in (item for item in seen if item["unknown"] == "true"):
        assert item["text"].strip() == familiarity.NONE_OF_THESE, item
        assert item["detail"].startswith(f"Closest: {item['label']} ("), item
        assert item["detail"].endswith(familiarity.none_of_these(3, item["label"])), item
    assert facts["frames"] >= 0.8 * facts["clip_frames"], f"answers missed photos: {facts}"
    labels = {item["label"] for item in seen}
    assert len(labels) >= 2, f"the answers did not follow the camera: {labels}"


def test_live_answers_agree_with_the_server_as_admin(trained: dict[str, Any],
                                                      tmp_path: Path) -> None:
    with studio(trained["home"], tmp_path / "streamlit.log") as (url, _):
        seen = _live_answers(url, trained)
    _check(trained, seen)


def test_a_viewer_gets_live_answers_too(trained: dict[str, Any], tmp_path: Path) -> None:
    secrets = tmp_path / "secrets.toml"
    secrets.write_text('[studio]\nadmin_password = "a long admin password"\n')
    with studio(trained["home"], tmp_path / "streamlit.log", secrets=secrets) as (url, _):
        seen = _live_answers(url, trained, viewer=True)
    _check(trained, seen)


def _component_page(clip: Path | None, args: dict[str, Any], *, camera: bool = True) -> str:
    """The live view's page alone (served as Streamlit serves it), given its arguments."""
    import functools
    import http.server
    import threading

    from selenium.webdriver.support.ui import WebDriverWait

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(WEB))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with chromium(clip, camera=camera) as driver:
            driver.get(f"http://127.0.0.1:{server.server_address[1]}/index.html")
            driver.execute_script(
                "window.postMessage({type: 'streamlit:render', args: arguments[0]}, '*')", args)
            WebDriverWait(driver, 120).until(
                lambda d: message(d) not in ("", "Loading the live camera…",
                                             "Starting the camera…",
                                             "Loading the model into this browser…"))
            return message(driver)
    finally:
        server.shutdown()


ARGS = {"model_url": "missing/model_browser.tflite", "labels": ["cats", "dogs"], "size": 32,
        "threshold": 0.5, "autostart": True}


def test_without_a_camera_or_a_model_the_view_says_what_to_do(tmp_path: Path) -> None:
    if browser_missing():
        pytest.skip(browser_missing())
    no_camera = _component_page(None, ARGS, camera=False)
    assert "No camera was found" in no_camera or "in use" in no_camera, no_camera
    clip = tmp_path / "grey.y4m"
    write_y4m(clip, [np.full((120, 160, 3), 128, np.uint8)], 5, FPS)
    no_model = _component_page(clip, ARGS)
    assert "cannot run the model here" in no_model and "404" in no_model, no_model
    assert "upload" in no_model


def test_the_pages_resize_is_its_python_copy_used_by_the_benchmark() -> None:
    """resize.js in Chromium gives exactly tests/video_helpers.browser_squash's pixels (which
    bench/live_preprocessing_benchmark.py uses to measure the live path on real photos)."""
    if browser_missing():
        pytest.skip(browser_missing())
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(WEB))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    rng = np.random.default_rng(0)
    try:
        with chromium(None, camera=False) as driver:
            base = f"http://127.0.0.1:{server.server_address[1]}"
            driver.get(f"{base}/index.html")
            driver.set_script_timeout(60)
            for height, width, size in ((120, 160, 32), (37, 23, 16), (48, 64, 96)):
                rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
                rgba = np.concatenate([rgb, np.full((height, width, 1), 255, np.uint8)], -1)
                got = driver.execute_async_script(
                    "const [url, pixels, w, h, s, done] = arguments;"
                    "import(url).then((m) => done(Array.from("
                    "  m.squash(Uint8ClampedArray.from(pixels), w, h, s))));",
                    f"{base}/resize.js", rgba.ravel().tolist(), width, height, size)
                want = browser_squash(rgb, size)
                np.testing.assert_array_equal(
                    np.array(got, np.float64).reshape(size, size, 3), want)
    finally:
        server.shutdown()


def test_a_model_file_without_features_still_answers_and_says_none_of_these_is_off(
        tmp_path: Path) -> None:
    """A browser file that gives no feature vector (not laid out as base and head, or made
    before 'none of these' reached the browser): the live view answers with the classes and
    says, in a note, that it cannot answer "None of these"."""
    if browser_missing():
        pytest.skip(browser_missing())
    import functools
    import http.server
    import threading

    import keras

    from core.export import browser

    keras.utils.set_random_seed(0)
    flat = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(4, 3),
                             keras.layers.GlobalAveragePooling2D(),
                             keras.layers.Dense(2, activation="softmax")])
    site = tmp_path / "site"
    (site / "model").mkdir(parents=True)
    (site / "live").symlink_to(WEB)
    browser.write(flat, 32, site / "model" / browser.FILE)
    assert not browser.has_features(site / "model" / browser.FILE)
    (site / "model" / browser.REFERENCE_FILE).write_bytes(
        np.ones((2, 4), "<f2").tobytes())
    args = {**ARGS, "model_url": f"../model/{browser.FILE}",
            "familiarity": {"reference_url": f"../model/{browser.REFERENCE_FILE}", "k": 1,
                            "class_thresholds": [0.5, 0.5], "reference_labels": [0, 1],
                            "shape": [2, 4], "bytes": 16, "heading": "None of these",
                            "words": ["about cats", "about dogs"]}}
    clip = tmp_path / "grey.y4m"
    write_y4m(clip, [np.full((120, 160, 3), 128, np.uint8)], 5, FPS)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with chromium(clip) as driver:
            driver.get(f"http://127.0.0.1:{server.server_address[1]}/live/index.html")
            driver.execute_script(RECORDER)
            driver.execute_script(
                "window.postMessage({type: 'streamlit:render', args: arguments[0]}, '*')", args)
            seen = wait_for_answers(driver, 3, timeout=120)
            note = driver.find_element("id", "note").text
    finally:
        server.shutdown()
    assert "cannot tell “None of these”" in note, note
    assert {item["label"] for item in seen} <= {"cats", "dogs"}
    assert all(item["unknown"] == "" for item in seen), seen[:3]
