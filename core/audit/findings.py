"""Dataset audit from cached features: likely label errors, near-duplicates, outliers."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core import schema
from core.audit import near_duplicates as nd
from core.audit import schemas as audit_schemas
from core.audit.analyses import class_outlier_scores, find_label_issues, out_of_sample_probabilities
from core.config import AuditConfig, SplitConfig, studio_home
from core.errors import Cancelled, DatasetError
from core.progress import AUDITING, PHASES, PhaseProgress, ProgressEvent

log = logging.getLogger(__name__)

PHASE_FEATURES = PHASES[1]  # "extracting features", as in a training run
PHASE_AUDIT = AUDITING


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
    counts = PhaseProgress(on_event, PHASE_FEATURES, "photos")

    def progress(done: int, total: int) -> None:
        counts(done, total, f"Features of {done:,}/{total:,} photos")

    matrix, stats = features.extract(
        extractor, index["path"].tolist(), index["sha256"].tolist(), home=home,
        on_progress=progress, should_stop=should_stop,
    )
    log.info("Audit features: %d cached, %d computed", stats.hits, stats.misses)
    return matrix, extractor


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
        on_event: Called with ProgressEvents (feature extraction, then the analyses).
        should_stop: Polled between steps; True raises core.errors.Cancelled.
        save: Keep the result under <home>/audits/<dataset key>/audit.json.
        check_pixels: Confirm candidate pairs by their thumbnails
            (near_duplicates.near_duplicate_pairs);
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
    x, fingerprint, blanks = _audit_features(index, features, config, home_path, extractor,
                                             on_event, stop)
    clock = {"features": time.monotonic() - started}
    names = relative_names(index, root)
    labels = sorted(index["label"].unique().tolist())
    y = np.asarray([labels.index(v) for v in index["label"]], np.int64)
    steps = _AnalysisSteps(on_event, stop, clock)

    steps.begin("label_issues", "Cross-validating a head for out-of-sample predictions")
    probs = out_of_sample_probabilities(x, y, len(labels), folds=config.folds, seed=config.seed)
    label_issues, wrong_share = _label_issues(probs, y, labels, names, config)
    steps.begin("near_duplicates", "Searching near-duplicates")
    unit = nd.normalize(x)
    pi, pj, ps = nd.near_duplicate_pairs(unit, index["path"].tolist(), config,
                                         check_pixels=check_pixels)
    near = _near_duplicate_groups(nd.groups_from_pairs(len(x), pi, pj), pi, pj, ps, names,
                                  index["label"].tolist(), reference_split(index, split_config))
    steps.begin("outliers", "Measuring how unlike its class each photo is")
    outliers = _outliers(unit, y, labels, names, blanks, config)
    steps.end()

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
    if on_event is not None:
        on_event(ProgressEvent(PHASE_AUDIT, 3, 3, message="Audit done", metrics={
            "label_issues": len(label_issues), "near_duplicate_groups": len(near),
            "outliers": len(outliers)}))
    if save:
        save_audit(result, home_path)
    return result


class _AnalysisSteps:
    """The audit's three analyses as progress: step i of 3, with a time estimate.

    The estimate of a step's length is its share of the analyses measured on
    flower_photos_300 (docs/benchmarks.md), scaled by the time the steps done so far took.
    """

    SHARES = {"label_issues": 0.5, "near_duplicates": 0.35, "outliers": 0.15}

    def __init__(self, on_event: Callable[[ProgressEvent], None] | None,
                 stop: Callable[[], bool], clock: dict[str, float]) -> None:
        self.on_event, self.stop, self.clock = on_event, stop, clock
        self.started = self.mark = time.monotonic()
        self.current: str | None = None
        self.done_share = 0.0

    def begin(self, name: str, message: str) -> None:
        """Ends the running step, checks for a cancel, reports the next one."""
        self.end()
        if self.stop():
            raise Cancelled()
        self.current = name
        elapsed = time.monotonic() - self.started
        eta = elapsed / self.done_share * (1.0 - self.done_share) if self.done_share else None
        if self.on_event is not None:
            done = list(self.SHARES).index(name)
            self.on_event(ProgressEvent(PHASE_AUDIT, done, 3, eta_seconds=eta,
                                        message=f"{message} (step {done + 1} of 3)"))

    def end(self) -> None:
        """Records the running step's seconds."""
        now = time.monotonic()
        if self.current is not None:
            self.clock[self.current] = now - self.mark
            self.done_share += self.SHARES[self.current]
            self.current = None
        self.mark = now


def _audit_features(index: pd.DataFrame, features: np.ndarray | None, config: AuditConfig,
                    home: Path, extractor: Any, on_event: Callable[[Any], None] | None,
                    stop: Callable[[], bool]) -> tuple[np.ndarray, str, np.ndarray | None]:
    """(float32 [N, D] features, their fingerprint, features of blank frames or None)."""
    if features is not None:
        x = np.asarray(features, np.float32)
        fingerprint, blanks = "given", None
    else:
        x, used = _features(index, config, home=home, extractor=extractor, on_event=on_event,
                            should_stop=stop)
        fingerprint, blanks = used.fingerprint, blank_features(used, home)
    if len(x) != len(index):
        raise DatasetError(f"Got {len(x)} feature vectors for {len(index)} photos.")
    return np.asarray(x, np.float32), fingerprint, blanks


def _label_issues(probs: np.ndarray, y: np.ndarray, labels: list[str], names: list[str],
                  config: AuditConfig) -> tuple[list[dict[str, Any]], float]:
    """Likely wrong labels, most suspicious first, each with the class it looks like."""
    ranked, wrong_share = find_label_issues(probs, y, config.max_label_confidence)
    issues = []
    for i in ranked:
        others = probs[i].copy()
        others[y[i]] = -1.0
        issues.append({"file": names[i], "given": labels[y[i]],
                       "suggested": labels[int(others.argmax())],
                       "score": round(float(1.0 - probs[i, y[i]]), 4)})
    return issues, wrong_share


def _outliers(unit: np.ndarray, y: np.ndarray, labels: list[str], names: list[str],
              blanks: np.ndarray | None, config: AuditConfig) -> list[dict[str, Any]]:
    """Photos unlike the rest of their class, the most unlike first."""
    ratio, z = class_outlier_scores(unit, y, config.outlier_neighbours)
    if blanks is not None and len(blanks):
        # Blank frames first: their features are those of a uniform image.
        blank = (unit @ nd.normalize(blanks).T).max(axis=1) >= _BLANK_SIMILARITY
        ratio[blank] = 2.0 * max(float(ratio.max()), 1.0)
        z[blank] = np.inf
    flagged = np.flatnonzero(z >= config.outlier_z)
    flagged = flagged[np.argsort(-ratio[flagged], kind="stable")]
    return [{"file": names[i], "label": labels[y[i]], "score": round(float(ratio[i]), 3)}
            for i in flagged]


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
