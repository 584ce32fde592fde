"""'None of these' for a run: its stored familiarity (older runs: computed on first use
from their cached features and written back), its facts for pages and reports, and the words
of the answer. The score itself is core.training.familiarity's.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from core.training.familiarity import (  # noqa: F401  the score's names, for callers here
    DEFAULT_K,
    MAX_PER_CLASS,
    QUANTILE,
    SHRINK_PHOTOS,
    Familiarity,
    FamiliarityError,
    bounded_rows,
    conformal_bound,
    fit,
    fit_rows,
    knn_scores,
    leave_one_out_scores,
    normalise,
    stratified_subsample,
)

log = logging.getLogger(__name__)

NONE_OF_THESE = "None of these"


def none_of_these(n_classes: int, closest: str | None) -> str:
    """The answer to a photo that looks like none of the classes, in plain words."""
    things = "class" if n_classes == 1 else "classes"
    text = f"It looks like none of the {n_classes} {things} this model knows."
    if closest:
        text += f" The closest is {closest}, but it does not look like the {closest} photos " \
                "the model learned from."
    return text


# ----------------------------------------------------------------------------- runs


def run_facts(run: Any) -> dict[str, Any] | None:
    """A run's familiarity facts (Familiarity.facts()): from its metrics, else its file."""
    facts = run.metrics.get("familiarity")
    if isinstance(facts, dict) and isinstance(facts.get("test"), dict):
        return facts
    try:
        return Familiarity.load(run.familiarity_path).facts()
    except (FileNotFoundError, FamiliarityError):
        return None


def summary_text(facts: dict[str, Any] | None, n_classes: int) -> str:
    """What 'none of these' means for a run, and how often it fires on its own test photos."""
    intro = (f"A photo that looks like none of the {n_classes} classes (a cat shown to a "
             "flower model) is answered \"None of these\", with the closest class named "
             "second: it is compared with the training photos, and when even its nearest "
             "ones are far away, the model says it does not know it.")
    if not facts:
        return intro + (" This run has not worked it out yet: it does the first time it "
                        "answers a photo.")
    quantile = float(facts.get("quantile", QUANTILE))
    text = (f"{intro} The line is drawn, class by class, so that about {quantile:.0%} of "
            "photos of the known classes that training did not use fall below it.")
    test = facts.get("test") or {}
    if test.get("photos"):
        text += (f" On this run's test photos (all of known classes) it would answer "
                 f"\"None of these\" for {test['called_unknown']} of {test['photos']} "
                 f"({test['called_unknown'] / test['photos']:.0%}).")
    return text + (" Photos of things that are not like the training photos at all are "
                   "caught far more reliably than photos of similar things (another kind of "
                   "flower for a flower model).")


def _cached_features(run: Any, home: Path, shas: list[str], dim: int
                     ) -> list[np.ndarray | None]:
    """The frozen base's cached vector of each photo (None where not cached)."""
    from core.features import backbones
    from core.features import cache as feature_cache
    from core.features import weights as base_weights

    cfg = run.config
    try:
        spec = backbones.get_spec(cfg.backbone, hub_handle=cfg.hub_handle,
                                  hub_input_size=cfg.hub_input_size)
        resolved = base_weights.resolve_weights(spec, cfg.weights, seed=cfg.seed,
                                                hub_handle=cfg.hub_handle)
        cache = feature_cache.FeatureCache(home, resolved.fingerprint, dim, [0])
        return [cache.get(0, sha) for sha in shas]
    except Exception as exc:  # weights gone, offline hub handle: the model computes them
        log.info("No cached features for run %s (%s)", run.run_id, exc)
        return [None] * len(shas)


def run_features(run: Any, predictor: Any, rows: Any, *, home: Path) -> np.ndarray:
    """The vectors the run's head reads for these split rows.

    A run whose base was not fine-tuned reads the feature cache first (the base it trained
    on is the one that filled it); the rest, and every photo of a fine-tuned run, go through
    the run's own model (Predictor.features_and_probabilities).

    Raises:
        FamiliarityError: A photo is gone or unreadable, or the model gives no features.
    """
    from core.data import images
    from core.errors import ImageError

    dim = None
    shas = rows["sha256"].astype(str).tolist()
    # A fine-tuned base or trained top blocks read other features than the cached ones.
    frozen = run.config is not None and not run.metrics.get("fine_tuned", False) \
        and not run.metrics.get("top_blocks")
    out: list[np.ndarray | None] = [None] * len(shas)
    if frozen:
        probe, _ = predictor.features_and_probabilities(
            np.zeros((1, predictor.input_size, predictor.input_size, 3), np.uint8))
        if probe is not None:
            dim = probe.shape[1]
            out = _cached_features(run, home, shas, dim)
    missing = [i for i, v in enumerate(out) if v is None]
    paths = rows["path"].astype(str).tolist()
    for start in range(0, len(missing), predictor.batch_size):
        chunk = missing[start:start + predictor.batch_size]
        try:
            batch = np.stack([images.load_resized(paths[i], predictor.input_size)
                              for i in chunk])
        except (ImageError, OSError) as exc:
            raise FamiliarityError(f"A photo this run trained on cannot be read any more "
                                   f"({exc}); restore the dataset's photos.") from exc
        feats, _ = predictor.features_and_probabilities(batch)
        if feats is None:
            raise FamiliarityError("This model is not laid out as a base and a head, so "
                                   "it gives no features to compare.")
        for i, vector in zip(chunk, feats):
            out[i] = vector
    return np.stack(out).astype(np.float32) if out else np.zeros((0, dim or 1), np.float32)


def compute_for_run(run: Any, predictor: Any, *, home: Path,
                    per_class_photos: int = 2 * MAX_PER_CLASS) -> Familiarity:
    """An older run's familiarity from its training, validation and test photos.

    At most per_class_photos of each class are used, so a run without cached features
    costs a bounded number of passes through its model.
    """
    split = run.split
    if split is None or "split" not in split.columns:
        raise FamiliarityError("Its split table (split.csv) is missing, so the photos it "
                               "trained on are unknown.")
    seed = run.config.seed if run.config is not None else 0
    both = bounded_rows(split[split["split"].isin(["train", "val"])].reset_index(drop=True),
                        seed, per_class_photos)
    fam = fit_rows(both, run_features(run, predictor, both, home=home), seed=seed)
    test = split[split["split"] == "test"].reset_index(drop=True)
    fam.measure_test(run_features(run, predictor, test, home=home), test["path"].tolist())
    return fam


def for_run(run: Any, predictor: Any, *, home: str | Path) -> tuple[Familiarity | None,
                                                                      str | None]:
    """The run's stored familiarity; computed now (and stored) for a run that has none.

    A damaged file is computed again. Never raises for a run that cannot have one.

    Returns:
        (familiarity, None) or (None, why there is none, in words).
    """
    path = run.familiarity_path
    try:
        return Familiarity.load(path), None
    except FileNotFoundError:
        log.info("Run %s has no %s yet: computing it", run.run_id, path.name)
    except FamiliarityError as exc:
        log.warning("Run %s: %s", run.run_id, exc)
    try:
        fam = compute_for_run(run, predictor, home=Path(home))
    except FamiliarityError as exc:
        return None, str(exc)
    except Exception as exc:  # never a traceback on the pages: say it
        log.exception("Familiarity of run %s", run.run_id)
        return None, f"it could not be computed ({type(exc).__name__}: {exc})"
    try:
        fam.save(path)
    except OSError as exc:  # a read-only run folder: still used, computed again next time
        log.warning("Cannot store the familiarity of run %s: %s", run.run_id, exc)
    return fam, None
