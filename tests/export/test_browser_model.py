"""core.export.browser: the .tflite file the live camera runs (batch of one, raw pixels in)."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import make_class_folders
from run_helpers import make_run, tiny_classifier

from core.export import browser


def _run(path: Path, x: np.ndarray) -> tuple[np.ndarray, list[int]]:
    import tensorflow as tf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    interpreter.set_tensor(inp["index"], x)
    interpreter.invoke()
    out = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    return out, list(inp["shape_signature"])


@pytest.fixture
def run(tmp_path: Path):
    photos = make_class_folders(tmp_path / "photos", {"cats": 6, "dogs": 6, "fish": 6})
    return make_run(tmp_path / "home", photos, tiny_classifier(3))


def test_the_browser_model_is_made_once_and_answers_like_keras(run) -> None:
    import keras

    path = browser.model_file(run)
    assert path == run.run_dir / browser.CACHE_FOLDER / browser.FILE
    x = np.random.default_rng(0).integers(0, 256, (1, 32, 32, 3)).astype(np.float32)
    probs, shape = _run(path, x)
    assert shape == [1, 32, 32, 3]  # a fixed batch: LiteRT.js cannot resize an input
    model = keras.saving.load_model(run.model_path, compile=False)
    np.testing.assert_allclose(probs, np.asarray(model(x)), atol=1e-5)

    stamp = path.stat().st_mtime_ns
    assert browser.model_file(run) == path and path.stat().st_mtime_ns == stamp  # cached
    os.utime(run.model_path, ns=(stamp + 10**9, stamp + 10**9))  # a newer model: made again
    browser.model_file(run)
    assert path.stat().st_mtime_ns > stamp


def test_a_fresh_export_is_the_file_served(run, tmp_path: Path) -> None:
    exported = tmp_path / "exported"
    exported.mkdir()
    (exported / browser.FILE).write_bytes(b"the verified export")
    path = browser.model_file(run, exported)
    assert path.read_bytes() == b"the verified export"
    assert sorted(p.name for p in path.parent.iterdir()) == [browser.FILE]  # nothing else served
    assert browser.digest(path) == browser.digest(exported / browser.FILE)


def test_the_browser_file_is_an_export_format_verified_like_the_others(run, tmp_path: Path
                                                                       ) -> None:
    from core.export import exporter
    from core.export import formats as export_formats

    assert export_formats.get("browser").file == browser.FILE
    result = exporter.export_run(run, tmp_path / "out", formats="browser")
    meta = json.loads((tmp_path / "out" / run.run_id / "metadata.json").read_text())
    entry = meta["formats"]["browser"]
    assert entry["file"] == browser.FILE and entry["status"] == "ok", entry
    assert result.formats["browser"].status == "ok"
    assert entry["agreement"] == 1.0 and entry["max_probability_difference"] < 1e-4
    assert {r["runtime"] for r in entry["runtimes"]} >= {"tf.lite"}
    exported = tmp_path / "out" / run.run_id
    assert browser.model_file(run, exported).read_bytes() == (exported / browser.FILE).read_bytes()
