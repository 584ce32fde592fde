"""How familiar a photo looks to a run: the reference vectors and thresholds, fitted once.

The decision rule (the same in core, in the exported predict.py and in the browser's live
view; keep them identical):

    f = the pooled feature vector the head reads; f = f / |f|
    s = R . f            R: the reference rows (float16 on disk, already L2-normalised)
    score = the k-th largest value of s (k = DEFAULT_K = 3)
    nearest = reference_labels[argmax(s)]
    unknown = score < class_thresholds[nearest]

The score is the cosine similarity to the k-th nearest reference vector (deep nearest
neighbours, Sun et al., ICML 2022): photos of the known classes lie close to some training
photo, photos of other things do not. The reference is a class-stratified subsample of the
run's training and validation vectors (at most MAX_PER_CLASS per class, L2-normalised,
float16), so memory stays bounded however large the dataset.

Calibration (fit; only the threshold numbers depend on it, never the rule): every training
and validation photo is scored as a new photo would be, against the final reference minus
its own group (itself and its copies; leave one out, so the reference it meets has the size a
new photo meets, not the 4/5 of k-fold calibration, whose smaller reference scores lower and
biased the thresholds low). Each class's threshold is the conformal lower bound of the scores
of the photos nearest to that class: the r-th smallest, r = floor(QUANTILE * (n + 1)), so a
new exchangeable photo of that class falls below it with probability at most QUANTILE (5%)
(a plain interpolated quantile overshoots on small classes: 10% false alarms at 15 photos a
class); then shrunk toward the same bound over all classes with SHRINK_PHOTOS pseudo-photos
(threshold_c = (n_c * t_c + SHRINK_PHOTOS * t_all) / (n_c + SHRINK_PHOTOS)), so a class with
few photos leans on the pooled line. Some classes are tighter clusters than others, so a photo
nearest to a daisy must be about as close as daisies are to each other. Fitted at training
time (core.training.pipeline); core.results.familiarity holds it for a run (older runs on
first use, or their stored 5-fold thresholds, which the same rule reads) and the answer's words.

Measured against other calibrations, k, centred features, local-density (LOF-like) scores,
Mahalanobis, maximum softmax probability and energy scores in bench/familiarity_benchmark.py
(docs/benchmarks.md, "None of these").
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core import files
from core.errors import AppError

log = logging.getLogger(__name__)

METHOD = "knn_cosine"
VERSION = 1
DEFAULT_K = 3
QUANTILE = 0.05
MAX_PER_CLASS = 300
# Pseudo-photos of the pooled threshold mixed into each class's (small classes lean on it).
SHRINK_PHOTOS = 20
# Scores are computed in float32 on chunks of photos this big (bounded temporary memory).
_CHUNK = 256


class FamiliarityError(AppError):
    """A run's familiarity cannot be computed or read."""


@dataclass
class Familiarity:
    """The reference vectors and threshold of one run.

    Attributes:
        reference: float16 [M, D] L2-normalised feature vectors of known-class photos.
        reference_labels: int16 [M] class index of each reference vector.
        k: The score is the similarity to the k-th nearest reference vector.
        class_thresholds: float [C]: a score below the threshold of the photo's nearest
            reference class is "none of these".
        threshold: The same quantile over all classes together (for reports).
        quantile: Share of held-out known-class photos below the threshold by design.
        calibration: How the thresholds were chosen (procedure, photos, their scores'
            quantiles); a record of VERSION 1 made by 5-fold calibration says "folds".
        method: METHOD.
        test: The run's test photos scored: {"photos", "called_unknown", "share",
            "files"} (the files called unknown), or None when not measured.
    """

    reference: np.ndarray = field(repr=False)
    reference_labels: np.ndarray = field(repr=False)
    k: int
    class_thresholds: np.ndarray
    threshold: float
    quantile: float = QUANTILE
    calibration: dict[str, Any] = field(default_factory=dict)
    method: str = METHOD
    test: dict[str, Any] | None = None

    def scores(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(familiarity of each feature vector [N, D], higher is more familiar (-1..1);
        the threshold that applies to each: its nearest reference class's)."""
        x = np.asarray(features, np.float32)
        if x.ndim == 1:
            x = x[None]
        if x.shape[1] != self.reference.shape[1]:
            raise FamiliarityError(
                f"Feature vectors of length {x.shape[1]} do not match this run's "
                f"{self.reference.shape[1]}; the familiarity was made for another base.")
        if getattr(self, "_reference32", None) is None:
            # Converting float16 costs more than the product itself: once per process.
            self._reference32 = np.asarray(self.reference, np.float32)
        scores, nearest = knn_scores(self._reference32, x, self.k)
        return scores, self.class_thresholds[self.reference_labels[nearest]]

    @property
    def nbytes(self) -> int:
        """Size of the stored reference vectors (float16) and their labels; scoring keeps a
        float32 copy of the vectors in memory (twice the first term)."""
        return int(self.reference.nbytes + self.reference_labels.nbytes)

    def facts(self) -> dict[str, Any]:
        """Plain JSON facts (no vectors): method, k, threshold, quantile, sizes, calibration."""
        return {"method": self.method, "version": VERSION, "k": self.k,
                "class_thresholds": [float(t) for t in self.class_thresholds],
                "threshold": self.threshold, "quantile": self.quantile,
                "reference_vectors": int(len(self.reference)),
                "feature_dim": int(self.reference.shape[1]), "reference_bytes": self.nbytes,
                "calibration": self.calibration, "test": self.test}

    def measure_test(self, features: np.ndarray, files: Sequence[str]) -> dict[str, Any]:
        """Scores the run's test photos of known classes; keeps and returns self.test."""
        scores, limits = (self.scores(features) if len(files)
                          else (np.zeros(0, np.float32), np.zeros(0, np.float32)))
        called = [str(f) for f, s, t in zip(files, scores, limits) if s < t]
        self.test = {"photos": int(len(files)), "called_unknown": len(called),
                     "share": (len(called) / len(files)) if len(files) else None,
                     "files": called}
        return self.test

    def save(self, path: str | Path) -> Path:
        """Writes the reference and facts to one .npz file, atomically."""
        import io

        buffer = io.BytesIO()
        np.savez(buffer, reference=self.reference, reference_labels=self.reference_labels,
                 facts=np.array(json.dumps(self.facts())))
        path = Path(path)
        files.write_bytes_atomic(path, buffer.getvalue())
        return path

    @classmethod
    def load(cls, path: str | Path) -> Familiarity:
        """Reads save()'s file.

        Raises:
            FileNotFoundError: No such file.
            FamiliarityError: The file is damaged or of another version.
        """
        try:
            with np.load(Path(path), allow_pickle=False) as data:
                reference = np.asarray(data["reference"], np.float16)
                labels = np.asarray(data["reference_labels"], np.int16)
                facts = json.loads(str(data["facts"]))
            if facts.get("method") != METHOD or facts.get("version") != VERSION:
                raise ValueError(f"method {facts.get('method')!r} version "
                                 f"{facts.get('version')!r}")
            if reference.ndim != 2 or len(reference) != len(labels) or not len(reference):
                raise ValueError(f"reference shaped {reference.shape}")
            threshold = float(facts["threshold"])
            k = int(facts["k"])
            limits = np.asarray(facts["class_thresholds"], np.float32)
            if not np.isfinite(threshold) or k < 1 or not np.all(np.isfinite(limits)) \
                    or len(limits) <= int(labels.max()) or labels.min() < 0:
                raise ValueError("thresholds, labels or k out of range")
        except FileNotFoundError:
            raise
        except Exception as exc:  # a cut-off zip, a hand edit, another version
            raise FamiliarityError(f"{Path(path).name} is damaged ({type(exc).__name__}: "
                                   f"{exc}); it will be computed again.") from exc
        test = facts.get("test")
        return cls(reference, labels, k=k, class_thresholds=limits, threshold=threshold,
                   quantile=float(facts.get("quantile", QUANTILE)),
                   calibration=dict(facts.get("calibration") or {}),
                   test=test if isinstance(test, dict) else None)


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero)."""
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def knn_scores(reference: np.ndarray, features: np.ndarray, k: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarity of each row of features to its k-th most similar reference row.

    Args:
        reference: [M, D], already L2-normalised (float16 or float32).
        features: [N, D], any length.
        k: 1 for the nearest; capped at M.

    Returns:
        (similarities float32 [N], the row of reference nearest to each [N]).
    """
    ref = np.asarray(reference, np.float32)
    x = normalise(features)
    k = max(1, min(int(k), len(ref)))
    out = np.empty(len(x), np.float32)
    nearest = np.empty(len(x), np.int64)
    for start in range(0, len(x), _CHUNK):
        sims = x[start:start + _CHUNK] @ ref.T
        # The k-th largest without sorting every row: partition at M - k.
        out[start:start + _CHUNK] = np.partition(sims, len(ref) - k, axis=1)[:, len(ref) - k]
        nearest[start:start + _CHUNK] = sims.argmax(axis=1)
    return out, nearest


def stratified_subsample(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Sorted row indices: at most per_class rows of each class, drawn at random (seeded)."""
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        keep.append(rows if len(rows) <= per_class
                    else rng.choice(rows, per_class, replace=False))
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.int64)


def conformal_bound(scores: np.ndarray, quantile: float) -> float:
    """The r-th smallest score, r = floor(quantile * (n + 1)) (at least 1): a new score
    exchangeable with these falls below it with probability at most r / (n + 1)."""
    ordered = np.sort(np.asarray(scores, np.float64))
    rank = max(1, int(np.floor(quantile * (len(ordered) + 1))))
    return float(ordered[min(rank, len(ordered)) - 1])


def leave_one_out_scores(x: np.ndarray, reference: np.ndarray, x_groups: np.ndarray,
                         reference_groups: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """knn_scores of each row of x (normalised) against the reference rows of other groups.

    Returns:
        (similarities float32 [N], the reference row nearest to each [N]).
    """
    ref = np.asarray(reference, np.float32)
    k = max(1, min(int(k), len(ref)))
    out = np.empty(len(x), np.float32)
    nearest = np.empty(len(x), np.int64)
    for start in range(0, len(x), _CHUNK):
        rows = slice(start, start + _CHUNK)
        sims = x[rows] @ ref.T
        sims[x_groups[rows, None] == reference_groups[None, :]] = -np.inf
        out[rows] = np.partition(sims, len(ref) - k, axis=1)[:, len(ref) - k]
        nearest[rows] = sims.argmax(axis=1)
    return out, nearest


def fit(features: np.ndarray, labels: Sequence[int] | np.ndarray, *, k: int = DEFAULT_K,
        quantile: float = QUANTILE, per_class: int = MAX_PER_CLASS, seed: int = 0,
        groups: np.ndarray | None = None, shrink_photos: int = SHRINK_PHOTOS) -> Familiarity:
    """The reference subsample and the thresholds, calibrated leave-one-out (module docstring).

    Every photo is scored against the final reference without the rows of its own group
    (groups, e.g. an audit's near-duplicates, so a copy never vouches for itself); each class's
    threshold is the conformal bound of the scores of the photos nearest to it, shrunk toward
    the pooled bound.

    Args:
        features: float [N, D], the vectors the head reads, of photos of known classes.
        labels: Class index of each row.
        k: Neighbour whose similarity is the score.
        quantile: Share of new known photos to call unknown at most (the false-alarm target).
        per_class: Reference vectors kept per class at most.
        seed: Seed of the subsample.
        groups: Group of each row (default: each row its own).
        shrink_photos: Pseudo-photos of the pooled threshold in each class's threshold.

    Raises:
        FamiliarityError: Fewer than 2 photos, or mismatched lengths.
    """
    x = normalise(features)
    y = np.asarray(labels, np.int64)
    if len(x) != len(y) or len(x) < 2:
        raise FamiliarityError(f"Familiarity needs 2 or more photos with a label each; got "
                               f"{len(x)} vectors and {len(y)} labels.")
    group_ids = (np.arange(len(x)) if groups is None
                 else np.unique(np.asarray(groups).astype(str), return_inverse=True)[1])
    keep = stratified_subsample(y, per_class, seed)
    reference = x[keep].astype(np.float16)
    oof, nearest = leave_one_out_scores(x, reference, group_ids, group_ids[keep], k)
    scored = np.isfinite(oof)  # a photo whose group is the whole reference has no score
    if not np.any(scored):
        raise FamiliarityError("Familiarity needs photos of at least two different groups.")
    oof, oof_class = oof[scored], y[keep][nearest[scored]]
    threshold = conformal_bound(oof, quantile)
    limits = []
    for c in range(int(y.max()) + 1):
        mine = oof[oof_class == c]
        # A class no photo came nearest to keeps the overall threshold.
        own = conformal_bound(mine, quantile) if len(mine) else threshold
        limits.append((len(mine) * own + shrink_photos * threshold)
                      / (len(mine) + shrink_photos))
    calibration = {"procedure": "leave-one-out against the final reference, conformal bound "
                                "per class shrunk toward the pooled bound",
                   "photos": int(len(x)), "scored_photos": int(scored.sum()),
                   "shrink_photos": int(shrink_photos), "per_class_cap": int(per_class),
                   "seed": int(seed),
                   "class_photos": [int(np.sum(oof_class == c)) for c in range(len(limits))],
                   "out_of_fold_quantiles": {str(q): round(float(np.quantile(oof, q)), 5)
                                             for q in (0.01, 0.05, 0.1, 0.5)}}
    return Familiarity(reference, y[keep].astype(np.int16), k=int(k),
                       class_thresholds=np.asarray(limits, np.float32), threshold=threshold,
                       quantile=float(quantile), calibration=calibration)


def bounded_rows(rows: Any, seed: int, per_class: int = 2 * MAX_PER_CLASS) -> Any:
    """At most per_class split rows of each class (label_index), for features that cost a
    pass through a model."""
    keep = stratified_subsample(rows["label_index"].to_numpy(), per_class, seed)
    return rows.iloc[keep].reset_index(drop=True)


def fit_rows(rows: Any, features: np.ndarray, *, seed: int) -> Familiarity:
    """fit() on split rows (label_index; their group, else sha256, keeps copies in one fold)."""
    from core.data import splits

    column = splits.GROUP_COLUMN if splits.GROUP_COLUMN in rows.columns else "sha256"
    return fit(features, rows["label_index"].to_numpy(), seed=seed,
               groups=rows[column].astype(str).to_numpy())
