"""How well each familiarity score tells photos of unknown things from the known classes.

Trains the studio's head on the pooled MobileNetV2 features of three classes of
flower_photos_300 (daisy, roses, tulips; the studio's split, several seeds), holds the two
other classes out entirely (near: other flowers) and scores photos that are not flowers at
all (far: the non-flower photos of ../shared/assets/images/imagenet_sanity and the real
photos shipped inside scikit-image, each with its licence below). For every method, the
threshold is calibrated on held-out known-class photos (the 5% quantile of the validation
photos for the methods tried; for the shipped recipe the conformal 5% bound of leave-one-out
scores against the final reference, with the earlier 5-fold recipe beside it), then the share of
known-class test photos (false alarms), near and far photos called unknown is reported, with
AUROC (test photos against near, against far). Features come from the studio's own
extraction and feature cache, so a rerun with the same --home takes seconds. Prints JSON.

    KERAS_HOME=<folder whose models/ holds the MobileNetV2 weights> TL_STUDIO_OFFLINE=1 \
        python bench/familiarity_benchmark.py [--home DIR] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

KNOWN = ("daisy", "roses", "tulips")
NEAR = ("dandelion", "sunflowers")
QUANTILE = 0.05
# Real non-flower photos shipped in scikit-image's wheel (skimage/data), with the licence its
# own docstrings give; images without a stated licence (moon, page, motorcycle) are left out.
SKIMAGE_PHOTOS = {
    "astronaut.png": "public domain (NASA)",
    "camera.png": "CC0 (Lav Varshney)",
    "chelsea.png": "CC0 (Stefan van der Walt)",
    "coffee.png": "CC0 (Rachel Michetti)",
    "rocket.jpg": "public domain (SpaceX)",
    "hubble_deep_field.jpg": "public domain (NASA)",
    "brick.png": "CC0 (CC0Textures)",
    "grass.png": "CC0 (CC0Textures)",
    "gravel.png": "CC0 (CC0Textures)",
    "clock_motion.png": "public domain (Stefan van der Walt)",
    "coins.png": "no known copyright restrictions (Brooklyn Museum)",
    "retina.jpg": "CC0 (Häggström)",
    "ihc.png": "no known copyright restrictions",
}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def far_photos(assets: Path) -> list[tuple[Path, str]]:
    """(path, source) of every non-flower photo found on this machine."""
    found = [(p, "imagenet_sanity, CC BY 2.0 / public domain")
             for p in sorted((assets / "images" / "imagenet_sanity").iterdir())
             if p.suffix in (".bmp", ".jpg") and not p.name.startswith("sunflower")]
    spec = importlib.util.find_spec("skimage")
    if spec and spec.submodule_search_locations:
        data = Path(list(spec.submodule_search_locations)[0]) / "data"
        found += [(data / name, f"scikit-image, {licence}")
                  for name, licence in SKIMAGE_PHOTOS.items() if (data / name).is_file()]
    return found


def features(home: Path, paths: list[Path], shas: list[str]) -> np.ndarray:
    """Pooled MobileNetV2 features through the studio's extraction and cache."""
    from core.features import backbones, extraction
    from core.features import weights as base_weights

    spec = backbones.get_spec("mobilenet_v2")
    resolved = base_weights.resolve_weights(spec, "imagenet", seed=0)
    extractor = extraction.make_extractor(spec, resolved, home=home, defer_backend=True)
    matrix, _ = extraction.extract(extractor, paths, shas, home=home)
    return matrix


def train_head(x: np.ndarray, y: np.ndarray, xv: np.ndarray, yv: np.ndarray, seed: int) -> Any:
    """The studio's manual-settings head on cached features."""
    from core.config import TrainConfig
    from core.training import head as head_training
    from core.training.callback import early_stopping

    cfg = TrainConfig(seed=seed)
    head = head_training.build_head(x.shape[1], len(KNOWN), cfg)
    head_training.fit_head(head, x, y, xv, yv, epochs=cfg.epochs, batch_size=cfg.batch_size,
                           learning_rate=cfg.learning_rate, dropout=cfg.dropout, l2=cfg.l2,
                           seed=seed, callbacks=[*early_stopping(cfg.early_stopping_patience)])
    return head


def logits(head: Any, x: np.ndarray) -> np.ndarray:
    """The head's pre-softmax outputs (its final Dense layer without the softmax)."""
    import keras

    dense = [layer for layer in head.layers if isinstance(layer, keras.layers.Dense)][-1]
    kernel, bias = (np.asarray(w) for w in dense.get_weights())
    hidden = x
    for layer in head.layers[1:]:
        if layer is dense:
            break
        if isinstance(layer, keras.layers.Dense):
            hidden = np.asarray(layer(hidden))
    return hidden @ kernel + bias


def auroc(known: np.ndarray, unknown: np.ndarray) -> float:
    """P(score of a known photo > score of an unknown one): higher scores mean familiar."""
    both = np.concatenate([known, unknown])
    ranks = both.argsort().argsort().astype(np.float64) + 1
    r_known = ranks[:len(known)].sum()
    return float((r_known - len(known) * (len(known) + 1) / 2) / (len(known) * len(unknown)))


# ----------------------------------------------------------------------------- the scores


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def knn_score(reference: np.ndarray, x: np.ndarray, k: int, centre: np.ndarray | None = None
              ) -> np.ndarray:
    """Cosine similarity to the k-th nearest reference vector (Sun et al. 2022)."""
    if centre is not None:
        reference, x = reference - centre, x - centre
    sims = _normalise(x) @ _normalise(reference).T
    k = min(k, sims.shape[1])
    return -np.sort(-sims, axis=1)[:, k - 1]


def mahalanobis_score(x_ref: np.ndarray, y_ref: np.ndarray, x: np.ndarray,
                      shrink: float) -> np.ndarray:
    """Minus the smallest class-conditional Mahalanobis distance, shared covariance."""
    means = np.stack([x_ref[y_ref == c].mean(axis=0) for c in np.unique(y_ref)])
    centred = x_ref - means[y_ref]
    cov = centred.T @ centred / len(x_ref)
    cov = (1 - shrink) * cov + shrink * np.eye(len(cov)) * np.trace(cov) / len(cov)
    precision = np.linalg.pinv(cov)
    d = [(((x - m) @ precision) * (x - m)).sum(axis=1) for m in means]
    return -np.min(np.stack(d, axis=1), axis=1)


def softmax_scores(z: np.ndarray) -> dict[str, np.ndarray]:
    """Maximum softmax probability and (minus) energy, both higher for familiar photos."""
    top = z.max(axis=1, keepdims=True)
    lse = (top + np.log(np.exp(z - top).sum(axis=1, keepdims=True)))[:, 0]
    return {"msp": np.exp(z.max(axis=1) - lse), "energy": lse}


def all_scores(ref: np.ndarray, y_ref: np.ndarray, head: Any, parts: dict[str, np.ndarray],
               ) -> dict[str, dict[str, np.ndarray]]:
    """{method: {part: scores}} for every method tried."""
    out: dict[str, dict[str, np.ndarray]] = {}
    centre = ref.mean(axis=0)
    for k in (1, 3, 5, 10, 20, 50):
        out[f"knn_cosine_k{k}"] = {n: knn_score(ref, x, k) for n, x in parts.items()}
        out[f"knn_centred_k{k}"] = {n: knn_score(ref, x, k, centre) for n, x in parts.items()}
    for shrink in (0.0, 0.5):
        out[f"mahalanobis_shrink{shrink:g}"] = {
            n: mahalanobis_score(ref, y_ref, x, shrink) for n, x in parts.items()}
    soft = {n: softmax_scores(logits(head, x)) for n, x in parts.items()}
    out["msp"] = {n: s["msp"] for n, s in soft.items()}
    out["energy"] = {n: s["energy"] for n, s in soft.items()}
    return out


# ----------------------------------------------------------------------------- one split


def one_seed(seed: int, x: np.ndarray, labels: np.ndarray, shas: list[str], near: np.ndarray,
             far: np.ndarray) -> dict[str, dict[str, float]]:
    """Every method's shares and AUROC for one split of the known classes."""
    import pandas as pd

    from core.data import splits

    frame = pd.DataFrame({"path": [f"p{i}" for i in range(len(x))], "label": labels,
                          "sha256": shas})
    part = splits.split(frame, _split_config(seed))["split"].to_numpy()
    y = np.array([KNOWN.index(label) for label in labels])
    tr, va, te = (part == "train"), (part == "val"), (part == "test")
    head = train_head(x[tr], y[tr], x[va], y[va], seed)
    # Calibration "val": reference = train, threshold from the validation photos.
    scored = all_scores(x[tr], y[tr], head,
                        {"val": x[va], "test": x[te], "near": near, "far": far})
    results: dict[str, dict[str, float]] = {}
    for method, s in scored.items():
        threshold = float(np.quantile(s["val"], QUANTILE))
        results[method] = {
            "threshold": threshold,
            "test_called_unknown": float(np.mean(s["test"] < threshold)),
            "near_called_unknown": float(np.mean(s["near"] < threshold)),
            "far_called_unknown": float(np.mean(s["far"] < threshold)),
            "far_called_unknown_count": int(np.sum(s["far"] < threshold)),
            "sanity_called_unknown_count": int(np.sum(s["far"][:7] < threshold)),
            "auroc_near": auroc(s["test"], s["near"]),
            "auroc_far": auroc(s["test"], s["far"]),
        }
    results.update(_out_of_fold(seed, x[tr | va], y[tr | va], x[te], near, far))
    return results


def _split_config(seed: int) -> Any:
    from core.config import SplitConfig

    return SplitConfig(seed=seed)


def _recalibrated(model: Any, ref: np.ndarray, y_ref: np.ndarray, seed: int, how: str) -> Any:
    """The same reference and rule with other thresholds: "five_fold_quantile" (the first
    recipe: 5-fold out-of-fold scores against 4/5 of the reference, interpolated 5% quantile
    per class) or "loo_quantile" (leave-one-out scores, interpolated quantile per class)."""
    import copy

    from core.data import splits
    from core.training import familiarity

    x = familiarity.normalise(ref)
    kept = np.zeros(len(x), bool)
    kept[familiarity.stratified_subsample(y_ref, model.reference.shape[0], seed)
         if len(model.reference) < len(x) else np.arange(len(x))] = True
    if how == "five_fold_quantile":
        fold_of = splits.stratified_folds(y_ref, 5, seed)
        oof = np.empty(len(x), np.float32)
        oof_class = np.empty(len(x), np.int64)
        for f in range(5):
            inside = fold_of == f
            rows = np.flatnonzero(kept & ~inside)
            oof[inside], nearest = familiarity.knn_scores(x[rows].astype(np.float16),
                                                          x[inside], model.k)
            oof_class[inside] = y_ref[rows[nearest]]
    else:
        reference = x[kept].astype(np.float16)
        ids = np.arange(len(x))
        oof, nearest = familiarity.leave_one_out_scores(x, reference, ids, ids[kept], model.k)
        oof_class = y_ref[kept][nearest]
    other = copy.copy(model)
    other.threshold = float(np.quantile(oof, QUANTILE))
    other.class_thresholds = np.array(
        [np.quantile(oof[oof_class == c], QUANTILE) for c in range(len(KNOWN))], np.float32)
    return other


def _local_density(model: Any, parts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Tried, not shipped: score minus the nearest reference photo's own leave-one-out
    k-th similarity (a local-density ratio, as in LOF), calibrated like the shipped score."""
    from core.training import familiarity

    ref = np.asarray(model.reference, np.float32)
    ids = np.arange(len(ref))
    radius, _ = familiarity.leave_one_out_scores(ref, ref, ids, ids, model.k)
    oof = radius
    _, oof_near = familiarity.leave_one_out_scores(ref, ref, ids, ids, 1)
    oof_score = oof - radius[oof_near]  # a reference photo's own radius against its neighbour's
    labels = model.reference_labels.astype(np.int64)
    limits = np.array([familiarity.conformal_bound(oof_score[labels[oof_near] == c], QUANTILE)
                       for c in range(len(KNOWN))])
    out = {}
    for name, x in parts.items():
        s, nearest = familiarity.knn_scores(ref, x, model.k)
        out[name] = (s - radius[nearest]) < limits[labels[nearest]]
    return out


def _out_of_fold(seed: int, ref: np.ndarray, y_ref: np.ndarray, test: np.ndarray,
                 near: np.ndarray, far: np.ndarray) -> dict[str, dict[str, float]]:
    """The shipped recipe (core.training.familiarity.fit): reference = train + val, each
    class's threshold the leave-one-out conformal bound shrunk toward the pooled one; several
    k and reference caps, the same scores with one threshold for all classes, the earlier
    calibrations on the same reference, and a local-density score."""
    from core.training import familiarity

    out = {}
    default = familiarity.MAX_PER_CLASS
    for k, cap in ((1, default), (3, default), (5, default), (10, default), (3, 100),
                   (3, 30)):
        started = time.perf_counter()
        model = familiarity.fit(ref, y_ref, seed=seed, k=k, per_class=cap)
        fit_s = time.perf_counter() - started
        started = time.perf_counter()
        s_test, t_test = model.scores(test)
        per_photo_ms = (time.perf_counter() - started) / len(test) * 1000
        started = time.perf_counter()
        for row in test[:20]:
            model.scores(row[None])
        single_ms = (time.perf_counter() - started) / 20 * 1000
        (s_near, t_near), (s_far, t_far) = model.scores(near), model.scores(far)
        facts = {"reference_vectors": len(model.reference), "reference_bytes": model.nbytes,
                 "fit_seconds": round(fit_s, 3),
                 "score_ms_per_photo_batched": round(per_photo_ms, 4),
                 "score_ms_one_photo": round(single_ms, 4),
                 "auroc_near": auroc(s_test, s_near), "auroc_far": auroc(s_test, s_far)}
        name = f"shipped_k{k}_cap{cap}"
        out[f"{name}_per_class"] = {**facts, **_shares(s_test < t_test, s_near < t_near,
                                                        s_far < t_far)}
        g = model.threshold
        out[f"{name}_one_threshold"] = {**facts, **_shares(s_test < g, s_near < g, s_far < g)}
        if k == familiarity.DEFAULT_K and cap == default:
            for how in ("five_fold_quantile", "loo_quantile"):
                other = _recalibrated(model, ref, y_ref, seed, how)
                called = [s < t for s, t in (other.scores(x) for x in (test, near, far))]
                out[f"{name}_{how}"] = {**facts, **_shares(*called)}
            dens = _local_density(model, {"test": test, "near": near, "far": far})
            out["local_density_k3"] = _shares(dens["test"], dens["near"], dens["far"])
    return out


def _shares(test: np.ndarray, near: np.ndarray, far: np.ndarray) -> dict[str, float]:
    return {"test_called_unknown": float(np.mean(test)),
            "near_called_unknown": float(np.mean(near)),
            "far_called_unknown": float(np.mean(far)),
            "far_called_unknown_count": int(np.sum(far)),
            # the 7 non-flower photos of imagenet_sanity come first in far_photos()
            "sanity_called_unknown_count": int(np.sum(far[:7]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", default=None, help="studio home (its feature cache is kept)")
    parser.add_argument("--assets", default=os.environ.get(
        "TL_STUDIO_ASSETS", str(REPO.parent / "shared" / "assets")))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    args = parser.parse_args()
    home = Path(args.home or tempfile.mkdtemp(prefix="tl-familiar-bench-"))
    assets = Path(args.assets)
    load_before = os.getloadavg()
    from core.data import datasets

    index = datasets.ingest(assets / "datasets" / "flower_photos_300", home=home).index
    started = time.monotonic()
    x_all = features(home, index["path"].tolist(), index["sha256"].tolist())
    far_list = far_photos(assets)
    far_paths = [p for p, _ in far_list]
    x_far = features(home, far_paths, [_sha(p) for p in far_paths])
    feature_s = time.monotonic() - started
    known = index["label"].isin(KNOWN).to_numpy()
    x_near = x_all[index["label"].isin(NEAR).to_numpy()]
    per_seed = [one_seed(s, x_all[known], index["label"][known].to_numpy(),
                         index["sha256"][known].tolist(), x_near, x_far) for s in args.seeds]
    methods = {}
    for method in per_seed[0]:
        rows = [r[method] for r in per_seed]
        methods[method] = {key: (round(float(np.mean([r[key] for r in rows])), 4)
                                 if not isinstance(rows[0][key], str) else rows[0][key])
                           for key in rows[0]}
        for key in ("test_called_unknown", "near_called_unknown", "far_called_unknown_count",
                    "sanity_called_unknown_count"):
            methods[method][f"{key}_per_seed"] = [round(r[key], 4) for r in rows]
    print(json.dumps({
        "benchmark": "familiarity", "known": KNOWN, "near": NEAR, "seeds": args.seeds,
        "near_photos": int(len(x_near)), "far_photos": len(far_paths),
        "far_sources": {p.name: src for p, src in far_list},
        "quantile": QUANTILE, "feature_seconds": round(feature_s, 1),
        "cpu_count": os.cpu_count(), "loadavg_before": [round(v, 2) for v in load_before],
        "loadavg_after": [round(v, 2) for v in os.getloadavg()], "methods": methods,
    }, indent=1))


if __name__ == "__main__":
    main()
