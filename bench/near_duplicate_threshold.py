"""Measures the cosine similarity of real photos to their edited copies and to other photos.

Justifies core.config.AuditConfig.near_duplicate_threshold: every edited copy (resized,
recompressed at JPEG quality 50, cropped 5-10%, flipped) must score above it, and no two
different photos of flower_photos_300 may. Prints one JSON object.

    KERAS_HOME=<folder whose models/ holds the MobileNetV2 weights> TL_STUDIO_OFFLINE=1 \
        python bench/near_duplicate_threshold.py [--photos 100] [--home DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.audit import findings as audit
from core.audit import near_duplicates as nd
from core.config import AuditConfig
from core.data import datasets


def _jpeg(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _crop(img: Image.Image, share: float, corner: bool) -> Image.Image:
    w, h = img.size
    dx, dy = int(w * share), int(h * share)
    if corner:  # the whole share off the right and bottom edges
        return img.crop((0, 0, w - dx, h - dy))
    return img.crop((dx // 2, dy // 2, w - dx + dx // 2, h - dy + dy // 2))


EDITS = {
    "resized_50pct": lambda im: _jpeg(im.resize((im.width // 2, im.height // 2)), 90),
    "resized_25pct": lambda im: _jpeg(im.resize((max(1, im.width // 4),
                                                 max(1, im.height // 4))), 90),
    "jpeg_q50": lambda im: _jpeg(im, 50),
    "jpeg_q20": lambda im: _jpeg(im, 20),
    "crop_5pct_centre": lambda im: _jpeg(_crop(im, 0.05, False), 90),
    "crop_10pct_centre": lambda im: _jpeg(_crop(im, 0.10, False), 90),
    "crop_10pct_corner": lambda im: _jpeg(_crop(im, 0.10, True), 90),
    "flipped": lambda im: _jpeg(ImageOps.mirror(im), 90),
}


def _stats(values: np.ndarray) -> dict[str, float]:
    return {"min": round(float(values.min()), 4), "p5": round(float(np.percentile(values, 5)), 4),
            "median": round(float(np.median(values)), 4), "max": round(float(values.max()), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.path.join(
        os.environ.get("TL_STUDIO_ASSETS", "../shared/assets"), "datasets", "flower_photos_300"))
    parser.add_argument("--photos", type=int, default=100, help="originals that get copies")
    parser.add_argument("--home", default=None, help="studio home (feature cache)")
    args = parser.parse_args()
    home = Path(args.home or tempfile.mkdtemp(prefix="tl-ndthreshold-"))
    config = AuditConfig()
    started = time.monotonic()
    dataset = datasets.ingest(args.data, home=home)
    index = dataset.index
    feats, _fp = audit.dataset_features(index, config, home=home)
    unit = nd.normalize(feats)

    # Different real photos: the most similar other photo of each (exact copies excluded).
    nn_idx, nn_sim = nd.nearest_neighbours(unit, 1)
    same = index["sha256"].to_numpy()[nn_idx[:, 0]] == index["sha256"].to_numpy()
    nearest = nn_sim[~same, 0]
    top = np.argsort(-nn_sim[:, 0])[:10]
    names = audit.relative_names(index, dataset.root)
    top_pairs = [{"a": names[i], "b": names[nn_idx[i, 0]], "similarity": round(float(nn_sim[i, 0]), 4)}
                 for i in top]

    # Edited copies of a seeded sample of the photos.
    rng = np.random.default_rng(0)
    chosen = rng.choice(len(index), size=min(args.photos, len(index)), replace=False)
    copies: dict[str, list[float]] = {name: [] for name in EDITS}
    with tempfile.TemporaryDirectory() as tmp:
        paths, shas, edit_of, orig_of = [], [], [], []
        for i in chosen:
            with Image.open(index["path"].iloc[i]) as im:
                im = im.convert("RGB")
                for name, edit in EDITS.items():
                    data = edit(im)
                    path = Path(tmp) / f"{i}-{name}.jpg"
                    path.write_bytes(data)
                    paths.append(str(path))
                    shas.append(hashlib.sha256(data).hexdigest())
                    edit_of.append(name)
                    orig_of.append(i)
        from core.features import backbones
        from core.features import extraction as features
        from core.features import weights as base_weights

        spec = backbones.get_spec(config.backbone)
        extractor = features.make_extractor(spec, base_weights.resolve_weights(spec, "imagenet"),
                                            home=home)
        edited, _stats_ = features.extract(extractor, paths, shas, home=home)
        sims = np.sum(nd.normalize(edited) * unit[np.asarray(orig_of)], axis=1)
        pixels = np.asarray([nd.pixel_match(nd.pixel_signature(p),
                                            nd.pixel_signature(index["path"].iloc[o]))
                             for p, o in zip(paths, orig_of)])
    caught = (sims >= config.near_duplicate_threshold) | (
        (sims >= config.candidate_threshold) & (pixels >= config.pixel_threshold))
    # The rule on the real photos: every pair it keeps, and the pixel match of the candidates.
    cand_i, cand_j, cand_s = nd.similar_pairs(unit, config.candidate_threshold)
    cand_px = np.asarray([nd.pixel_match(nd.pixel_signature(index["path"].iloc[a]),
                                         nd.pixel_signature(index["path"].iloc[b]))
                          for a, b in zip(cand_i, cand_j)])
    kept_i, kept_j, kept_s = nd.near_duplicate_pairs(unit, index["path"].tolist(), config)
    for name, s in zip(edit_of, sims):
        copies[name].append(float(s))
    all_copies = np.asarray(sims)
    print(json.dumps({
        "benchmark": "near_duplicate_threshold",
        "data": str(args.data), "photos": int(len(index)), "originals_copied": int(len(chosen)),
        "copies": {name: _stats(np.asarray(v)) for name, v in copies.items()},
        "copies_all": _stats(all_copies),
        "different_photos_nearest": _stats(nearest),
        "different_photos_above": {str(t): int((nearest >= t).sum() // 1)
                                   for t in (0.80, 0.85, 0.88, 0.90, 0.92, 0.95)},
        "copies_below": {str(t): int((all_copies < t).sum())
                         for t in (0.80, 0.85, 0.88, 0.90, 0.92, 0.95)},
        "top_pairs": top_pairs,
        "copies_pixel_match": {name: _stats(pixels[np.asarray(edit_of) == name])
                               for name in EDITS},
        "copies_caught_by_rule": {name: f"{int(caught[np.asarray(edit_of) == name].sum())}/"
                                        f"{int((np.asarray(edit_of) == name).sum())}"
                                  for name in EDITS},
        "candidate_pairs_of_different_photos": int(len(cand_i)),
        "candidates_pixel_match_top": [
            {"a": names[cand_i[k]], "b": names[cand_j[k]], "cosine": round(float(cand_s[k]), 4),
             "pixel_match": round(float(cand_px[k]), 4)} for k in np.argsort(-cand_px)[:8]],
        "pairs_kept_by_rule": [{"a": names[a], "b": names[b], "cosine": round(float(c), 4)}
                               for a, b, c in zip(kept_i, kept_j, kept_s)],
        "threshold": config.near_duplicate_threshold,
        "seconds": round(time.monotonic() - started, 1),
        "loadavg": os.getloadavg(),
    }, indent=1))


if __name__ == "__main__":
    main()
