"""The audit's analyses on feature vectors: out-of-sample class probabilities, likely wrong
labels (confident learning), photos unlike their class."""

from __future__ import annotations

import warnings

import numpy as np

from core.audit import near_duplicates as nd

# The cross-validated logistic-regression head on L2-normalised, standardised features:
# strongly regularised (1,280 features, a few hundred photos), loose tolerance. On
# flower_photos_300 with 30 planted label flips this ranked them best of the settings tried
# (average precision 0.83, accuracy 0.87), in a quarter of the time of C=0.05 with a tight
# tolerance.
# Smaller datasets get proportionally weaker regularisation (C at least _HEAD_C_PHOTOS / N):
# the penalty weighs against the sum of the photos' losses, and with a few dozen photos
# C = 0.01 leaves every probability near uniform, so no label could be called wrong.
_HEAD_C = 0.01
_HEAD_C_PHOTOS = 5.0
_HEAD_MAX_ITER = 100
_HEAD_TOL = 1e-3


def out_of_sample_probabilities(x: np.ndarray, y: np.ndarray, n_classes: int, *,
                                folds: int = 5, seed: int = 0) -> np.ndarray:
    """Class probabilities of every photo from a head that never saw it (stratified k-fold).

    The head is a multinomial logistic regression on L2-normalised, then standardised
    features.

    Returns:
        float32 [N, n_classes]; rows sum to 1.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import Normalizer, StandardScaler

    counts = np.bincount(y, minlength=n_classes)
    n_splits = int(max(2, min(folds, counts.max())))
    probs = np.full((len(y), n_classes), 1.0 / n_classes, np.float32)
    if n_classes < 2:
        return np.ones((len(y), 1), np.float32)
    splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a class smaller than the folds: still usable
        for train_idx, test_idx in splitter.split(x, y):
            if len(np.unique(y[train_idx])) < 2:
                continue
            head = make_pipeline(Normalizer(), StandardScaler(), LogisticRegression(
                C=max(_HEAD_C, _HEAD_C_PHOTOS / len(train_idx)), max_iter=_HEAD_MAX_ITER,
                tol=_HEAD_TOL))
            head.fit(x[train_idx], y[train_idx])
            fold = np.zeros((len(test_idx), n_classes), np.float32)
            fold[:, head.classes_] = head.predict_proba(x[test_idx])
            probs[test_idx] = fold
    return probs


def find_label_issues(probs: np.ndarray, y: np.ndarray, max_confidence: float = 1.0
                      ) -> tuple[np.ndarray, float]:
    """Confident learning (cleanlab): photos whose given label is probably wrong.

    Args:
        probs: Out-of-sample probabilities [N, C].
        y: Given labels [N].
        max_confidence: Of cleanlab's issues, only those whose given label has a lower
            out-of-sample probability are kept (AuditConfig.max_label_confidence).

    Returns:
        (indices, most suspicious first; estimated share of wrong labels in the dataset).
    """
    from cleanlab.count import num_label_issues
    from cleanlab.filter import find_label_issues as cleanlab_find

    if probs.shape[1] < 2 or len(y) < 2:
        return np.empty(0, np.int64), 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ranked = cleanlab_find(y, probs, return_indices_ranked_by="self_confidence",
                               n_jobs=1)
        estimate = num_label_issues(y, probs) / len(y)
    ranked = np.asarray(ranked, np.int64)
    ranked = ranked[probs[ranked, y[ranked]] < max_confidence]
    return ranked, float(estimate)


def class_outlier_scores(unit: np.ndarray, y: np.ndarray, k: int
                         ) -> tuple[np.ndarray, np.ndarray]:
    """How unlike its class each photo is, from its mean cosine distance to its k nearest
    photos of the same class.

    Returns:
        (geometric mean of that distance over the class's median one and of the same ratio
        over the whole dataset: comparable across classes, 0 for classes of fewer than 3
        photos; robust z-score of the distance within the class, saying whether it is
        unusual there).
    """
    ratio = np.zeros(len(y), np.float64)
    z = np.zeros(len(y), np.float64)
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        if len(members) < 3:
            continue
        distance = nd.knn_distance(unit[members], min(k, len(members) - 1))
        ratio[members] = distance / max(float(np.median(distance)), 1e-6)
        z[members] = nd.robust_z(distance)
    # Unlike its class and unlike every photo: the geometric mean with the same ratio over
    # the whole dataset ranks a scanned document above odd photos of another class.
    overall = nd.knn_distance(unit, min(k, len(y) - 1))
    ratio = np.sqrt(ratio * overall / max(float(np.median(overall)), 1e-6))
    return ratio, z
