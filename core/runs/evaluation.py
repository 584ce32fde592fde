"""Classifier metrics from probabilities: accuracy, per-class table, confusion, mistakes."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from core.errors import DatasetError

TOP_K = (1, 3, 5)
PER_CLASS_COLUMNS = ["class", "precision", "recall", "f1", "support"]
PREDICTION_COLUMNS = ["path", "true", "predicted", "confidence", "correct", "top3"]

# Defaults of choose_unsure_threshold (see its docstring for the rule).
UNSURE_TARGET_ACCURACY = 0.9
UNSURE_FLOOR = 0.5
UNSURE_CEILING = 0.95


@dataclass
class EvalResult:
    """How a classifier did on a labelled set of images.

    Attributes:
        labels: Class names in label_index order.
        accuracy: Share of images whose most probable class is the true one.
        top_k_accuracy: {k: share of images whose true class is among the k most probable},
            for k in TOP_K capped at the number of classes (so top-1 equals accuracy).
        per_class: One row per class: class, precision, recall, f1, support. A ratio whose
            denominator is zero (a class never predicted, or with no images) is 0, as
            scikit-learn's zero_division=0.
        confusion: int counts [C, C]; row = true class, column = predicted class.
        predictions: One row per image: path, true, predicted (class names), confidence (top
            probability), correct (bool), top3 (list of (label, probability), best first).
    """

    labels: list[str]
    accuracy: float
    top_k_accuracy: dict[int, float]
    per_class: pd.DataFrame
    confusion: np.ndarray
    predictions: pd.DataFrame

    @property
    def num_samples(self) -> int:
        """Number of images evaluated."""
        return int(self.confusion.sum())

    @property
    def confusion_normalized(self) -> np.ndarray:
        """Confusion matrix with each row divided by its total (rows without images stay 0)."""
        counts = self.confusion.astype(np.float64)
        totals = counts.sum(axis=1, keepdims=True)
        return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)

    @property
    def macro_avg(self) -> dict[str, float]:
        """Unweighted mean of precision, recall and F1 over the classes."""
        return {m: float(self.per_class[m].mean()) for m in ("precision", "recall", "f1")}

    @property
    def misclassified(self) -> list[dict[str, Any]]:
        """Wrong predictions, most confident first: path, true, predicted, confidence, top3."""
        wrong = self.predictions[~self.predictions["correct"].astype(bool)]
        wrong = wrong.sort_values("confidence", ascending=False, kind="stable")
        return [
            {"path": row.path, "true": row.true, "predicted": row.predicted,
             "confidence": float(row.confidence), "top3": list(row.top3)}
            for row in wrong.itertuples(index=False)
        ]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; from_dict() rebuilds the result from it."""
        return {
            "labels": list(self.labels),
            "num_samples": self.num_samples,
            "accuracy": float(self.accuracy),
            "top_k_accuracy": {str(k): float(v) for k, v in self.top_k_accuracy.items()},
            "macro_avg": self.macro_avg,
            "per_class": [
                {"class": str(r["class"]), "precision": float(r["precision"]),
                 "recall": float(r["recall"]), "f1": float(r["f1"]), "support": int(r["support"])}
                for r in self.per_class.to_dict("records")
            ],
            "confusion": self.confusion.astype(int).tolist(),
            "confusion_normalized": self.confusion_normalized.tolist(),
            "predictions": [
                {"path": str(r["path"]), "true": r["true"], "predicted": r["predicted"],
                 "confidence": float(r["confidence"]), "correct": bool(r["correct"]),
                 "top3": [[label, float(p)] for label, p in r["top3"]]}
                for r in self.predictions.to_dict("records")
            ],
            "misclassified": [
                {**m, "top3": [[label, p] for label, p in m["top3"]]} for m in self.misclassified
            ],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvalResult:
        """Rebuilds a result from to_dict()'s output (derived keys are recomputed, not read)."""
        labels = [str(label) for label in data["labels"]]
        per_class = pd.DataFrame(list(data["per_class"]), columns=PER_CLASS_COLUMNS)
        per_class = per_class.astype({"class": str, "precision": float, "recall": float,
                                      "f1": float, "support": int})
        rows = [
            {**r, "top3": [(str(label), float(p)) for label, p in r["top3"]]}
            for r in data["predictions"]
        ]
        predictions = pd.DataFrame(rows, columns=PREDICTION_COLUMNS)
        predictions["correct"] = predictions["correct"].astype(bool)
        predictions["confidence"] = predictions["confidence"].astype(float)
        confusion = np.asarray(data["confusion"], dtype=np.int64).reshape(len(labels), len(labels))
        return cls(
            labels=labels,
            accuracy=float(data["accuracy"]),
            top_k_accuracy={int(k): float(v) for k, v in data["top_k_accuracy"].items()},
            per_class=per_class,
            confusion=confusion,
            predictions=predictions,
        )


def _checked(probs: Any, y_true: Any, n_labels: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Validates probabilities [N, C] and true label indices [N]; programming errors raise."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y_true)
    if p.ndim != 2:
        raise ValueError(f"probabilities must be a [N, C] array, got shape {p.shape}")
    if n_labels is not None and p.shape[1] != n_labels:
        raise ValueError(f"probabilities have {p.shape[1]} columns but there are {n_labels} labels")
    if y.ndim != 1 or len(y) != len(p):
        raise ValueError(f"y_true must hold one label index per row ({len(p)}), got {y.shape}")
    if len(p) == 0:
        raise DatasetError(
            "There are no images to evaluate: this split is empty. Add images to each class or "
            "raise this split's share."
        )
    if not np.all(np.isfinite(p)):
        raise ValueError("probabilities contain NaN or infinite values; the model diverged")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.equal(np.mod(y.astype(np.float64), 1), 0)):
            raise ValueError("y_true must hold whole label indices")
        y = y.astype(np.int64)
    if y.min() < 0 or y.max() >= p.shape[1]:
        raise ValueError(f"y_true must be label indices in 0..{p.shape[1] - 1}")
    return p, y.astype(np.int64)


def _ranked(p: np.ndarray) -> np.ndarray:
    """Class indices per row, most probable first; ties go to the lower index, like argmax."""
    return np.argsort(-p, axis=1, kind="stable")


def _safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num = num.astype(np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def informative_top_k(result: EvalResult) -> list[int]:
    """The top-k accuracies worth showing: k > 1 and well below the number of classes.

    Top-5 of 5 classes is always 100%, and top-2 of 3 nearly so: k must be at most half the
    classes for the number to say anything.
    """
    classes = len(result.labels)
    return sorted(k for k in result.top_k_accuracy if 1 < k and 2 * k <= classes)


def evaluate_probabilities(
    probs: Any,
    y_true: Any,
    labels: Sequence[str],
    paths: Sequence[str] | None = None,
) -> EvalResult:
    """Measures a classifier from its predicted probabilities.

    Args:
        probs: Probabilities [N, C], one row per image, columns in label_index order.
        y_true: True label indices [N].
        labels: Class names, C of them, in label_index order.
        paths: The image paths [N], shown with the predictions; "#0", "#1"... when None.

    Returns:
        An EvalResult.

    Raises:
        DatasetError: when there are no images (an empty split).
        ValueError: when shapes or label indices do not fit together (a programming error).
    """
    labels = [str(label) for label in labels]
    p, y = _checked(probs, y_true, len(labels))
    n, c = p.shape
    if paths is None:
        paths = [f"#{i}" for i in range(n)]
    paths = [str(path) for path in paths]
    if len(paths) != n:
        raise ValueError(f"got {len(paths)} paths for {n} rows of probabilities")

    ranked = _ranked(p)
    predicted = ranked[:, 0]
    correct = predicted == y
    top_k = {}
    for k in sorted({min(k, c) for k in TOP_K}):
        top_k[k] = float(np.mean(np.any(ranked[:, :k] == y[:, None], axis=1)))

    confusion = np.bincount(y * c + predicted, minlength=c * c).reshape(c, c)
    tp = np.diag(confusion)
    support = confusion.sum(axis=1)
    precision = _safe_ratio(tp, confusion.sum(axis=0))
    recall = _safe_ratio(tp, support)
    f1 = _safe_ratio(2 * precision * recall, precision + recall)
    per_class = pd.DataFrame({"class": labels, "precision": precision, "recall": recall,
                              "f1": f1, "support": support.astype(int)})

    names = np.asarray(labels, dtype=object)
    top3_idx = ranked[:, :min(3, c)]
    top3 = [
        [(labels[j], float(p[i, j])) for j in top3_idx[i]] for i in range(n)
    ]
    predictions = pd.DataFrame({
        "path": paths,
        "true": names[y],
        "predicted": names[predicted],
        "confidence": p[np.arange(n), predicted],
        "correct": correct,
        "top3": top3,
    })
    return EvalResult(
        labels=labels, accuracy=float(correct.mean()), top_k_accuracy=top_k,
        per_class=per_class, confusion=confusion.astype(np.int64), predictions=predictions,
    )


def choose_unsure_threshold(
    val_probs: Any,
    val_true: Any,
    *,
    target_accuracy: float = UNSURE_TARGET_ACCURACY,
    floor: float = UNSURE_FLOOR,
    ceiling: float = UNSURE_CEILING,
) -> float:
    """Chooses the top probability below which a prediction is flagged "unsure".

    Rule: a prediction is "sure" when its top probability is at least the threshold. Among
    the candidate thresholds (0, i.e. everything sure, and every validation top probability)
    take the lowest one at which the sure validation predictions are right at least
    target_accuracy of the time: flag as few photos as possible while the unflagged ones
    meet the target. The result is clamped to [floor, ceiling]:
    - floor (0.5): a prediction whose best class has less than even odds is always unsure;
      a validation set that meets the target as a whole (a perfect one, say) gives the floor.
    - ceiling (0.95): when no threshold meets the target (a weak model, or a tiny validation
      set whose most confident prediction is wrong), the ceiling is returned, so only the
      surest predictions pass unflagged.
    An empty validation set gives the floor.

    Args:
        val_probs: Validation probabilities [N, C].
        val_true: True validation label indices [N].
        target_accuracy: Accuracy the sure predictions must reach, in (0, 1].
        floor: Smallest threshold returned, in [0, 1].
        ceiling: Largest threshold returned, in [floor, 1].

    Returns:
        The threshold, a float in [floor, ceiling].
    """
    if not 0.0 < target_accuracy <= 1.0:
        raise ValueError(f"target_accuracy must be in (0, 1], got {target_accuracy}")
    if not 0.0 <= floor <= ceiling <= 1.0:
        raise ValueError(f"need 0 <= floor <= ceiling <= 1, got {floor}, {ceiling}")
    p = np.asarray(val_probs, dtype=np.float64)
    if p.ndim == 2 and len(p) == 0:
        return float(floor)
    p, y = _checked(p, val_true, None)
    top = p.max(axis=1)
    correct = (_ranked(p)[:, 0] == y).astype(np.int64)

    order = np.argsort(top, kind="stable")
    top_sorted, correct_sorted = top[order], correct[order]
    # correct_from[i]: right predictions among the sorted ones from position i on.
    correct_from = np.concatenate([np.cumsum(correct_sorted[::-1])[::-1], [0]])
    candidates = np.unique(np.concatenate([[0.0], top_sorted]))
    starts = np.searchsorted(top_sorted, candidates, side="left")
    n_sure = len(top) - starts
    n_right = correct_from[starts]
    accuracy = np.divide(n_right, n_sure, out=np.zeros(len(starts)), where=n_sure > 0)
    meets = (n_sure > 0) & (accuracy >= target_accuracy - 1e-12)
    threshold = float(candidates[np.argmax(meets)]) if meets.any() else float(ceiling)
    threshold = min(max(threshold, floor), ceiling)
    return threshold if math.isfinite(threshold) else float(floor)
