"""Evaluation metrics and the unsure threshold against hand-computed examples."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.errors import DatasetError
from core.runs.evaluation import (
    PER_CLASS_COLUMNS,
    PREDICTION_COLUMNS,
    EvalResult,
    choose_unsure_threshold,
    evaluate_probabilities,
    informative_top_k,
)

LABELS = ["cat", "dog", "fish"]
# Six images; true classes cat, cat, dog, dog, fish, fish.
PROBS = np.array([
    [0.7, 0.2, 0.1],   # cat  -> cat   right
    [0.2, 0.5, 0.3],   # cat  -> dog   wrong (cat 3rd)
    [0.1, 0.8, 0.1],   # dog  -> dog   right
    [0.3, 0.3, 0.4],   # dog  -> fish  wrong (dog tied 2nd, loses the tie to cat)
    [0.05, 0.15, 0.8], # fish -> fish  right
    [0.6, 0.1, 0.3],   # fish -> cat   wrong (fish 2nd)
])
Y = np.array([0, 0, 1, 1, 2, 2])
PATHS = [f"img{i}.png" for i in range(6)]


@pytest.fixture
def result() -> EvalResult:
    return evaluate_probabilities(PROBS, Y, LABELS, PATHS)


def test_accuracy_and_top_k(result: EvalResult) -> None:
    assert result.accuracy == pytest.approx(3 / 6)
    # Top-2 would be: img1 cat is 3rd -> miss; img3 dog ties cat at 0.3, cat (lower index)
    # ranks first, so dog is 3rd -> miss; img5 fish 2nd -> hit. k is capped at C=3.
    assert set(result.top_k_accuracy) == {1, 3}
    assert result.top_k_accuracy[1] == pytest.approx(result.accuracy)
    assert result.top_k_accuracy[3] == pytest.approx(1.0)


def test_top_k_with_two_and_many_classes() -> None:
    two = evaluate_probabilities([[0.9, 0.1], [0.4, 0.6]], [0, 0], ["a", "b"])
    assert two.top_k_accuracy == {1: 0.5, 2: 1.0}
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(8), size=50)
    y = rng.integers(0, 8, 50)
    res = evaluate_probabilities(probs, y, [str(i) for i in range(8)])
    assert set(res.top_k_accuracy) == {1, 3, 5}
    ranks = (probs > probs[np.arange(50), y][:, None]).sum(axis=1)  # no ties in random data
    for k in (1, 3, 5):
        assert res.top_k_accuracy[k] == pytest.approx(np.mean(ranks < k))


def test_top_k_is_shown_only_well_below_the_number_of_classes(result: EvalResult) -> None:
    """Top-3 of 3 classes (and top-5 of 5) is always 100%: not worth a number (issue 27)."""
    assert informative_top_k(result) == []
    rng = np.random.default_rng(0)
    for classes, shown in ((5, []), (6, [3]), (8, [3]), (10, [3, 5])):
        res = evaluate_probabilities(rng.dirichlet(np.ones(classes), size=20),
                                     rng.integers(0, classes, 20),
                                     [str(i) for i in range(classes)])
        assert informative_top_k(res) == shown, classes


def test_confusion_matrix(result: EvalResult) -> None:
    expected = np.array([[1, 1, 0], [0, 1, 1], [1, 0, 1]])
    np.testing.assert_array_equal(result.confusion, expected)
    np.testing.assert_allclose(result.confusion_normalized, expected / 2)
    assert result.num_samples == 6


def test_per_class_table(result: EvalResult) -> None:
    table = result.per_class.set_index("class")
    assert list(result.per_class.columns) == PER_CLASS_COLUMNS
    # cat: tp 1, predicted 2 (img0, img5), support 2
    assert table.loc["cat", "precision"] == pytest.approx(0.5)
    assert table.loc["cat", "recall"] == pytest.approx(0.5)
    assert table.loc["cat", "f1"] == pytest.approx(0.5)
    # dog: tp 1, predicted 2 (img1, img2); fish: tp 1, predicted 2 (img3, img4)
    assert table.loc["dog", "precision"] == pytest.approx(0.5)
    assert table.loc["fish", "recall"] == pytest.approx(0.5)
    assert table["support"].tolist() == [2, 2, 2]


def test_zero_division_gives_zero() -> None:
    # "b" is never predicted and "c" has no images: their undefined ratios are 0.
    probs = [[0.9, 0.05, 0.05], [0.8, 0.1, 0.1], [0.7, 0.2, 0.1]]
    res = evaluate_probabilities(probs, [0, 1, 1], ["a", "b", "c"])
    table = res.per_class.set_index("class")
    assert table.loc["a", "precision"] == pytest.approx(1 / 3)
    assert table.loc["a", "recall"] == pytest.approx(1.0)
    assert table.loc["a", "f1"] == pytest.approx(2 * (1 / 3) / (1 / 3 + 1))
    assert table.loc["b"].tolist()[:3] == [0.0, 0.0, 0.0]
    assert table.loc["c"].tolist() == [0.0, 0.0, 0.0, 0]
    np.testing.assert_allclose(res.confusion_normalized[2], [0, 0, 0])


def test_predictions_and_misclassified(result: EvalResult) -> None:
    preds = result.predictions
    assert list(preds.columns) == PREDICTION_COLUMNS
    assert preds["predicted"].tolist() == ["cat", "dog", "dog", "fish", "fish", "cat"]
    assert preds["correct"].tolist() == [True, False, True, False, True, False]
    assert preds.loc[3, "top3"] == [("fish", 0.4), ("cat", 0.3), ("dog", 0.3)]
    wrong = result.misclassified
    # Most confidently wrong first: img5 (0.6), img1 (0.5), img3 (0.4).
    assert [m["path"] for m in wrong] == ["img5.png", "img1.png", "img3.png"]
    assert wrong[0]["true"] == "fish" and wrong[0]["predicted"] == "cat"
    assert wrong[0]["top3"][:2] == [("cat", 0.6), ("fish", 0.3)]


def test_round_trip_through_json(result: EvalResult) -> None:
    data = json.loads(json.dumps(result.to_dict()))
    back = EvalResult.from_dict(data)
    assert back.labels == result.labels
    assert back.accuracy == result.accuracy
    assert back.top_k_accuracy == result.top_k_accuracy
    np.testing.assert_array_equal(back.confusion, result.confusion)
    assert back.per_class.equals(result.per_class)
    assert back.predictions.drop(columns="top3").equals(result.predictions.drop(columns="top3"))
    assert back.predictions["top3"].tolist() == result.predictions["top3"].tolist()
    assert back.misclassified == result.misclassified
    assert data["misclassified"][0]["path"] == "img5.png"
    assert data["macro_avg"]["f1"] == pytest.approx(0.5)


def test_bad_inputs_raise_clearly() -> None:
    with pytest.raises(DatasetError, match="no images to evaluate"):
        evaluate_probabilities(np.zeros((0, 3)), [], LABELS)
    with pytest.raises(ValueError, match="3 labels"):
        evaluate_probabilities(np.ones((2, 2)) / 2, [0, 1], LABELS)
    with pytest.raises(ValueError, match=r"label indices in 0\.\.2"):
        evaluate_probabilities(PROBS, [0, 0, 1, 1, 2, 3], LABELS)
    with pytest.raises(ValueError, match="NaN"):
        evaluate_probabilities([[np.nan, 1, 0]], [0], LABELS)
    with pytest.raises(ValueError, match="paths"):
        evaluate_probabilities(PROBS, Y, LABELS, PATHS[:2])


# --- unsure threshold ---------------------------------------------------------------------


def _probs_with_top(tops: list[float], right: list[bool]) -> tuple[np.ndarray, np.ndarray]:
    """Two-class probabilities whose top probability is given; right says if class 0 is true."""
    probs = np.array([[t, 1 - t] for t in tops])
    y = np.array([0 if r else 1 for r in right])
    return probs, y


def test_threshold_is_lowest_reaching_target() -> None:
    # Sorted by confidence: 0.99 R, 0.95 R, 0.9 R, 0.85 R, 0.8 R, 0.75 R, 0.7 R, 0.65 R,
    # 0.6 W, 0.55 W. At 0.6 the sure ones are 8/9 = 0.889 right; at 0.65, 8/8.
    tops = [0.99, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55]
    right = [True] * 8 + [False] * 2
    probs, y = _probs_with_top(tops, right)
    assert choose_unsure_threshold(probs, y) == pytest.approx(0.65)
    # An easier target accepts 8/9: the threshold drops to 0.6.
    assert choose_unsure_threshold(probs, y, target_accuracy=0.85) == pytest.approx(0.6)


def test_threshold_accuracy_not_monotonic() -> None:
    # Most confident is wrong, then nine right: from the floor on, 9/10 = 0.9 meets the target.
    tops = [0.99] + [0.9 - 0.03 * i for i in range(9)]
    probs, y = _probs_with_top(tops, [False] + [True] * 9)
    assert choose_unsure_threshold(probs, y) == pytest.approx(0.5)


def test_threshold_perfect_tiny_empty_and_hopeless() -> None:
    probs, y = _probs_with_top([0.99, 0.98], [True, True])
    assert choose_unsure_threshold(probs, y) == 0.5  # perfect: the floor
    probs, y = _probs_with_top([0.7], [False])
    assert choose_unsure_threshold(probs, y) == 0.95  # nothing meets the target: ceiling
    assert choose_unsure_threshold(np.zeros((0, 3)), []) == 0.5
    # Every top probability below the floor (10 uncertain classes): floor when all are right.
    probs = np.full((4, 10), 0.1)
    probs[:, 0] = 0.19
    probs[:, 1] = 0.01
    assert choose_unsure_threshold(probs, [0, 0, 0, 0]) == 0.5  # all right: still the floor
    assert choose_unsure_threshold(probs, [2, 2, 2, 2]) == 0.95


def test_threshold_clamped_to_ceiling() -> None:
    # Only the surest 0.999 prediction is right: the rule would give 0.999, clamped to 0.95.
    probs, y = _probs_with_top([0.999, 0.9, 0.8], [True, False, False])
    value = choose_unsure_threshold(probs, y)
    assert value == 0.95
    assert 0.0 <= value <= 1.0


def test_threshold_rejects_bad_arguments() -> None:
    probs, y = _probs_with_top([0.9], [True])
    with pytest.raises(ValueError):
        choose_unsure_threshold(probs, y, target_accuracy=0)
    with pytest.raises(ValueError):
        choose_unsure_threshold(probs, y, floor=0.9, ceiling=0.5)
