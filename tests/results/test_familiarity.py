"""'None of these': the familiarity score, its thresholds stored with a run, and the answers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from app_helpers import png_bytes, train_small_run
from conftest import require_asset

from core.results import familiarity
from core.results.familiarity import Familiarity, FamiliarityError
from core.results.prediction import Predictor
from core.runs.store import RunStore
from core.training.result import TrainResult

LABELS = ["cats", "dogs", "fish"]


def clusters(n_per_class: int, seed: int, dim: int = 32, classes: int = 3,
             spread: float = 0.35) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative vectors (like pooled ReLU features) around one centre per class."""
    rng = np.random.default_rng(seed)
    centres = np.abs(np.random.default_rng(99).normal(size=(classes, dim)))
    y = np.repeat(np.arange(classes), n_per_class)
    x = np.abs(centres[y] + spread * rng.normal(size=(len(y), dim)))
    return x.astype(np.float32), y


def test_other_things_score_below_the_thresholds_and_known_ones_mostly_above() -> None:
    x, y = clusters(200, seed=0)
    fam = familiarity.fit(x, y, seed=0)
    known, _ = clusters(200, seed=1)  # new photos of the same classes
    other = np.abs(np.random.default_rng(2).normal(size=(100, x.shape[1]))).astype(np.float32)
    s_known, t_known = fam.scores(known)
    s_other, t_other = fam.scores(other)
    called_known = float(np.mean(s_known < t_known))
    assert 0.0 < called_known <= 0.12  # the 5% target, give or take a finite sample
    assert np.mean(s_other < t_other) > 0.9
    assert fam.class_thresholds.shape == (3,) and fam.k == familiarity.DEFAULT_K
    assert np.all(fam.class_thresholds <= 1.0)


def test_the_reference_is_a_capped_class_stratified_float16_subsample() -> None:
    x, y = clusters(300, seed=0, dim=64)
    fam = familiarity.fit(x, y, seed=0, per_class=40)
    assert fam.reference.dtype == np.float16 and fam.reference.shape == (120, 64)
    assert np.bincount(fam.reference_labels).tolist() == [40, 40, 40]
    assert fam.nbytes == 120 * 64 * 2 + 120 * 2
    norms = np.linalg.norm(fam.reference.astype(np.float32), axis=1)
    assert np.allclose(norms, 1.0, atol=1e-2)
    assert fam.calibration["photos"] == 900  # every photo calibrates, not only the kept


def test_the_conformal_bound_is_the_rank_floor_of_quantile_times_n_plus_one() -> None:
    scores = np.arange(1.0, 40.0)[::-1]  # 39 scores, given in any order
    assert familiarity.conformal_bound(scores, 0.05) == 2.0  # floor(0.05 * 40) = 2nd smallest
    assert familiarity.conformal_bound(scores[:19], 0.05) == 21.0  # rank 1 of 21..39
    assert familiarity.conformal_bound(scores[:5], 0.05) == 35.0  # too few: the smallest


def test_calibration_scores_each_photo_against_the_final_reference_without_its_group() -> None:
    x, _ = clusters(60, seed=0)
    x = familiarity.normalise(x)
    groups = np.arange(len(x))
    groups[1] = groups[0]  # photos 0 and 1 are copies: neither vouches for the other
    x[1] = x[0]
    ref = x.astype(np.float16)
    scored, nearest = familiarity.leave_one_out_scores(x, ref, groups, groups, 1)
    assert scored[0] < 0.999 and nearest[0] not in (0, 1)
    # A photo that is not in the reference meets all of it, as a new photo does.
    alone, _ = familiarity.leave_one_out_scores(x[:5], ref[5:], groups[:5], groups[5:], 3)
    direct, _ = familiarity.knn_scores(ref[5:], x[:5], 3)
    assert np.allclose(alone, direct)


def test_few_photos_a_class_keep_false_alarms_near_the_target() -> None:
    """Fitted on 15 photos a class, new photos of those classes fall below the thresholds
    about 5% of the time, not twice that (an interpolated quantile of 15 scores overshoots)."""
    shares = []
    for seed in range(30):
        x, y = clusters(15, seed=seed, spread=0.6)
        fam = familiarity.fit(x, y, seed=seed)
        new, _ = clusters(200, seed=1000 + seed, spread=0.6)
        s, t = fam.scores(new)
        shares.append(np.mean(s < t))
    assert 0.01 < np.mean(shares) <= 0.065, np.mean(shares)


def test_a_small_class_threshold_leans_on_the_pooled_one() -> None:
    x, y = clusters(200, seed=0)
    small = np.concatenate([np.flatnonzero(y != 2), np.flatnonzero(y == 2)[:10]])
    fam = familiarity.fit(x[small], y[small], seed=0)
    alone = familiarity.fit(x[small], y[small], seed=0, shrink_photos=0)
    n = fam.calibration["class_photos"][2]
    assert n >= 8
    expected = (n * alone.class_thresholds[2] + familiarity.SHRINK_PHOTOS * alone.threshold) \
        / (n + familiarity.SHRINK_PHOTOS)
    assert fam.class_thresholds[2] == pytest.approx(expected, abs=1e-6)
    assert fam.threshold == alone.threshold


def test_a_record_of_the_first_five_fold_calibration_still_loads_and_answers(
        tmp_path: Path) -> None:
    """Runs stored before the leave-one-out calibration keep their thresholds (same rule)."""
    x, y = clusters(30, seed=0)
    ref = familiarity.normalise(x).astype(np.float16)
    facts = {"method": "knn_cosine", "version": 1, "k": 3,
             "class_thresholds": [0.9, 0.8, 0.7], "threshold": 0.8, "quantile": 0.05,
             "reference_vectors": len(ref), "feature_dim": ref.shape[1],
             "calibration": {"photos": 90, "folds": 5, "per_class_cap": 300, "seed": 0},
             "test": None}
    path = tmp_path / "familiarity.npz"
    np.savez(path, reference=ref, reference_labels=y.astype(np.int16),
             facts=np.array(json.dumps(facts)))
    old = Familiarity.load(path)
    assert old.class_thresholds.tolist() == pytest.approx([0.9, 0.8, 0.7])
    _, limits = old.scores(x[:3])
    assert limits.tolist() == pytest.approx([0.9] * 3) and old.calibration["folds"] == 5


def test_saved_and_loaded_it_answers_the_same_and_damage_is_reported(tmp_path: Path) -> None:
    x, y = clusters(50, seed=0)
    fam = familiarity.fit(x, y, seed=0)
    fam.measure_test(x[:10], [f"p{i}.jpg" for i in range(10)])
    path = fam.save(tmp_path / "familiarity.npz")
    back = Familiarity.load(path)
    probe, _ = clusters(5, seed=3)
    for a, b in zip(fam.scores(probe), back.scores(probe)):
        assert np.allclose(a, b)
    assert back.test == fam.test and back.threshold == fam.threshold
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(FamiliarityError, match="damaged"):
        Familiarity.load(path)
    with pytest.raises(FileNotFoundError):
        Familiarity.load(tmp_path / "missing.npz")


def test_mismatched_features_are_refused_with_the_reason() -> None:
    x, y = clusters(20, seed=0)
    fam = familiarity.fit(x, y, seed=0)
    with pytest.raises(FamiliarityError, match="another base"):
        fam.scores(np.ones((1, 7), np.float32))


def test_the_words_name_the_class_count_and_the_closest_class() -> None:
    text = familiarity.none_of_these(3, "roses")
    assert "none of the 3 classes this model knows" in text and "closest is roses" in text


# ----------------------------------------------------------------------------- with a run


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    return train_small_run(tmp_path_factory, LABELS)


@pytest.fixture
def run_copy(trained: TrainResult, tmp_path: Path) -> Path:
    """A copy of the trained run in a home that shares its feature cache."""
    home = trained.run_dir.parent.parent
    target = home / "runs" / f"{trained.run_id}-{tmp_path.name[-12:]}"
    shutil.copytree(trained.run_dir, target)
    yield target
    shutil.rmtree(target, ignore_errors=True)


def test_a_trained_run_stores_its_familiarity_and_a_restart_reads_it(
        trained: TrainResult) -> None:
    path = trained.run_dir / "familiarity.npz"
    stored = Familiarity.load(path)
    metrics = json.loads((trained.run_dir / "metrics.json").read_text())
    facts = metrics["familiarity"]
    assert facts["class_thresholds"] == [float(t) for t in stored.class_thresholds]
    assert facts["test"]["photos"] == len(trained.evaluation.predictions)
    assert 0 <= facts["test"]["called_unknown"] <= facts["test"]["photos"]
    stamp = path.stat().st_mtime_ns
    predictor = Predictor.from_run(trained.run_dir)  # as a restarted server loads it
    assert path.stat().st_mtime_ns == stamp  # read, not computed again
    assert np.allclose(predictor.familiarity.class_thresholds, stored.class_thresholds)
    (prediction,) = predictor.predict(png_bytes(0, 3))
    assert isinstance(prediction.unknown, bool)
    assert isinstance(prediction.familiarity, float)
    assert prediction.familiarity_threshold in [pytest.approx(float(t)) for t in
                                                stored.class_thresholds]
    assert prediction.unknown == (prediction.familiarity < prediction.familiarity_threshold)
    row = prediction.to_dict()
    assert row["unknown"] is prediction.unknown and row["familiarity"] == prediction.familiarity


def test_the_features_come_from_the_same_pass_as_the_probabilities(
        trained: TrainResult) -> None:
    predictor = Predictor.from_run(trained.run_dir)
    batch = np.stack([np.full((224, 224, 3), v, np.uint8) for v in (20, 120, 220)])
    feats, probs = predictor.features_and_probabilities(batch)
    assert feats.shape == (3, predictor.familiarity.reference.shape[1])
    whole = np.asarray(predictor.model(batch.astype(np.float32), training=False))
    assert np.allclose(probs, whole, atol=1e-5)


def test_an_older_run_gets_its_familiarity_on_first_use(trained: TrainResult,
                                                        run_copy: Path) -> None:
    original = Familiarity.load(run_copy / "familiarity.npz")
    (run_copy / "familiarity.npz").unlink()  # as a run trained before this feature
    predictor = Predictor.from_run(run_copy)
    assert predictor.familiarity is not None, predictor.familiarity_problem
    written = Familiarity.load(run_copy / "familiarity.npz")  # stored for the next time
    # From the same cached features of the same photos: the same thresholds.
    assert np.allclose(written.class_thresholds, original.class_thresholds, atol=1e-3)
    assert written.test["photos"] == original.test["photos"]


def test_a_damaged_familiarity_file_is_computed_again(run_copy: Path) -> None:
    (run_copy / "familiarity.npz").write_bytes(b"not a zip")
    predictor = Predictor.from_run(run_copy)
    assert predictor.familiarity is not None
    assert Familiarity.load(run_copy / "familiarity.npz").k == familiarity.DEFAULT_K


def test_a_run_whose_photos_are_gone_predicts_without_it_and_says_why(
        run_copy: Path, tmp_path: Path) -> None:
    (run_copy / "familiarity.npz").unlink()
    metrics = json.loads((run_copy / "metrics.json").read_text())
    metrics["fine_tuned"] = True  # no cached features apply: the photos must be read
    (run_copy / "metrics.json").write_text(json.dumps(metrics))
    split = (run_copy / "split.csv").read_text()
    lines = split.splitlines()
    root = Path(RunStore(run_copy.parent.parent).load(run_copy.name).split["path"][0]).parent
    (run_copy / "split.csv").write_text("\n".join(lines).replace(str(root.parent),
                                                                  str(tmp_path / "gone")))
    predictor = Predictor.from_run(run_copy)
    assert predictor.familiarity is None
    assert "cannot be read any more" in predictor.familiarity_problem
    (prediction,) = predictor.predict(png_bytes(0, 3))
    assert prediction.ok and prediction.unknown is None
    assert not (run_copy / "familiarity.npz").exists()


def test_predict_json_carries_unknown_and_the_score(trained: TrainResult, tmp_path: Path
                                                    ) -> None:
    from test_cli import run_cli

    photo = tmp_path / "photo.png"
    photo.write_bytes(png_bytes(1, 4))
    done = run_cli("predict", str(trained.run_dir), str(photo), "--json",
                   home=trained.run_dir.parent.parent)
    (row,) = json.loads(done.stdout)
    assert isinstance(row["unknown"], bool)
    assert isinstance(row["familiarity"], float)
    assert row["unknown"] == (row["familiarity"] < row["familiarity_threshold"])


# ----------------------------------------------------------------------------- real photos


@pytest.mark.real
def test_photos_of_an_unseen_class_are_called_unknown_more_often_than_its_own(
        tmp_path: Path, keras_home_with_mobilenet: Path) -> None:
    """A run on daisy/roses/tulips of flower_photos_tiny (real MobileNetV2 weights)."""
    from app_helpers import train_run

    from core.config import TrainConfig

    tiny = require_asset("datasets/flower_photos_tiny")
    data = tmp_path / "three"
    for name in ("daisy", "roses", "tulips"):
        shutil.copytree(tiny / name, data / name)
    home = tmp_path / "home"
    result = train_run(data, home, TrainConfig(head="manual", epochs=30), name="three")
    predictor = Predictor.from_run(result.run_dir)
    own = predictor.familiarity.test
    unseen = sorted((tiny / "dandelion").glob("*.jpg"))[:40] + \
        sorted((tiny / "sunflowers").glob("*.jpg"))[:40]
    called = [p.unknown for p in predictor.predict(unseen)]
    unseen_share = float(np.mean(called))
    assert unseen_share > own["share"] + 0.05, (unseen_share, own)
    assert own["share"] <= 0.15, own
