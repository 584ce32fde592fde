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
from core.files import file_sha256


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


def _old_browser_file(run, target: Path) -> None:
    """A browser model as the studio wrote it before 'none of these': probabilities only."""
    import tempfile

    import keras
    import tensorflow as tf

    from core import files
    from core.export.tflite_files import tflite_bytes

    model = keras.saving.load_model(run.model_path, compile=False)
    with tempfile.TemporaryDirectory() as scratch:
        archive = keras.export.ExportArchive()
        archive.track(model)
        spec = tf.TensorSpec([1, 32, 32, 3], tf.float32, name="images")
        archive.add_endpoint(name="serving_default", input_signature=[spec],
                             fn=lambda images: {"probabilities": model(images, training=False)})
        archive.write_out(f"{scratch}/sm", verbose=False)
        files.write_bytes_atomic(target, tflite_bytes(Path(f"{scratch}/sm"), 32, "float32", None))


def test_a_fresh_export_is_the_file_served(run, tmp_path: Path) -> None:
    import keras

    exported = tmp_path / "exported"
    exported.mkdir()
    model = keras.saving.load_model(run.model_path, compile=False)
    browser.write(model, 32, exported / browser.FILE)
    path = browser.model_file(run, exported)
    assert path.read_bytes() == (exported / browser.FILE).read_bytes()
    assert sorted(p.name for p in path.parent.iterdir()) == [browser.FILE]  # nothing else served
    assert file_sha256(path) == file_sha256(exported / browser.FILE)


def test_the_browser_model_gives_the_features_the_server_scores(run) -> None:
    from core.results.prediction import Predictor

    path = browser.model_file(run)
    assert browser.output_names(path) == [browser.PROBABILITIES_OUTPUT, browser.FEATURES_OUTPUT]
    x = np.random.default_rng(1).integers(0, 256, (1, 32, 32, 3)).astype(np.float32)
    import tensorflow as tf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    probs, feats = (interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details())
    predictor = Predictor.from_run(run.run_dir)
    want_feats, want_probs = predictor.features_and_probabilities(x.astype(np.uint8))
    np.testing.assert_allclose(probs, want_probs, atol=1e-5)
    np.testing.assert_allclose(feats, want_feats, atol=1e-4)

    fam = predictor.familiarity
    assert fam is not None
    ref = browser.reference_file(run.run_dir, fam)
    assert ref.parent == path.parent and ref.name == browser.REFERENCE_FILE
    stored = np.frombuffer(ref.read_bytes(), "<f2").reshape(fam.reference.shape)
    np.testing.assert_array_equal(stored, fam.reference)
    page = browser.page_familiarity(fam, predictor.labels)
    assert page["k"] == fam.k and page["bytes"] == ref.stat().st_size
    assert page["reference_labels"] == fam.reference_labels.tolist()
    assert page["words"][1] == ("It looks like none of the 3 classes this model knows. The "
                                "closest is dogs, but it does not look like the dogs photos the "
                                "model learned from.")


def test_an_older_browser_file_without_features_is_made_again(run, tmp_path: Path) -> None:
    cached = run.run_dir / browser.CACHE_FOLDER / browser.FILE
    cached.parent.mkdir()
    _old_browser_file(run, cached)
    assert browser.output_names(cached) == [browser.PROBABILITIES_OUTPUT]
    assert not browser.has_features(cached)
    assert browser.has_features(browser.model_file(run))  # made again, with the features
    # An old export's file is not copied: the one made from the model is served.
    exported = tmp_path / "exported"
    exported.mkdir()
    _old_browser_file(run, exported / browser.FILE)
    served = browser.model_file(run, exported)
    assert browser.has_features(served)
    assert served.read_bytes() != (exported / browser.FILE).read_bytes()


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
    # "None of these" for a client of the export: the features are the file's second output.
    where = meta["familiarity"]["features"][browser.FILE]
    assert where["output_name"] == browser.FEATURES_OUTPUT
    import tensorflow as tf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(model_path=str(exported / browser.FILE))
    outputs = [d["index"] for d in interpreter.get_output_details()]
    assert where["tensor_index"] == outputs[1]
