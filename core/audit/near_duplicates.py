"""Vectorised cosine-similarity search and the pixel check of near-duplicate candidates."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from core.config import AuditConfig
from core.errors import ImageError

log = logging.getLogger(__name__)

# Rows of the query block in one matrix product: block x N float32 similarities at a time
# (1,024 x 20,000 x 4 bytes = 80 MB), so memory stays flat however many photos there are.
BLOCK_ROWS = 1024


def normalize(features: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 length (float32), so a dot product is the cosine similarity.

    An all-zero row stays zero (its similarity to everything is 0).
    """
    x = np.asarray(features, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def similar_pairs(unit: np.ndarray, threshold: float, *, block: int = BLOCK_ROWS
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair (i < j) whose cosine similarity is at least threshold.

    Blocked matrix products: rows i0:i1 against rows i0: (the upper triangle only), so the
    work is N^2/2 dot products done by BLAS and memory is block x N floats.

    Args:
        unit: [N, D] unit rows (normalize()).
        threshold: Smallest cosine similarity kept.
        block: Rows per matrix product.

    Returns:
        (i, j, similarity): int64, int64, float32 arrays of equal length, i < j.
    """
    n = len(unit)
    found_i, found_j, found_s = [], [], []
    for start in range(0, n, block):
        stop = min(start + block, n)
        sims = unit[start:stop] @ unit[start:].T  # [b, n - start]
        # Keep j > i only: column c is item start + c, row r is item start + r.
        sims[np.tril_indices(stop - start, 0, m=sims.shape[1])] = -np.inf
        rows, cols = np.nonzero(sims >= threshold)
        found_i.append(rows + start)
        found_j.append(cols + start)
        found_s.append(sims[rows, cols])
    if not found_i:
        empty = np.empty(0, np.int64)
        return empty, empty.copy(), np.empty(0, np.float32)
    return (np.concatenate(found_i).astype(np.int64), np.concatenate(found_j).astype(np.int64),
            np.concatenate(found_s).astype(np.float32))


def groups_from_pairs(n: int, i: np.ndarray, j: np.ndarray) -> list[np.ndarray]:
    """Connected components of the graph whose edges are the pairs; only groups of 2 or more.

    Returns:
        Sorted index arrays, one per group, in order of their smallest member.
    """
    if len(i) == 0:
        return []
    graph = coo_matrix((np.ones(len(i), np.int8), (i, j)), shape=(n, n))
    _count, component = connected_components(graph, directed=False)
    sizes = np.bincount(component)
    groups: dict[int, list[int]] = {}
    for item in np.flatnonzero(sizes[component] > 1):
        groups.setdefault(int(component[item]), []).append(int(item))
    return [np.asarray(members, np.int64) for members in groups.values()]


def nearest_neighbours(unit: np.ndarray, k: int, *, block: int = BLOCK_ROWS
                       ) -> tuple[np.ndarray, np.ndarray]:
    """The k most similar other rows of every row, by blocked matrix products.

    Args:
        unit: [N, D] unit rows.
        k: Neighbours per row (at most N - 1).

    Returns:
        (indices int64 [N, k], similarities float32 [N, k]), most similar first.
    """
    n = len(unit)
    k = max(0, min(int(k), n - 1))
    indices = np.empty((n, k), np.int64)
    sims_out = np.empty((n, k), np.float32)
    if k == 0:
        return indices, sims_out
    for start in range(0, n, block):
        stop = min(start + block, n)
        sims = unit[start:stop] @ unit.T
        sims[np.arange(stop - start), np.arange(start, stop)] = -np.inf  # not itself
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        part_sims = np.take_along_axis(sims, part, axis=1)
        order = np.argsort(-part_sims, axis=1, kind="stable")
        indices[start:stop] = np.take_along_axis(part, order, axis=1)
        sims_out[start:stop] = np.take_along_axis(part_sims, order, axis=1)
    return indices, sims_out


def knn_distance(unit: np.ndarray, k: int) -> np.ndarray:
    """Mean cosine distance (1 - similarity) of every row to its k nearest other rows."""
    _idx, sims = nearest_neighbours(unit, k)
    if sims.shape[1] == 0:
        return np.zeros(len(unit), np.float32)
    return (1.0 - sims).mean(axis=1).astype(np.float32)


def robust_z(values: np.ndarray) -> np.ndarray:
    """(value - median) / (1.4826 * median absolute deviation): a z-score outliers cannot skew.

    When more than half the values are equal (MAD 0), the mean absolute deviation stands in.
    """
    v = np.asarray(values, np.float64)
    if len(v) == 0:
        return v
    median = np.median(v)
    spread = 1.4826 * np.median(np.abs(v - median))
    if spread <= 1e-12:
        spread = 1.2533 * np.mean(np.abs(v - median))
    return (v - median) / max(spread, 1e-12)


# ---------------------------------------------------------------------------------------
# Pixel check of candidate pairs: features alone cannot tell a heavily resized copy
# (cosine 0.77 on flower photos) from a different photo of the same kind (up to 0.93), but
# the photos' small greyscale thumbnails, compared allowing a 5-10% crop and a mirror image,
# can (copies >= 0.958, different photos <= 0.929; docs/benchmarks.md).

_THUMB_SOURCE = 64  # pixels of the square greyscale image the crops are taken from
_THUMB = 16         # side of the compared thumbnail
_CROPS = (0.05, 0.10)


def _unit_rows(rows: np.ndarray) -> np.ndarray:
    rows = rows - rows.mean(axis=1, keepdims=True)
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-6)


def _thumb(grey: np.ndarray) -> np.ndarray:
    from PIL import Image

    small = Image.fromarray(grey).resize((_THUMB, _THUMB), Image.Resampling.BOX)
    return np.asarray(small, np.float32).ravel()


def pixel_signature(path: str | Path) -> np.ndarray:
    """Unit, mean-free 16 x 16 greyscale thumbnails of a photo: whole, centre- and corner-
    cropped by 5% and 10%, each also mirrored: float32 [22, 256]; row 0 is the whole photo.

    Raises:
        core.errors.ImageError: The photo cannot be read.
    """
    from core.data import images

    rgb = images.load_resized(path, _THUMB_SOURCE).astype(np.float32)
    grey = (rgb @ np.asarray([0.299, 0.587, 0.114], np.float32)).astype(np.float32)
    s = _THUMB_SOURCE
    boxes = [(0, 0, s, s)]
    for share in _CROPS:
        c = int(round(s * share))
        boxes += [(c // 2, c // 2, s - c + c // 2, s - c + c // 2), (0, 0, s - c, s - c),
                  (c, 0, s, s - c), (0, c, s - c, s), (c, c, s, s)]
    rows = [_thumb(grey[y0:y1, x0:x1]) for x0, y0, x1, y1 in boxes]
    rows += [r.reshape(_THUMB, _THUMB)[:, ::-1].ravel() for r in rows]
    return _unit_rows(np.stack(rows)).astype(np.float32)


def pixel_match(a: np.ndarray, b: np.ndarray) -> float:
    """Highest correlation of one photo's whole thumbnail with any crop or mirror of the
    other's (both ways round): about 1 for a resized, recompressed, cropped or flipped copy."""
    return float(max((a @ b[0]).max(), (b @ a[0]).max()))


def near_duplicate_pairs(unit: np.ndarray, paths: list[str], config: AuditConfig, *,
                         check_pixels: bool = True
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Near-duplicate pairs: feature cosine >= near_duplicate_threshold, or >=
    candidate_threshold with matching pixels (pixel_match).

    Returns:
        (i, j, cosine similarity) of the pairs kept.
    """
    low = config.candidate_threshold if check_pixels else config.near_duplicate_threshold
    low = min(low, config.near_duplicate_threshold)
    pi, pj, ps = similar_pairs(unit, low)
    if not check_pixels or len(pi) == 0:
        return pi, pj, ps
    keep = ps >= config.near_duplicate_threshold
    signatures: dict[int, np.ndarray | None] = {}

    def signature(i: int) -> np.ndarray | None:
        if i not in signatures:
            try:
                signatures[i] = pixel_signature(paths[i])
            except (OSError, ImageError) as exc:
                log.warning("No pixel check for %s: %s", paths[i], exc)
                signatures[i] = None
        return signatures[i]

    for k in np.flatnonzero(~keep):
        a, b = signature(int(pi[k])), signature(int(pj[k]))
        keep[k] = a is not None and b is not None and \
            pixel_match(a, b) >= config.pixel_threshold
    return pi[keep], pj[keep], ps[keep]
