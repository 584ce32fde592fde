"""Dataset audit from cached features: likely label errors, near-duplicates, outliers."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core import schema
from core.audit import near_duplicates as nd
from core.audit import schemas as audit_schemas
from core.config import AuditConfig, SplitConfig, studio_home
from core.errors import Cancelled, DatasetError

log = logging.getLogger(__name__)

PHASE_FEATURES = "extracting features"
PHASE_AUDIT = "auditing"
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


@dataclass(frozen=True)
class AuditEvent:
    """One step of an audit's progress (the fields core.jobs.manager reads from training's events).

    Attributes:
        phase: "extracting features" or "auditing".
        step: Steps done in this phase (images for extraction).
        total_steps: Steps the phase takes.
        message: A sentence for people.
        eta_seconds: Estimated seconds left in the phase, when known.
        time: Unix time the event was made.
    """

    phase: str
    step: int = 0
    total_steps: int = 0
    message: str = ""
    eta_seconds: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    time: float = field(default_factory=time.time)

    @property
    def fraction(self) -> float:
        """Share of this phase done, 0..1."""
        return min(1.0, self.step / self.total_steps) if self.total_steps else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return dataclasses.asdict(self)


@dataclass
class AuditResult:
    """What an audit found, most suspicious first in every list.

    Attributes:
        label_issues: [{"file", "given", "suggested", "score"}]; score = 1 - the out-of-sample
            probability of the given label.
        near_duplicates: [{"files", "similarity", "cross_class", "spans_splits"}]; similarity
            is the highest cosine similarity within the group.
        outliers: [{"file", "label", "score"}]; score = geometric mean of the photo's mean
            distance to its nearest photos of the same class over the class's median such
            distance, and of the same ratio over the whole dataset (2: twice as far as a
            typical photo); listed when the within-class distance's robust z-score reaches
            AuditConfig.outlier_z.
        summary: Counts per kind and per class, the estimated share of wrong labels, and the
            audit's identity (audit_id, dataset_key, backbone, settings).
    """

    label_issues: list[dict[str, Any]]
    near_duplicates: list[dict[str, Any]]
    outliers: list[dict[str, Any]]
    summary: dict[str, Any]

    @property
    def audit_id(self) -> str:
        """Identifier of this audit (recorded by the runs whose split respected it)."""
        return str(self.summary.get("audit_id", ""))

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of `python -m core audit --json`."""
        return {"label_issues": self.label_issues, "near_duplicates": self.near_duplicates,
                "outliers": self.outliers, "summary": self.summary}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AuditResult:
        """The inverse of to_dict()."""
        return cls(list(data.get("label_issues", [])), list(data.get("near_duplicates", [])),
                   list(data.get("outliers", [])), dict(data.get("summary", {})))


# ---------------------------------------------------------------------------------------
# Identity of a dataset: where its audit and the choices made on it are kept


def dataset_root(dataset_or_index: Any) -> Path:
    """The folder file names are relative to: Dataset.root, else the index's common folder."""
    root = getattr(dataset_or_index, "root", None)
    if isinstance(root, (str, Path)):
        return Path(root)
    index = _index_of(dataset_or_index)
    parents = [str(Path(p).parent) for p in index["path"]]
    common = Path(os.path.commonpath(parents)) if parents else Path(".")
    # One class only: the common folder is the class folder itself; its parent is the root.
    return common.parent if index["label"].nunique() == 1 else common


def _index_of(dataset_or_index: Any) -> pd.DataFrame:
    if isinstance(dataset_or_index, pd.DataFrame):
        return dataset_or_index
    index = getattr(dataset_or_index, "index", None)
    if not isinstance(index, pd.DataFrame):
        raise DatasetError("Audit a Dataset from datasets.ingest() or its index DataFrame.")
    return index


def index_of(dataset_or_index: Any) -> pd.DataFrame:
    """The index DataFrame of a Dataset (or the DataFrame itself)."""
    return _index_of(dataset_or_index)


def relative_names(index: pd.DataFrame, root: Path) -> list[str]:
    """File names relative to the dataset root, with "/" separators, as `inspect` prints them."""
    return [Path(p).relative_to(root).as_posix() for p in index["path"]]


def dataset_key(dataset_or_index: Any, root: Path | None = None) -> str:
    """A short fingerprint of the dataset's files (relative name and content of each).

    The same folder or zip loaded again gets the same key, so its audit and choices are found.
    """
    index = _index_of(dataset_or_index)
    root = root or dataset_root(dataset_or_index)
    lines = sorted(f"{name}\t{sha}" for name, sha in
                   zip(relative_names(index, root), index["sha256"]))
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()[:20]


def audit_dir(home: str | Path | None, key: str) -> Path:
    """<home>/audits/<dataset key>: the dataset's audit.json and choices.json."""
    return studio_home(home) / "audits" / key


# ---------------------------------------------------------------------------------------
# Features


def dataset_features(
    index: pd.DataFrame, config: AuditConfig, *, home: Path, extractor: Any = None,
    on_event: Callable[[Any], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[np.ndarray, str]:
    """Features of every photo of the index from the run-independent cache, extracting the rest.

    Returns:
        (float32 [N, D] in index order, the extractor's fingerprint).
    """
    matrix, used = _features(index, config, home=home, extractor=extractor, on_event=on_event,
                             should_stop=should_stop)
    return matrix, used.fingerprint


def _features(
    index: pd.DataFrame, config: AuditConfig, *, home: Path, extractor: Any = None,
    on_event: Callable[[Any], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[np.ndarray, Any]:
    """dataset_features, returning the FeatureExtractor used instead of its fingerprint."""
    # Lazy: TensorFlow only when features are needed.
    from core.features import backbones
    from core.features import extraction as features
    from core.features import weights as base_weights

    if extractor is None:
        spec = backbones.get_spec(config.backbone)
        resolved = base_weights.resolve_weights(spec, config.weights, seed=config.seed)
        extractor = features.make_extractor(spec, resolved, home=home, defer_backend=True,
                                            should_stop=should_stop)
    started = time.monotonic()
    last = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if on_event is None or (done < total and now - last[0] < 0.5):
            return
        last[0] = now
        elapsed = now - started
        eta = elapsed / done * (total - done) if done else None
        on_event(AuditEvent(PHASE_FEATURES, done, total, f"Features of {done}/{total} photos",
                            eta_seconds=eta))

    matrix, stats = features.extract(
        extractor, index["path"].tolist(), index["sha256"].tolist(), home=home,
        on_progress=progress, should_stop=should_stop,
    )
    log.info("Audit features: %d cached, %d computed", stats.hits, stats.misses)
    return matrix, extractor


# ---------------------------------------------------------------------------------------
# The three analyses


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
                C=max(_HEAD_C, _HEAD_C_PHOTOS / len(train_idx)), max_iter=_HEAD_MAX_ITER, tol=_HEAD_TOL))
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


_BLANK_COLOURS = {"black": (0, 0, 0), "grey": (128, 128, 128), "white": (255, 255, 255)}
# A photo whose features are this close to a uniform image's is a blank frame. Measured with
# MobileNetV2: a black JPEG frame scores 1.0 against uniform black, flower photos at most 0.55.
_BLANK_SIMILARITY = 0.9


def blank_features(extractor: Any, home: Path) -> np.ndarray | None:
    """Features of uniform black, grey and white images (files made once under
    <home>/cache/audit; their features cached like any photo's). None when they cannot be
    computed (the audit then finds blank frames only as far as they are unlike their class)."""
    import io

    from PIL import Image

    from core.features import extraction as features
    from core.files import write_bytes_atomic

    folder = home / "cache" / "audit"
    paths, shas = [], []
    for name, colour in _BLANK_COLOURS.items():
        buf = io.BytesIO()
        Image.new("RGB", (64, 64), colour).save(buf, "PNG")
        data = buf.getvalue()
        path = folder / f"blank-{name}.png"
        if not path.is_file() or path.read_bytes() != data:
            folder.mkdir(parents=True, exist_ok=True)
            write_bytes_atomic(path, data)
        paths.append(str(path))
        shas.append(hashlib.sha256(data).hexdigest())
    try:
        matrix, _stats = features.extract(extractor, paths, shas, home=home)
    except Exception as exc:
        log.warning("No blank-frame check: %s", exc)
        return None
    return matrix


def reference_split(index: pd.DataFrame, split_config: SplitConfig) -> pd.Series | None:
    """The split the dataset gets without the audit's groups (None when it cannot be split)."""
    from core.data import splits

    try:
        return splits.split(index, split_config)["split"]
    except DatasetError:
        return None


# ---------------------------------------------------------------------------------------
# The audit


def audit(
    dataset_or_index: Any,
    *,
    config: AuditConfig = AuditConfig(),
    home: str | Path | None = None,
    extractor: Any = None,
    features: np.ndarray | None = None,
    split_config: SplitConfig = SplitConfig(),
    on_event: Callable[[Any], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    save: bool = True,
    check_pixels: bool = True,
) -> AuditResult:
    """Audits a dataset: likely label errors, near-duplicate groups and outliers.

    Args:
        dataset_or_index: A Dataset from datasets.ingest(), or its index DataFrame.
        config: Base, folds, thresholds.
        home: Studio home (feature cache, saved audits).
        extractor: A FeatureExtractor to use instead of building config.backbone's.
        features: Precomputed [N, D] features in index order (no extraction at all).
        split_config: The split whose train/val/test the leaks are checked against.
        on_event: Called with AuditEvents (feature extraction, then the analyses).
        should_stop: Polled between steps; True raises core.errors.Cancelled.
        save: Keep the result under <home>/audits/<dataset key>/audit.json.
        check_pixels: Confirm candidate pairs by their thumbnails (near_duplicates.near_duplicate_pairs);
            False: only pairs above config.near_duplicate_threshold (features without files).

    Returns:
        The AuditResult.

    Raises:
        DatasetError: The dataset has fewer than 2 photos.
        Cancelled: should_stop() returned True.
    """
    started = time.monotonic()
    home_path = studio_home(home)
    index = _index_of(dataset_or_index).reset_index(drop=True)
    if len(index) < 2:
        raise DatasetError("An audit needs at least 2 usable photos; add photos first.")
    root = dataset_root(dataset_or_index)
    stop = should_stop or (lambda: False)
    emit = on_event or (lambda _event: None)
    fingerprint = "given"
    blanks = None
    if features is None:
        features, used = _features(index, config, home=home_path, extractor=extractor,
                                   on_event=emit, should_stop=stop)
        fingerprint = used.fingerprint
        blanks = blank_features(used, home_path)
    x = np.asarray(features, np.float32)
    if len(x) != len(index):
        raise DatasetError(f"Got {len(x)} feature vectors for {len(index)} photos.")
    t_features = time.monotonic() - started
    names = relative_names(index, root)
    labels = sorted(index["label"].unique().tolist())
    y = np.asarray([labels.index(v) for v in index["label"]], np.int64)

    def step(done: int, message: str) -> None:
        if stop():
            raise Cancelled()
        emit(AuditEvent(PHASE_AUDIT, done, 3, message))

    clock = {"features": t_features}
    mark = [time.monotonic()]

    def lap(name: str) -> None:
        now = time.monotonic()
        clock[name] = now - mark[0]
        mark[0] = now

    step(0, "Cross-validating a head for out-of-sample predictions")
    probs = out_of_sample_probabilities(x, y, len(labels), folds=config.folds, seed=config.seed)
    ranked, wrong_share = find_label_issues(probs, y, config.max_label_confidence)
    label_issues = []
    for i in ranked:
        others = probs[i].copy()
        others[y[i]] = -1.0
        label_issues.append({"file": names[i], "given": labels[y[i]],
                             "suggested": labels[int(others.argmax())],
                             "score": round(float(1.0 - probs[i, y[i]]), 4)})

    lap("label_issues")
    step(1, "Searching near-duplicates")
    unit = nd.normalize(x)
    pi, pj, ps = nd.near_duplicate_pairs(unit, index["path"].tolist(), config,
                                      check_pixels=check_pixels)
    reference = reference_split(index, split_config)
    near = _near_duplicate_groups(nd.groups_from_pairs(len(x), pi, pj), pi, pj, ps, names,
                                  index["label"].tolist(), reference)

    lap("near_duplicates")
    step(2, "Measuring how unlike its class each photo is")
    ratio, z = class_outlier_scores(unit, y, config.outlier_neighbours)
    if blanks is not None and len(blanks):
        # Blank frames first: their features are those of a uniform image.
        blank = (unit @ nd.normalize(blanks).T).max(axis=1) >= _BLANK_SIMILARITY
        ratio[blank] = 2.0 * max(float(ratio.max()), 1.0)
        z[blank] = np.inf
    flagged = np.flatnonzero(z >= config.outlier_z)
    flagged = flagged[np.argsort(-ratio[flagged], kind="stable")]
    outliers = [{"file": names[i], "label": labels[y[i]], "score": round(float(ratio[i]), 3)}
                for i in flagged]

    lap("outliers")
    summary = _summary(names, index, labels, label_issues, near, outliers, probs, y,
                       wrong_share)
    summary.update({
        "audit_id": f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}",
        "created": time.time(), "dataset_key": dataset_key(index, root), "root": str(root),
        "backbone": config.backbone, "feature_fingerprint": fingerprint,
        "settings": dataclasses.asdict(config),
        "split_checked": dataclasses.asdict(split_config),
        "seconds": {**{k: round(v, 3) for k, v in clock.items()},
                    "total": round(time.monotonic() - started, 3)},
    })
    result = AuditResult(label_issues, near, outliers, summary)
    emit(AuditEvent(PHASE_AUDIT, 3, 3, "Audit done", metrics={
        "label_issues": len(label_issues), "near_duplicate_groups": len(near),
        "outliers": len(outliers)}))
    if save:
        save_audit(result, home_path)
    return result


def _near_duplicate_groups(groups: list[np.ndarray], pi: np.ndarray, pj: np.ndarray,
                           ps: np.ndarray, names: list[str], labels: list[str],
                           reference: pd.Series | None) -> list[dict[str, Any]]:
    """Groups as the JSON lists them, the most similar first."""
    best = np.zeros(len(names), np.float32)  # highest similarity of each photo to another
    np.maximum.at(best, pi, ps)
    np.maximum.at(best, pj, ps)
    out = []
    for members in groups:
        files = [names[i] for i in members]
        order = np.argsort(files)
        splits = {reference.iloc[i] for i in members} if reference is not None else set()
        out.append({
            "files": [files[k] for k in order],
            "similarity": round(float(best[members].max()), 4),
            "cross_class": len({labels[i] for i in members}) > 1,
            "spans_splits": len(splits) > 1,
        })
    out.sort(key=lambda g: (-g["similarity"], g["files"][0]))
    return out


def _summary(names: list[str], index: pd.DataFrame, labels: list[str], label_issues: list[dict],
             near: list[dict], outliers: list[dict], probs: np.ndarray, y: np.ndarray,
             wrong_share: float) -> dict[str, Any]:
    per_class: dict[str, dict[str, int]] = {
        name: {"images": int((index["label"] == name).sum()), "label_issues": 0,
               "near_duplicates": 0, "outliers": 0} for name in labels}
    for item in label_issues:
        per_class[item["given"]]["label_issues"] += 1
    for item in outliers:
        per_class[item["label"]]["outliers"] += 1
    label_of = dict(zip(names, index["label"]))
    for group in near:
        for name in group["files"]:
            if name in label_of:
                per_class[label_of[name]]["near_duplicates"] += 1
    return {
        "images": int(len(index)),
        "classes": len(labels),
        "label_issues": len(label_issues),
        "near_duplicate_groups": len(near),
        "near_duplicate_photos": sum(len(g["files"]) for g in near),
        "cross_class_groups": sum(g["cross_class"] for g in near),
        "leaking_groups": sum(g["spans_splits"] for g in near),
        "outliers": len(outliers),
        "estimated_wrong_label_share": round(wrong_share, 4),
        "cross_validated_accuracy": round(float((probs.argmax(axis=1) == y).mean()), 4),
        "per_class": per_class,
    }


# ---------------------------------------------------------------------------------------
# Kept with the dataset


def save_audit(result: AuditResult, home: str | Path | None = None) -> Path:
    """Writes the audit atomically to <home>/audits/<dataset key>/audit.json."""
    from core.files import write_json_atomic

    path = audit_dir(home, result.summary["dataset_key"]) / "audit.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, result.to_dict())
    return path


def load_audit(dataset_or_index: Any, home: str | Path | None = None) -> AuditResult | None:
    """The latest audit saved for this dataset (same files, same contents), or None."""
    from core.files import read_json

    path = audit_dir(home, dataset_key(dataset_or_index)) / "audit.json"
    if not path.is_file():
        return None
    try:
        data = read_json(path)
    except OSError as exc:
        log.warning("Ignoring the unreadable audit %s: %s", path, exc)
        return None
    except ValueError as exc:
        schema.set_aside(path, f"not JSON ({exc})")
        return None
    problem = schema.valid(data, audit_schemas.AUDIT, "audit.json")
    if problem is not None:  # a damaged audit must not break every later training
        schema.set_aside(path, problem)
        return None
    return AuditResult.from_dict(data)


def set_aside_files(dataset_or_index: Any, home: str | Path | None = None) -> list[str]:
    """Names of this dataset's audit files that were damaged and set aside (newest last)."""
    folder = audit_dir(home, dataset_key(dataset_or_index))
    try:
        return sorted(p.name for p in folder.iterdir() if ".damaged-" in p.name)
    except OSError:
        return []


def describe(result: AuditResult, limit: int = 20) -> str:
    """The audit as readable text (the command line without --json)."""
    s = result.summary
    lines = [f"Audit of {s.get('images', 0)} photos in {s.get('classes', 0)} classes "
             f"({s.get('backbone', '')} features): about "
             f"{s.get('estimated_wrong_label_share', 0):.1%} of labels look wrong."]
    lines.append(f"\nLikely label errors ({len(result.label_issues)}):")
    lines += [f"  {i['file']}: labelled {i['given']}, looks like {i['suggested']} "
              f"(score {i['score']:.2f})" for i in result.label_issues[:limit]]
    lines.append(f"\nNear-duplicate groups ({len(result.near_duplicates)}):")
    for g in result.near_duplicates[:limit]:
        tags = [t for t, on in (("label conflict", g["cross_class"]),
                                ("leaks between splits", g["spans_splits"])) if on]
        extra = f" [{', '.join(tags)}]" if tags else ""
        lines.append(f"  {g['similarity']:.3f}{extra}: {', '.join(g['files'])}")
    lines.append(f"\nOutliers ({len(result.outliers)}):")
    lines += [f"  {o['file']} ({o['label']}, score {o['score']:.1f})"
              for o in result.outliers[:limit]]
    return "\n".join(lines)
