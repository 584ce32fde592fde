"""Prediction with a tiny saved model in a fake run folder: top-k, EXIF, unsure, bad input."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.config import TrainConfig
from core.errors import ConfigError, RunNotFoundError, RunNotUsableError
from core.results.prediction import Prediction, Predictor

SIZE = 16
LABELS = ["red", "green", "blue"]


def colour_model(crop_top_half: bool = False):
    """Input (S,S,3) 0..255 -> Rescaling -> [top half] -> mean colour -> softmax(10 * rgb).

    The class follows the dominant colour; with crop_top_half only the top half counts, so
    the prediction depends on which way up the photo is.
    """
    import keras

    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    if crop_top_half:
        x = keras.layers.Cropping2D(((0, SIZE // 2), (0, 0)))(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    dense = keras.layers.Dense(3, activation="softmax")
    outputs = dense(x)
    dense.set_weights([np.eye(3, dtype="float32") * 10, np.zeros(3, "float32")])
    return keras.Model(inputs, outputs)


def make_run(folder: Path, model, threshold: float | None = 0.6) -> Path:
    """A completed run folder as the run store keeps it, with only the files prediction reads."""
    folder.mkdir(parents=True)
    model.save(folder / "model.keras")
    (folder / "config.json").write_text(json.dumps(TrainConfig(weights=None).to_dict()))
    (folder / "labels.json").write_text(json.dumps({"labels": LABELS, "input_size": SIZE}))
    (folder / "status.json").write_text(json.dumps({"status": "completed"}))
    metrics = {} if threshold is None else {"unsure_threshold": threshold}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("prediction-runs")
    make_run(root / "colour", colour_model())
    make_run(root / "upright", colour_model(crop_top_half=True))
    make_run(root / "no-threshold", colour_model(), threshold=None)
    return root


@pytest.fixture(scope="module")
def predictor(runs_root: Path) -> Predictor:
    return Predictor.from_run(runs_root / "colour")


def solid(rgb: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> Image.Image:
    return Image.new("RGB", size, rgb)


def png_bytes(img: Image.Image, **save: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", **save)
    return buf.getvalue()


def expected_probs(rgb: tuple[int, int, int]) -> np.ndarray:
    logits = np.array(rgb, np.float64) / 255 * 10
    e = np.exp(logits - logits.max())
    return e / e.sum()


def test_from_run_reads_labels_size_and_threshold(runs_root: Path, predictor: Predictor) -> None:
    assert predictor.labels == LABELS and predictor.input_size == SIZE
    assert predictor.threshold == 0.6 and predictor.run_dir == runs_root / "colour"
    assert Predictor.from_run(runs_root / "no-threshold").threshold == 0.5


def test_top_k_order_and_probabilities(predictor: Predictor, tmp_path: Path) -> None:
    path = tmp_path / "mostly_blue.png"
    solid((90, 20, 200)).save(path)
    (pred,) = predictor.predict(path, top_k=5)  # one source, capped at 3 classes
    assert isinstance(pred, Prediction) and pred.ok and pred.file == str(path)
    assert [label for label, _ in pred.top_k] == ["blue", "red", "green"]
    probs = [p for _, p in pred.top_k]
    assert probs == sorted(probs, reverse=True)
    assert sum(probs) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(probs, expected_probs((90, 20, 200))[[2, 0, 1]], atol=1e-5)
    assert pred.label == "blue" and pred.probability == probs[0]
    assert pred.image.shape == (SIZE, SIZE, 3) and pred.image.dtype == np.uint8
    assert (pred.image == [90, 20, 200]).all()
    (top1,) = predictor.predict([path], top_k=1)
    assert top1.top_k == pred.top_k[:1]
    assert pred.to_dict()["top_k"][0] == {"label": "blue", "probability": probs[0]}


def test_paths_bytes_pil_files_and_a_mix(predictor: Predictor, tmp_path: Path) -> None:
    path = tmp_path / "r.png"
    solid((250, 10, 10)).save(path)
    upload = io.BytesIO(png_bytes(solid((10, 10, 250))))
    upload.name = "folder/uploaded.png"  # like Streamlit's UploadedFile
    grey_rgba = Image.new("RGBA", (20, 20), (10, 240, 10, 255))
    sources = [str(path), png_bytes(solid((10, 250, 10))), grey_rgba, upload, Path(path)]
    preds = predictor.predict(sources, top_k=2)
    assert [p.label for p in preds] == ["red", "green", "green", "blue", "red"]
    assert [p.file for p in preds] == [str(path), "upload 2", "image 3", "uploaded.png",
                                       str(path)]
    assert all(len(p.top_k) == 2 and p.ok for p in preds)


def test_batches_give_the_same_answers(runs_root: Path) -> None:
    rng = np.random.default_rng(0)
    photos = [Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8))
              for _ in range(5)]
    one_batch = Predictor.from_run(runs_root / "colour").predict(photos, top_k=3)
    small = Predictor.from_run(runs_root / "colour", batch_size=2).predict(photos, top_k=3)
    for a, b in zip(one_batch, small, strict=True):
        assert [x for x, _ in a.top_k] == [x for x, _ in b.top_k]
        np.testing.assert_allclose([p for _, p in a.top_k], [p for _, p in b.top_k], atol=1e-6)


def _upright_and_rotated() -> tuple[Image.Image, Image.Image, Image.Exif]:
    """A photo that is red on top and blue below, and the same photo stored sideways.

    Cameras store the sensor's pixels and an EXIF orientation tag; 6 means "rotate 90
    degrees clockwise to view", so the stored pixels are the upright photo turned 90
    degrees counter-clockwise.
    """
    upright = Image.new("RGB", (40, 60), (230, 20, 20))
    upright.paste((20, 20, 230), (0, 30, 40, 60))
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    return upright, stored, exif


def test_exif_rotated_photo_predicts_like_upright(runs_root: Path, tmp_path: Path) -> None:
    predictor = Predictor.from_run(runs_root / "upright")
    upright, stored, exif = _upright_and_rotated()
    (reference,) = predictor.predict(upright)
    assert reference.label == "red"
    # Without its orientation tag the sideways photo reads differently: the test can fail.
    (sideways,) = predictor.predict(stored)
    assert sideways.label != "red" or sideways.probability < reference.probability - 0.1

    (from_png,) = predictor.predict(png_bytes(stored, exif=exif.tobytes()))
    np.testing.assert_array_equal(from_png.image, reference.image)
    assert from_png.top_k == reference.top_k

    jpeg = tmp_path / "camera.jpg"
    stored.save(jpeg, "JPEG", quality=95, exif=exif.tobytes())
    (from_jpeg,) = predictor.predict(jpeg)
    assert from_jpeg.label == "red"
    assert np.abs(from_jpeg.image.astype(int) - reference.image.astype(int)).mean() < 8
    np.testing.assert_allclose([p for _, p in from_jpeg.top_k],
                               [p for _, p in reference.top_k], atol=0.05)


def test_colour_modes_are_converted(predictor: Predictor) -> None:
    grey = Image.new("L", (20, 20), 128)
    palette = solid((240, 10, 10)).convert("P")
    transparent = Image.new("RGBA", (20, 20), (0, 0, 255, 0))  # alpha 0: white background
    preds = predictor.predict([grey, palette, transparent])
    assert all(p.ok and p.image.shape == (SIZE, SIZE, 3) for p in preds)
    assert (preds[0].image == 128).all() and preds[1].label == "red"
    assert (preds[2].image == 255).all()


def test_unsure_below_threshold(predictor: Predictor) -> None:
    grey, red = predictor.predict([solid((128, 128, 128)), solid((255, 0, 0))])
    # A grey photo gives 1/3 each: below the run's 0.6 threshold.
    assert grey.probability == pytest.approx(1 / 3, abs=1e-5)
    assert grey.unsure and grey.threshold == 0.6
    assert red.probability > 0.99 and not red.unsure


def test_bad_inputs_get_an_error_not_a_crash(predictor: Predictor, tmp_path: Path) -> None:
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "notes.png"
    text.write_text("this is not a picture")
    sources = [solid((255, 0, 0)), b"definitely not an image", tmp_path / "missing.png", empty,
               text, 12345, solid((0, 0, 255))]
    preds = predictor.predict(sources)
    assert len(preds) == len(sources)
    assert preds[0].label == "red" and preds[-1].label == "blue"
    for pred in preds[1:-1]:
        assert not pred.ok and pred.top_k == [] and pred.image is None and pred.label is None
        assert pred.error.startswith(f"Cannot read {pred.file}: ")
    assert "not an image" in preds[1].error
    assert "not found" in preds[2].error
    assert "empty file" in preds[3].error
    assert "cannot read an image from a int" in preds[5].error
    assert preds[1].to_dict()["error"] == preds[1].error
    with pytest.raises(ConfigError, match="top-k"):
        predictor.predict([solid((1, 2, 3))], top_k=0)


def test_runs_without_a_usable_model(runs_root: Path, tmp_path: Path,
                                     studio_home: Path) -> None:
    unfinished = tmp_path / "unfinished"
    shutil.copytree(runs_root / "colour", unfinished)
    (unfinished / "model.keras").unlink()
    (unfinished / "status.json").write_text(json.dumps({"status": "cancelled"}))
    with pytest.raises(RunNotUsableError, match=r"no trained model \(status: cancelled\)"):
        Predictor.from_run(unfinished)

    damaged = tmp_path / "damaged"
    shutil.copytree(runs_root / "colour", damaged)
    (damaged / "model.keras").write_bytes(b"PK\x03\x04 torn")
    with pytest.raises(RunNotFoundError, match="cannot be loaded"):
        Predictor.from_run(damaged)

    wrong_labels = tmp_path / "wrong-labels"
    shutil.copytree(runs_root / "colour", wrong_labels)
    (wrong_labels / "labels.json").write_text(json.dumps({"labels": ["a", "b"]}))
    with pytest.raises(ConfigError, match="3 classes but 2 labels"):
        Predictor.from_run(wrong_labels)

    (wrong_labels / "labels.json").write_text("{")
    with pytest.raises(RunNotFoundError, match=r"labels\.json"):
        Predictor.from_run(wrong_labels)
    for shape in ({"labels": "abc"}, {"labels": [1, 2, 3]}, ["red", "green", "blue"],
                  {"labels": ["red", "red", "blue"]}):
        (wrong_labels / "labels.json").write_text(json.dumps(shape))
        with pytest.raises(RunNotUsableError, match=r"broken.*labels\.json"):
            Predictor.from_run(wrong_labels)

    with pytest.raises(RunNotFoundError, match="python -m core runs"):
        Predictor.from_run("20990101-000000-nothing-000000", home=studio_home)


def test_from_run_by_id_in_the_home(runs_root: Path, studio_home: Path) -> None:
    run_id = "20260101-000000-colour-abcdef"
    shutil.copytree(runs_root / "colour", studio_home / "runs" / run_id)
    predictor = Predictor.from_run(run_id)  # $TL_STUDIO_HOME from the fixture
    assert predictor.run_dir == studio_home / "runs" / run_id
    assert predictor.predict(solid((0, 255, 0)))[0].label == "green"


def test_one_trace_for_every_batch_size(runs_root: Path) -> None:
    predictor = Predictor.from_run(runs_root / "colour", batch_size=4)
    for n in (1, 3, 2, 7, 1):
        assert len(predictor.predict([solid((9, 9, 9))] * n)) == n
    assert predictor._forward.experimental_get_tracing_count() == 1
