"""'None of these' travels with an export: metadata.json, the reference file and predict.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_class_folders
from PIL import Image
from run_helpers import LABELS, make_run, tiny_classifier

from core.export import exporter as export
from core.export import familiarity as export_familiarity
from core.results.prediction import Predictor

FORMATS = "keras,tflite_float32,tflite_int8"


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("export-familiar")
    data = make_class_folders(root / "data", {name: 12 for name in LABELS})
    run = make_run(root / "home", data, tiny_classifier(len(LABELS)))
    result = export.export_run(run, root / "out", formats=FORMATS)
    photos = [Path(p) for p in run.split[run.split["split"] == "test"]["path"]]
    rng = np.random.default_rng(0)
    for i in range(4):  # photos of nothing the run knows: noise, stripes
        pixels = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8) if i % 2 else \
            np.tile(np.linspace(0, 255, 40, dtype=np.uint8)[None, :, None], (40, 1, 3))
        Image.fromarray(pixels).save(root / f"other{i}.png")
        photos.append(root / f"other{i}.png")
    return {"run": run, "folder": result.folder, "metadata": result.metadata,
            "photos": photos, "predictor": Predictor.from_run(run.run_dir)}


def test_metadata_says_how_to_score_and_the_reference_is_beside_it(exported: dict) -> None:
    block = exported["metadata"]["familiarity"]
    fam = exported["predictor"].familiarity
    assert block["k"] == fam.k and block["class_thresholds"] == [
        pytest.approx(float(t)) for t in fam.class_thresholds]
    ref = block["reference"]
    raw = (exported["folder"] / ref["file"]).read_bytes()
    assert len(raw) == ref["shape"][0] * ref["shape"][1] * 2
    np.testing.assert_array_equal(np.frombuffer(raw, "<f2").reshape(ref["shape"]),
                                  fam.reference)
    assert len(ref["labels"]) == ref["shape"][0]
    features = block["features"]
    assert isinstance(features["model_float32.tflite"]["tensor_index"], int)
    assert isinstance(features["model_int8.tflite"]["tensor_index"], int)
    assert features["model_float32.tflite"]["max_difference_share"] < 1e-3
    assert features["saved_model"] is None
    assert any("k-th largest" in step for step in block["how_to_score"])
    # The model's outputs are unchanged: still one output, the probabilities.
    assert exported["metadata"]["output"]["name"] == "probabilities"


def _predict_py(exported: dict, model: str) -> list[dict]:
    folder = exported["folder"]
    done = subprocess.run(
        [sys.executable, "-I", str(folder / "predict.py"), *map(str, exported["photos"]),
         "--model", model, "--json"], cwd=folder, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("model", ["model.keras", "model_float32.tflite", "model_int8.tflite"])
def test_predict_py_agrees_with_the_studio_on_unknown(exported: dict, model: str) -> None:
    studio = exported["predictor"].predict([str(p) for p in exported["photos"]], top_k=1)
    assert {p.unknown for p in studio} == {True, False}  # both answers are exercised
    rows = _predict_py(exported, model)
    # A photo on the line itself may fall either way by rounding; none is that close here.
    close = [abs(p.familiarity - p.familiarity_threshold) < 1e-4 for p in studio]
    agree = [r["unknown"] == p.unknown for r, p, c in zip(rows, studio, close) if not c]
    if model == "model_int8.tflite":  # its features are quantized
        assert np.mean(agree) >= 0.75, (rows, studio)
    else:
        assert all(agree), (rows, studio)
        for r, p in zip(rows, studio):
            assert r["familiarity"] == pytest.approx(p.familiarity, abs=1e-3)


def test_predict_py_text_answers_none_of_these_with_the_closest_class(exported: dict) -> None:
    studio = exported["predictor"].predict([str(p) for p in exported["photos"]], top_k=1)
    photo, said = next((p, s) for p, s in zip(exported["photos"], studio) if s.unknown)
    text = subprocess.run([sys.executable, "-I", str(exported["folder"] / "predict.py"),
                           str(photo), "--model", "model.keras"], capture_output=True,
                          text=True, timeout=600).stdout
    assert f"none of these: it looks like none of the {len(LABELS)} classes" in text
    assert f"closest: {said.label}" in text


def test_an_export_without_familiarity_still_works(exported: dict, tmp_path: Path) -> None:
    block = export_familiarity.metadata_block(
        exported["run"], type("NoFamiliarity", (), {"familiarity": None,
                                                    "familiarity_problem": "none"})(),
        tmp_path, [], np.zeros((32, 32, 3), np.uint8))
    assert block is None and not (tmp_path / export_familiarity.REFERENCE_FILE).exists()
