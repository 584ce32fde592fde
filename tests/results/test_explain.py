"""Grad-CAM explanations: correct maps, pointing at the right place, the CLI, the pages."""

from __future__ import annotations

import io
import re
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from app_helpers import FAST, page, png_bytes, texts, train_run
from conftest import MOBILENET_V2_NO_TOP, make_class_folders, require_asset
from PIL import Image

from core.__main__ import main
from core.config import TrainConfig
from core.errors import ConfigError
from core.features import backbones
from core.features import weights as base_weights
from core.results import explain, overlays, report
from core.results.explain import ExplainError
from core.results.prediction import Predictor
from core.runs.store import RunStore
from core.training import fine_tuning
from core.training import head as head_training
from core.training.result import TrainResult

LABELS = ["cats", "dogs", "fish"]
SIZE = 224

# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    """A run trained through core.training.pipeline (random-weights MobileNetV2, 2 epochs)."""
    root = make_class_folders(tmp_path_factory.mktemp("data") / "pets",
                              {name: 12 for name in LABELS})
    return train_run(root, tmp_path_factory.mktemp("home"))


@pytest.fixture(scope="module")
def explainer(trained: TrainResult) -> explain.Explainer:
    run = RunStore(trained.run_dir.parent.parent).load(trained.run_id)
    return explain.load_explainer(run)


def photo(seed: int, size: int = SIZE) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


# ----------------------------------------------------------------------------- the maps


def test_a_studio_model_gives_a_normalised_map_at_its_input_size(
    trained: TrainResult, explainer: explain.Explainer
) -> None:
    predictor = Predictor.from_run(trained.run_dir, warm_up=False)
    image = photo(1)
    heat = explainer.explain(image)
    probabilities = predictor.probabilities(image[None])[0]
    assert heat.label == LABELS[int(np.argmax(probabilities))]  # None: the model's answer
    assert heat.probability == pytest.approx(probabilities[heat.index], abs=1e-4)
    assert heat.values.shape == (SIZE, SIZE) and heat.values.dtype == np.float32
    assert np.isfinite(heat.values).all()
    assert heat.values.min() >= 0.0
    assert heat.empty or heat.values.max() == pytest.approx(1.0, abs=1e-6)
    assert heat.score == explain.SCORE_LOGIT  # the studio head ends in a softmax Dense
    assert heat.grid == (7, 7) and heat.layer == "out_relu"
    assert (heat.image == image).all()


def test_the_map_is_grad_cam_of_the_logit_computed_by_hand(
    trained: TrainResult, explainer: explain.Explainer
) -> None:
    """With a linear head, Grad-CAM is ReLU(maps . W[:, c]): computed here without tapes."""
    model = Predictor.from_run(trained.run_dir, warm_up=False).model
    wrapper = next(layer for layer in model.layers if layer.name.endswith("_features"))
    app = backbones.nested_base(wrapper)
    head = next(layer for layer in model.layers if layer.name == "head")
    kernel = np.asarray(head.get_layer("probabilities").kernel)
    maps_model = keras.Model(app.input, app.get_layer("out_relu").output)
    image = photo(2)
    maps = np.asarray(maps_model(image[None].astype(np.float32) / 127.5 - 1.0))[0]
    for target in range(len(LABELS)):
        cam = np.maximum(maps @ kernel[:, target], 0.0)
        expected = tf.image.resize(cam[None, ..., None], [SIZE, SIZE])[0, ..., 0].numpy()
        expected = expected / expected.max() if expected.max() > 0 else expected
        got = explainer.explain(image, LABELS[target]).values
        assert np.abs(got - expected).max() < 1e-3, target


def test_another_class_can_be_explained_and_an_unknown_one_is_named(
    explainer: explain.Explainer,
) -> None:
    image = photo(3)
    maps = {label: explainer.explain(image, label) for label in LABELS}
    assert [maps[label].label for label in LABELS] == LABELS
    assert sum(maps[label].probability for label in LABELS) == pytest.approx(1.0, abs=1e-4)
    maps_by_class = [maps[label].values for label in LABELS]
    assert explainer.explain(image, 2).label == "fish"
    with pytest.raises(ExplainError, match="no class 'rose'.*cats, dogs, fish"):
        explainer.explain(image, "rose")
    with pytest.raises(ExplainError, match="224 x 224"):
        explainer.explain(photo(3, size=64))
    with pytest.raises(ExplainError, match="between 0 and 2"):
        explainer.heatmaps(np.stack([image, image]), [0, 3])
    maps, probabilities, _, classes = explainer.heatmaps(np.stack([image, image]), [-1, 1])
    assert classes.tolist() == [int(np.argmax(probabilities[0])), 1]
    assert np.abs(maps[1] - maps_by_class[1]).max() < 1e-5  # a batch explains as one by one


def test_the_explainer_is_built_once_per_model(trained: TrainResult) -> None:
    predictor = Predictor.from_run(trained.run_dir, warm_up=False)
    first = explain.explainer_for(predictor.model, predictor.labels)
    assert explain.explainer_for(predictor.model, predictor.labels) is first
    explain.clear_explainer_cache()
    assert explain.explainer_for(predictor.model, predictor.labels) is not first


def test_mixed_precision_model_gives_a_float32_map() -> None:
    spec = backbones.get_spec("mobilenet_v2")
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        base = backbones.build_base(spec, base_weights.resolve_weights(spec, None, seed=1))
        head = head_training.build_head(base.output_shape[-1], 2, FAST)
        model = fine_tuning.assemble_model(base, head, spec.input_size)
        assert backbones.nested_base(base).layers[-2].compute_dtype == "float16"
        heat = explain.Explainer(model, ["a", "b"]).explain(photo(4), "b")
    finally:
        keras.mixed_precision.set_global_policy(previous)
    assert heat.values.dtype == np.float32 and np.isfinite(heat.values).all()
    assert 0.0 <= heat.values.min() and heat.values.max() <= 1.0


def test_a_fine_tuned_model_with_its_augmentation_layers_explains_the_same() -> None:
    from core.features import augmentation

    spec = backbones.get_spec("mobilenet_v2")
    base = backbones.build_base(spec, base_weights.resolve_weights(spec, None, seed=2))
    fine_tuning.unfreeze_top(base, 10)
    head = head_training.build_head(base.output_shape[-1], 3, FAST)
    plain = fine_tuning.assemble_model(base, head, spec.input_size)
    augmented = fine_tuning.assemble_model(base, head, spec.input_size, augmentation.make_augmenter(0))
    image = photo(6)
    expected = explain.Explainer(plain, LABELS).explain(image, "dogs")
    got = explain.Explainer(augmented, LABELS).explain(image, "dogs")
    assert np.abs(got.values - expected.values).max() < 1e-5  # augmentation is off at inference
    assert got.probability == pytest.approx(expected.probability, abs=1e-6)


def test_a_head_without_a_softmax_dense_falls_back_to_the_probability() -> None:
    spec = backbones.get_spec("mobilenet_v2")
    base = backbones.build_base(spec, base_weights.resolve_weights(spec, None, seed=3))
    features = keras.Input((base.output_shape[-1],))
    for activation, score in (("sigmoid", explain.SCORE_PROBABILITY),
                              ("linear", explain.SCORE_PROBABILITY)):
        head = keras.Model(features, keras.layers.Dense(2, activation=activation)(features))
        model = fine_tuning.assemble_model(base, head, spec.input_size)
        explainer = explain.Explainer(model, ["a", "b"])
        assert explainer.score == score
        heat = explainer.explain(photo(7), "a")
        assert np.isfinite(heat.values).all() and 0.0 <= heat.values.min()
    logits = keras.layers.Dense(2)(features)
    head = keras.Model(features, keras.layers.Softmax()(logits))
    model = fine_tuning.assemble_model(base, head, spec.input_size)
    assert explain.Explainer(model, ["a", "b"]).score == explain.SCORE_LOGIT


class _TinyHubModule(tf.Module):
    """A TF Hub-style feature vector: images in [0, 1] -> [B, 3] channel means."""

    @tf.function(input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.float32)])
    def __call__(self, images: tf.Tensor) -> tf.Tensor:
        return tf.reduce_mean(images, axis=[1, 2])


def test_a_tf_hub_base_cannot_be_explained_and_says_why(tmp_path: Path) -> None:
    folder = tmp_path / "hub"
    tf.saved_model.save(_TinyHubModule(), str(folder))
    spec = backbones.get_spec("tfhub", hub_handle=str(folder), hub_input_size=32)
    base = backbones.build_base(spec, base_weights.resolve_weights(spec, None))
    model = fine_tuning.assemble_model(base, head_training.build_head(3, 2, FAST), 32)
    with pytest.raises(ExplainError, match="TF Hub base is one opaque layer"):
        explain.Explainer(model, ["a", "b"])


def test_a_model_without_a_nested_base_is_refused() -> None:
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
    with pytest.raises(ExplainError, match="no nested pretrained base"):
        explain.Explainer(model, ["a", "b"])


# ----------------------------------------------------------------------------- pictures


def test_overlay_blends_with_the_opacity_and_resizes_the_map() -> None:
    image = np.full((30, 40, 3), 200, np.uint8)
    values = np.zeros((7, 7), np.float32)
    values[0, 0] = 1.0  # hot top-left corner
    assert (overlays.overlay(image, values, 0.0) == image).all()
    full = overlays.overlay(image, values, 1.0)
    assert full.shape == (30, 40, 3)
    assert tuple(full[0, 0]) == tuple(overlays.COLORMAP[255])  # dark red: most evidence
    assert tuple(full[-1, -1]) == tuple(overlays.COLORMAP[0])  # dark blue: none
    with pytest.raises(ConfigError, match="between 0 and 1"):
        overlays.overlay(image, values, 1.5)


def test_the_original_photo_is_upright_and_the_map_follows_it(tmp_path: Path) -> None:
    # Stored 60 wide x 40 high with EXIF orientation 6: upright it is 40 wide x 60 high.
    stored = Image.new("RGB", (60, 40), (90, 90, 90))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    stored.save(path, "JPEG", exif=exif)
    original = overlays.original_photo(path)
    assert original.shape == (60, 40, 3)
    values = np.zeros((SIZE, SIZE), np.float32)
    values[: SIZE // 4, : SIZE // 4] = 1.0  # the model saw the upright photo: top-left
    stretched = overlays.resize_map(values, 40, 60)
    assert stretched.shape == (60, 40)
    assert stretched[2, 2] > 0.9 and stretched[-3, -3] < 0.1
    assert overlays.original_photo(path, max_side=30).shape == (30, 20, 3)


# ----------------------------------------------------------------------------- pointing right

PATCH = 48
PATCH_COLOURS = {"red": (230, 30, 30), "green": (30, 200, 40), "blue": (30, 60, 235)}


def patch_photo(colour: tuple[int, int, int], rng: np.random.Generator
                ) -> tuple[np.ndarray, tuple[int, int]]:
    """A grey textured photo (random stripes and noise) with one coloured square somewhere."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    texture = np.zeros((SIZE, SIZE), np.float32)
    for _ in range(4):
        frequency, angle = rng.uniform(0.03, 0.2), rng.uniform(0, np.pi)
        texture += np.sin(frequency * (np.cos(angle) * xx + np.sin(angle) * yy)
                          + rng.uniform(0, 6))
    pixels = (128 + 25 * texture)[..., None].repeat(3, axis=2)
    pixels += rng.normal(0, 15, (SIZE, SIZE, 3))
    top, left = (int(v) for v in rng.integers(0, SIZE - PATCH, 2))
    pixels[top:top + PATCH, left:left + PATCH] = (np.array(colour, np.float32)
                                                   + rng.normal(0, 10, (PATCH, PATCH, 3)))
    return np.clip(pixels, 0, 255).astype(np.uint8), (top, left)


def points_at_patch(values: np.ndarray, corner: tuple[int, int]) -> bool:
    """Whether the map's strongest region (>= 75% of its peak) overlaps the patch.

    The region must also be small (under a quarter of the photo), so a uniform map, which
    "overlaps" everything, counts as a miss, and so does an empty one.
    """
    peak = float(values.max())
    if peak <= 0:
        return False
    region = values >= 0.75 * peak
    top, left = corner
    return bool(region[top:top + PATCH, left:left + PATCH].any()) and region.mean() < 0.25


def inside_outside_ratio(values: np.ndarray, corner: tuple[int, int]) -> float:
    """Mean of the map on the patch over its mean elsewhere (below 1: inverted)."""
    mask = np.zeros(values.shape, bool)
    top, left = corner
    mask[top:top + PATCH, left:left + PATCH] = True
    return float(values[mask].mean() / max(float(values[~mask].mean()), 1e-6))


def test_the_localisation_measure_fails_uniform_inverted_and_empty_maps() -> None:
    rng = np.random.default_rng(5)
    _, corner = patch_photo(PATCH_COLOURS["red"], rng)
    right = np.zeros((SIZE, SIZE), np.float32)
    right[corner[0]:corner[0] + PATCH, corner[1]:corner[1] + PATCH] = 1.0
    assert points_at_patch(right, corner) and inside_outside_ratio(right, corner) > 10
    assert not points_at_patch(np.ones((SIZE, SIZE), np.float32), corner)  # uniform
    assert not points_at_patch(1.0 - right, corner)  # inverted
    assert inside_outside_ratio(1.0 - right, corner) < 0.1
    assert not points_at_patch(np.zeros((SIZE, SIZE), np.float32), corner)  # empty


@pytest.fixture(scope="module")
def patch_run(tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    """A studio run (ImageNet MobileNetV2, frozen, linear head) on 30 patch photos a class."""
    weights = require_asset(f"weights/{MOBILENET_V2_NO_TOP}")
    keras_home = tmp_path_factory.mktemp("keras")
    (keras_home / "models").mkdir()
    (keras_home / "models" / MOBILENET_V2_NO_TOP).symlink_to(weights)
    root = tmp_path_factory.mktemp("patches") / "patches"
    rng = np.random.default_rng(0)
    for name, colour in PATCH_COLOURS.items():
        (root / name).mkdir(parents=True)
        for i in range(30):
            Image.fromarray(patch_photo(colour, rng)[0]).save(root / name / f"{i:02d}.png")
    config = TrainConfig(backbone="mobilenet_v2", weights="imagenet", epochs=30, batch_size=16,
                         early_stopping_patience=0)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KERAS_HOME", str(keras_home))
        patch.setenv("TL_STUDIO_OFFLINE", "1")
        return train_run(root, tmp_path_factory.mktemp("home"), config)


@pytest.mark.real
def test_heatmaps_point_at_the_patch_that_decides_the_class(patch_run: TrainResult) -> None:
    run = RunStore(patch_run.run_dir.parent.parent).load(patch_run.run_id)
    explainer = explain.load_explainer(run)
    rng = np.random.default_rng(1)  # new photos, never trained on
    hits, ratios = [], []
    for name, colour in PATCH_COLOURS.items():
        for _ in range(10):
            image, corner = patch_photo(colour, rng)
            heat = explainer.explain(image, name)
            hits.append(points_at_patch(heat.values, corner))
            ratios.append(inside_outside_ratio(heat.values, corner))
    share = float(np.mean(hits))
    print(f"heatmap's strongest region on the patch: {share:.0%} of {len(hits)} photos; "
          f"median inside/outside ratio {np.median(ratios):.1f}")
    assert share >= 0.7, (share, ratios)
    assert np.median(ratios) > 2.0, ratios  # not inverted: the patch is hotter than the rest


@pytest.mark.real
def test_a_real_base_gives_a_finite_normalised_map_the_size_of_the_photo(
    patch_run: TrainResult, tmp_path: Path
) -> None:
    source = require_asset("images/imagenet_sanity/parrot.jpg")
    run = RunStore(patch_run.run_dir.parent.parent).load(patch_run.run_id)
    heat, original = explain.explain_file(explain.load_explainer(run), source)
    with Image.open(source) as stored:
        width, height = stored.size
    assert original.shape[:2] == (height, width)  # no EXIF rotation in this photo
    stretched = overlays.resize_map(heat.values, width, height)
    assert stretched.shape == (height, width)
    for values in (heat.values, stretched):
        assert np.isfinite(values).all() and values.min() >= 0.0 and values.max() <= 1.0
    assert heat.values.max() == pytest.approx(1.0, abs=1e-6)
    assert explain.on_original(heat, original).shape == original.shape


# ----------------------------------------------------------------------------- CLI and report


def test_cli_writes_the_heatmap_png_and_explains_bad_input(
    trained: TrainResult, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = str(trained.run_dir.parent.parent)
    source = tmp_path / "dog.png"
    source.write_bytes(png_bytes(1, 77, size=90))
    out = tmp_path / "why.png"
    code = main(["--home", home, "explain", trained.run_id, str(source), "--class", "dogs",
                 "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    assert "where the model sees dogs" in capsys.readouterr().out
    with Image.open(out) as written:
        assert written.format == "PNG" and written.size == (90, 90)

    code = main(["--home", home, "explain", trained.run_id, str(source), "--class", "rose",
                 "--out", str(out)])
    assert code == 2 and "Its classes are: cats, dogs, fish" in capsys.readouterr().err
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a photo")
    code = main(["--home", home, "explain", trained.run_id, str(broken), "--out", str(out)])
    assert code == 2 and "Cannot read the photo" in capsys.readouterr().err
    code = main(["--home", home, "explain", "no-such-run", str(source), "--out", str(out)])
    assert code == 2 and "No run 'no-such-run'" in capsys.readouterr().err


def test_cli_refuses_a_run_without_a_model(trained: TrainResult, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    copy = home / "runs" / trained.run_id
    shutil.copytree(trained.run_dir, copy)
    (copy / "model.keras").unlink()
    source = tmp_path / "cat.png"
    source.write_bytes(png_bytes(0, 5))
    code = main(["--home", str(home), "explain", trained.run_id, str(source),
                 "--out", str(tmp_path / "x.png")])
    assert code == 2 and "has no trained model" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_the_report_embeds_the_worst_mistakes_heatmaps(trained: TrainResult) -> None:
    run = RunStore(trained.run_dir.parent.parent).load(trained.run_id)
    result = run.evaluation
    wrong = int((~result.predictions["correct"]).sum())
    page_html = report.report_html(run, result)
    images = re.findall(r"<img src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page_html)
    assert len(images) == 2 * min(report.WORST_MISTAKES_SHOWN, wrong)
    assert ("Where the model looked in its worst mistakes" in page_html) == (wrong > 0)
    assert "src='http" not in page_html and 'src="http' not in page_html  # one file
    if images:
        import base64

        with Image.open(io.BytesIO(base64.b64decode(images[0]))) as shown:
            assert shown.format == "PNG"
    assert "<img" not in report.report_html(run, result, heatmaps=0)


# ----------------------------------------------------------------------------- the pages


def test_the_why_expander_shows_the_heatmap_and_another_class(
    trained: TrainResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ui import explain as ui_explain
    from ui import state

    monkeypatch.setenv("TL_STUDIO_HOME", str(trained.run_dir.parent.parent))
    at = page("4_Predict").run()
    assert not at.exception, at.exception
    at.file_uploader(key=state.PREDICT_UPLOAD).upload("dog.png", png_bytes(1, 500, size=80),
                                                      "image/png")
    at.run()
    assert not at.exception, at.exception
    why = [e for e in at.expander if e.label == "Why? Where the model looked"]
    assert len(why) == 1
    key = f"{ui_explain.WHY_CLASS}-0-dog.png"
    chooser = at.selectbox(key=key)
    answer = next(m.value for m in at.markdown if str(m.value).startswith("### "))
    assert chooser.options == LABELS
    assert answer.startswith(f"### {chooser.value} · ")  # the model's answer first
    captions = [c for image in why[0].get("image") for c in image.captions]
    assert len(captions) == 2 and captions[1] == "On your photo, upright"
    assert captions[0].startswith(f"As the model saw it · {chooser.value}")
    other = next(label for label in LABELS if label != chooser.value)
    chooser.set_value(other).run()
    assert not at.exception, at.exception
    why = [e for e in at.expander if e.label == "Why? Where the model looked"][0]
    assert why.get("image")[0].captions[0].startswith(f"As the model saw it · {other}")
    at.slider(key=f"{ui_explain.WHY_OPACITY}-0-dog.png").set_value(0.8).run()
    assert not at.exception, at.exception

    # With several photos a Why? starts closed and computes nothing until it is opened.
    def originals() -> int:
        return sum(c == "On your photo, upright" for i in at.get("image") for c in i.captions)

    at = page("4_Predict").run()
    uploader = at.file_uploader(key=state.PREDICT_UPLOAD)
    uploader.upload("dog.png", png_bytes(1, 500, size=80), "image/png")
    uploader.upload("cat.png", png_bytes(0, 501, size=80), "image/png")
    at.run()
    assert not at.exception, at.exception
    assert texts(at.subheader) == ["dog.png", "cat.png"]
    assert originals() == 0
    at.session_state[f"{ui_explain.WHY_OPEN}-1-cat.png"] = True
    at.run()
    assert not at.exception, at.exception
    assert originals() == 1
    assert at.selectbox(key=f"{ui_explain.WHY_CLASS}-1-cat.png").options == LABELS


def test_mistake_tiles_get_a_why_button(trained: TrainResult,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from ui import explain as ui_explain

    monkeypatch.setenv("TL_STUDIO_HOME", str(trained.run_dir.parent.parent))
    at = page("3_Evaluate").run()
    assert not at.exception, at.exception
    run = RunStore(trained.run_dir.parent.parent).load(trained.run_id)
    wrong = int((~run.evaluation.predictions["correct"]).sum())
    buttons = [b for b in at.button if str(b.key).startswith(ui_explain.WHY_BUTTON)]
    assert len({b.key for b in buttons}) == len(buttons)  # unique keys
    assert (len(buttons) > 0) == (wrong > 0)
    if buttons:
        buttons[0].click().run()
        assert not at.exception, at.exception
        captions = [c for image in at.get("image") for c in image.captions]
        assert any(c.startswith("What it answered · ") for c in captions), captions
        assert any(c.startswith("The true class · ") for c in captions), captions
