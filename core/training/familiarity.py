"""How familiar a photo looks to a run: the reference vectors and thresholds, fitted once.

The score is the cosine similarity of a photo's pooled feature vector to its k-th nearest
reference vector (deep nearest neighbours, Sun et al., ICML 2022): photos of the known
classes lie close to some training photo, photos of other things do not. The reference is a
class-stratified subsample of the run's training and validation vectors (at most
MAX_PER_CLASS per class, L2-normalised, float16), so memory stays bounded however large the
dataset. Each class has its own threshold, the QUANTILE (5%) of the out-of-fold scores of
the photos whose nearest reference photo is of that class (each fold's photos scored against
the reference without that fold, as a new photo of a known class would be): some classes are
tighter clusters than others, so a photo nearest to a daisy must be as close as daisies are
to each other. A photo scoring below the threshold of its nearest class is answered "none of
these", with the closest class named second. Fitted at training time (core.training.pipeline);
core.results.familiarity holds it for a run (older runs on first use) and the answer's words.

Measured against Mahalanobis, maximum softmax probability and energy scores in
bench/familiarity_benchmark.py (docs/benchmarks.md, "None of these").
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
FOLDS = 5
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
        calibration: How the threshold was chosen (photos, folds, their scores' quantiles).
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


def fit(features: np.ndarray, labels: Sequence[int] | np.ndarray, *, k: int = DEFAULT_K,
        quantile: float = QUANTILE, per_class: int = MAX_PER_CLASS, folds: int = FOLDS,
        seed: int = 0, groups: np.ndarray | None = None) -> Familiarity:
    """The reference subsample and the threshold calibrated out of fold.

    Every photo is scored against the reference vectors outside its own fold (groups, e.g.
    an audit's near-duplicates, stay in one fold, so a copy never vouches for itself); the
    threshold is the quantile of those scores. Scored against 1 - 1/folds of the reference,
    a known photo looks a little less familiar than it will against all of it, so the share
    of new known-class photos called unknown comes out at or a little under the quantile.

    Args:
        features: float [N, D], the vectors the head reads, of photos of known classes.
        labels: Class index of each row.
        k: Neighbour whose similarity is the score.
        quantile: Share of held-out known photos to call unknown (the false-alarm target).
        per_class: Reference vectors kept per class at most.
        folds: Folds of the calibration (fewer when a class has fewer photos).
        seed: Seed of the subsample and the folds.
        groups: Group of each row, kept in one fold.

    Raises:
        FamiliarityError: Fewer than 2 photos, or mismatched lengths.
    """
    from core.data import splits

    x = normalise(features)
    y = np.asarray(labels, np.int64)
    if len(x) != len(y) or len(x) < 2:
        raise FamiliarityError(f"Familiarity needs 2 or more photos with a label each; got "
                               f"{len(x)} vectors and {len(y)} labels.")
    folds = max(2, min(folds, splits.fold_count(y, groups, folds)))
    fold_of = splits.stratified_folds(y, folds, seed, groups)
    keep = stratified_subsample(y, per_class, seed)
    kept = np.zeros(len(x), bool)
    kept[keep] = True
    oof = np.empty(len(x), np.float32)
    oof_class = np.empty(len(x), np.int64)
    for f in range(folds):
        inside = fold_of == f
        rows = np.flatnonzero(kept & ~inside)
        if not len(rows):  # a fold holding every kept row: score against all of them
            rows = np.flatnonzero(kept)
        oof[inside], nearest = knn_scores(x[rows].astype(np.float16), x[inside], k)
        oof_class[inside] = y[rows[nearest]]
    threshold = float(np.quantile(oof, quantile))
    # A class no held-out photo came nearest to keeps the overall threshold.
    limits = np.array([np.quantile(oof[oof_class == c], quantile) if np.any(oof_class == c)
                       else threshold for c in range(int(y.max()) + 1)], np.float32)
    calibration = {"photos": int(len(x)), "folds": int(folds), "per_class_cap": int(per_class),
                   "seed": int(seed),
                   "out_of_fold_quantiles": {str(q): round(float(np.quantile(oof, q)), 5)
                                             for q in (0.01, 0.05, 0.1, 0.5)}}
    return Familiarity(x[keep].astype(np.float16), y[keep].astype(np.int16), k=int(k),
                       class_thresholds=limits, threshold=threshold, quantile=float(quantile), calibration=calibration)


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
