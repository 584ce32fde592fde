"""Stratified, seeded, duplicate-safe train/val/test splits, their CSV manifest, and k folds."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

from core import files
from core.config import MIN_IMAGES_PER_CLASS, SplitConfig
from core.errors import DatasetError

SPLIT_COLUMN = "split"
SPLITS = ("train", "val", "test")
_SPLIT_DTYPES = {
    "path": str, "label": str, "label_index": "int64", "sha256": str, "width": "int64",
    "height": "int64", "format": str, SPLIT_COLUMN: str, "group": str,
}
# Column naming each row's group when split() was given groups: the head search
# (core.training.head_search) keeps a group in one cross-validation fold too.
GROUP_COLUMN = "group"


def _split_sizes(n: int, config: SplitConfig) -> tuple[int, int, int]:
    """(train, val, test) counts for n items; each at least 1 when n >= MIN_IMAGES_PER_CLASS."""
    n_val = max(1, math.floor(n * config.val_fraction + 0.5))
    n_test = max(1, math.floor(n * config.test_fraction + 0.5))
    while n - n_val - n_test < 1:
        if n_val >= n_test and n_val > 1:
            n_val -= 1
        elif n_test > 1:
            n_test -= 1
        else:  # pragma: no cover - impossible for n >= 3
            break
    return n - n_val - n_test, n_val, n_test


def split(
    index: pd.DataFrame, config: SplitConfig = SplitConfig(),
    groups: dict[str, str] | None = None,
) -> pd.DataFrame:
    """Assigns each image to train, val or test: stratified by class, seeded.

    Identical files (same sha256) always land in the same split, even across classes, and
    so do the photos of one group (an audit's near-duplicates: core.audit.choices.split_groups).
    Every class needs at least MIN_IMAGES_PER_CLASS (3) distinct images so it appears in
    every split; ingestion reports a smaller class as an error by the same rule.

    Args:
        index: A dataset index (INDEX_COLUMNS at least "path", "label", "sha256").
        config: Shares and seed.
        groups: {path: group name}: photos sharing a group name move together.

    Returns:
        A copy of index (same row order, fresh RangeIndex) with a "split" column holding
        "train", "val" or "test", and, when groups were given, a "group" column naming
        each row's group (identical files and named groups joined).

    Raises:
        DatasetError: When the index is empty, lacks columns, or a class is too small.
    """
    missing = {"path", "label", "sha256"} - set(index.columns)
    if missing:
        raise DatasetError(
            f"The index lacks columns {sorted(missing)}; build it with datasets.ingest()."
        )
    if index.empty:
        raise DatasetError("The dataset has no usable images to split; add images first.")
    df = index.drop(columns=[SPLIT_COLUMN, GROUP_COLUMN], errors="ignore").reset_index(drop=True)
    # A group is every row sharing one file content; it belongs to the class of its
    # first row (by path) and moves as a unit, so duplicates never straddle splits.
    keys = _group_keys(df, groups) if groups else df["sha256"].astype(str)
    order = df.assign(_group=keys).sort_values("path", kind="stable")
    group_class: dict[str, str] = {}
    for sha, label in zip(order["_group"], order["label"]):
        group_class.setdefault(sha, label)
    groups_by_class: dict[str, list[str]] = defaultdict(list)
    for sha, label in group_class.items():  # insertion order = path order
        groups_by_class[label].append(sha)

    too_small = [(c, len(g)) for c, g in sorted(groups_by_class.items())
                 if len(g) < MIN_IMAGES_PER_CLASS]
    if too_small:
        detail = ", ".join(f"'{c}' has {n} distinct image{'' if n == 1 else 's'}"
                           for c, n in too_small)
        raise DatasetError(
            f"Every class needs at least {MIN_IMAGES_PER_CLASS} distinct images to appear in "
            "train, validation and "
            f"test, but {detail}. Add images to those classes or remove their folders."
        )
    rng = np.random.default_rng(config.seed)
    assignment: dict[str, str] = {}
    for label in sorted(groups_by_class):
        shas = groups_by_class[label]
        order_idx = rng.permutation(len(shas))
        n_train, n_val, _n_test = _split_sizes(len(shas), config)
        for rank, i in enumerate(order_idx):
            name = "train" if rank < n_train else "val" if rank < n_train + n_val else "test"
            assignment[shas[i]] = name
    df[SPLIT_COLUMN] = pd.Series([assignment[s] for s in keys], dtype=str)
    if groups:
        df[GROUP_COLUMN] = keys.astype(str).to_numpy()
    return df


def _group_keys(df: pd.DataFrame, groups: dict[str, str]) -> pd.Series:
    """One key per row joining rows of equal content and rows of one named group (the
    connected components of both relations), named after a sha256 of the component."""
    parent: dict[str, str] = {}

    def find(node: str) -> str:
        while parent.setdefault(node, node) != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for path, sha in zip(df["path"].astype(str), df["sha256"].astype(str)):
        name = groups.get(path)
        if name is not None:
            a, b = find(sha), find(f"group:{name}")
            if a != b:
                parent[max(a, b)] = min(a, b)  # "group:" sorts after hex: a sha is the root
    return pd.Series([find(sha) for sha in df["sha256"].astype(str)], index=df.index)

def save_split(df: pd.DataFrame, path: str | Path) -> None:
    """Writes a split manifest as UTF-8 CSV, atomically (no half-written file on a crash).

    Args:
        df: The output of split().
        path: CSV file to write; parent folders are created.

    Raises:
        DatasetError: When df has no "split" column.
    """
    if SPLIT_COLUMN not in df.columns:
        raise DatasetError("This table has no split column; make it with splits.split().")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    files.write_text_atomic(target, df.to_csv(index=False))


def load_split(path: str | Path) -> pd.DataFrame:
    """Reads a manifest written by save_split back to the identical DataFrame.

    Class names like "NA", "null" or "001" stay strings; column dtypes are restored.

    Args:
        path: CSV file written by save_split.

    Returns:
        The split DataFrame, equal (values and dtypes) to the one saved.

    Raises:
        DatasetError: When the file is missing, damaged, or lacks the split columns.
    """
    source = Path(path)
    if not source.is_file():
        raise DatasetError(f"Split manifest {source} not found; make a split first.")
    header = pd.read_csv(source, nrows=0, encoding="utf-8").columns
    dtypes = {c: t for c, t in _SPLIT_DTYPES.items() if c in header}
    try:
        # No NA parsing: a class may well be called "NA" or "null".
        df = pd.read_csv(source, dtype=dtypes, keep_default_na=False, na_filter=False,
                         encoding="utf-8")
    except (ValueError, pd.errors.ParserError) as exc:
        raise DatasetError(f"Split manifest {source} is damaged ({exc}); make the split again.")\
            from exc
    missing = {"path", "label", SPLIT_COLUMN} - set(df.columns)
    if missing:
        raise DatasetError(
            f"Split manifest {source} lacks columns {sorted(missing)}; make the split again."
        )
    return df


# --------------------------------------------------------------------------- k folds


def fold_count(labels: np.ndarray, groups: np.ndarray | None, wanted: int) -> int:
    """Folds possible: at most `wanted`, at most the number of groups of the rarest class."""
    labels = np.asarray(labels)
    groups = np.arange(len(labels)) if groups is None else np.asarray(groups)
    per_class = [len(np.unique(groups[labels == c])) for c in np.unique(labels)]
    return int(min([wanted, *per_class])) if per_class else 0


def stratified_folds(labels: np.ndarray, k: int, seed: int,
                     groups: np.ndarray | None = None) -> np.ndarray:
    """The fold (0..k-1) of each row: classes spread evenly, each group in one fold.

    Groups (identical photos, an audit's near-duplicates) are dealt, largest first within
    each class in a seeded random order, to the fold holding fewest rows of that class.
    """
    labels = np.asarray(labels)
    groups = np.arange(len(labels)) if groups is None else np.asarray(groups)
    names, inverse = np.unique(groups, return_inverse=True)
    n_classes = int(labels.max()) + 1 if len(labels) else 0
    group_label = np.zeros(len(names), np.int64)
    group_size = np.bincount(inverse, minlength=len(names))
    for g in range(len(names)):  # a group's class: its most common label
        group_label[g] = np.bincount(labels[inverse == g], minlength=n_classes).argmax()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(names))
    order = order[np.lexsort((-group_size[order], group_label[order]))]
    per_class = np.zeros((k, n_classes), np.int64)
    sizes = np.zeros(k, np.int64)
    fold_of_group = np.zeros(len(names), np.int64)
    for g in order:
        c = group_label[g]
        fold = min(range(k), key=lambda f: (per_class[f, c], sizes[f], f))
        fold_of_group[g] = fold
        per_class[fold, c] += group_size[g]
        sizes[fold] += group_size[g]
    return fold_of_group[inverse]
