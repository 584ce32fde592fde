"""core.data.splits: split / save_split / load_split, stratified, seeded, duplicate-safe; k folds."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from core.config import SplitConfig
from core.data.datasets import INDEX_COLUMNS, ingest
from core.data.splits import SPLITS, fold_count, load_split, save_split, split, stratified_folds
from core.errors import ConfigError, DatasetError


def fake_index(counts: dict[str, int], *, dup_of: dict[str, str] | None = None) -> pd.DataFrame:
    """An index with counts[label] rows per class; dup_of maps a path to the path it copies."""
    labels = sorted(counts)
    rows = []
    for label in labels:
        for i in range(counts[label]):
            path = f"/data/{label}/{i:03d}.jpg"
            rows.append({"path": path, "label": label, "label_index": labels.index(label),
                         "sha256": hashlib.sha256(path.encode()).hexdigest(),
                         "width": 64, "height": 48, "format": "JPEG"})
    df = pd.DataFrame(rows, columns=INDEX_COLUMNS)
    for path, original in (dup_of or {}).items():
        df.loc[df["path"] == path, "sha256"] = df.loc[df["path"] == original, "sha256"].iloc[0]
    return df.astype({"path": str, "label": str, "sha256": str, "format": str})


def counts(df: pd.DataFrame) -> dict[tuple[str, str], int]:
    return df.groupby(["label", "split"]).size().to_dict()


def test_default_fractions_per_class():
    df = split(fake_index({"a": 20, "b": 40, "c": 7}))
    c = counts(df)
    assert (c[("a", "train")], c[("a", "val")], c[("a", "test")]) == (14, 3, 3)
    assert (c[("b", "train")], c[("b", "val")], c[("b", "test")]) == (28, 6, 6)
    assert (c[("c", "train")], c[("c", "val")], c[("c", "test")]) == (5, 1, 1)
    assert set(df["split"]) == set(SPLITS)


@pytest.mark.parametrize("n", [3, 4, 5, 6, 7, 10, 11, 13, 33, 101])
@pytest.mark.parametrize("fractions", [(0.7, 0.15, 0.15), (0.8, 0.1, 0.1), (0.05, 0.9, 0.05),
                                       (0.5, 0.25, 0.25), (0.9, 0.05, 0.05)])
def test_every_class_with_three_images_is_in_every_split(n, fractions):
    cfg = SplitConfig(*fractions)
    df = split(fake_index({"x": n, "y": 3}), cfg)
    c = counts(df)
    for label in ("x", "y"):
        assert all(c.get((label, s), 0) >= 1 for s in SPLITS), (label, c)
    assert sum(c[("x", s)] for s in SPLITS) == n
    if n >= 20:  # shares are respected (per-class rounding) once classes are not tiny
        assert abs(c[("x", "val")] - n * fractions[1]) <= 1
        assert abs(c[("x", "test")] - n * fractions[2]) <= 1


@pytest.mark.parametrize("small", [1, 2])
def test_class_too_small_names_the_class_and_what_to_do(small):
    with pytest.raises(DatasetError) as info:
        split(fake_index({"big": 30, "tiny": small}))
    message = str(info.value)
    assert "'tiny'" in message and "'big'" not in message
    assert "at least 3" in message and "Add images" in message


def test_duplicates_count_once_towards_the_minimum():
    df = fake_index({"a": 3, "b": 5}, dup_of={"/data/a/002.jpg": "/data/a/000.jpg"})
    with pytest.raises(DatasetError, match="'a' has 2 distinct images"):
        split(df)


def test_same_seed_same_split_other_seed_other_split():
    index = fake_index({"a": 50, "b": 50})
    first = split(index, SplitConfig(seed=7))
    pd.testing.assert_frame_equal(first, split(index, SplitConfig(seed=7)))
    other = split(index, SplitConfig(seed=8))
    assert (first["split"] != other["split"]).any()


def test_split_does_not_depend_on_row_order():
    index = fake_index({"a": 30, "b": 30})
    shuffled = index.sample(frac=1.0, random_state=3).reset_index(drop=True)
    by_path = dict(zip(split(index)["path"], split(index)["split"]))
    assert dict(zip(split(shuffled)["path"], split(shuffled)["split"])) == by_path


def test_row_order_and_input_are_preserved():
    index = fake_index({"a": 10, "b": 10})
    before = index.copy()
    df = split(index)
    pd.testing.assert_frame_equal(index, before)  # input untouched
    assert df["path"].tolist() == index["path"].tolist()
    assert list(df.columns) == INDEX_COLUMNS + ["split"]
    again = split(df)  # an existing split column is replaced
    pd.testing.assert_frame_equal(again, df)


def test_duplicates_never_straddle_splits_within_and_across_classes():
    dups = {f"/data/a/{i:03d}.jpg": "/data/a/000.jpg" for i in range(1, 6)}
    dups |= {f"/data/b/{i:03d}.jpg": "/data/a/010.jpg" for i in range(4)}  # cross-class
    index = fake_index({"a": 30, "b": 30}, dup_of=dups)
    for seed in range(20):
        df = split(index, SplitConfig(seed=seed))
        assert (df.groupby("sha256")["split"].nunique() == 1).all()


def test_stratified_on_an_ingested_dataset(tmp_path, studio_home):
    from conftest import make_class_folders

    ds = ingest(make_class_folders(tmp_path / "d", {"cats": 10, "dogs": 20}))
    df = split(ds.index)
    counts = pd.crosstab(df["label"], df["split"]).reindex(columns=list(SPLITS))
    assert counts.loc["cats"].tolist() == [6, 2, 2]  # 10 * 0.15 = 1.5 rounds half up
    assert counts.loc["dogs"].tolist() == [14, 3, 3]


def test_bad_index():
    with pytest.raises(DatasetError, match="lacks columns"):
        split(pd.DataFrame({"path": ["x"]}))
    with pytest.raises(DatasetError, match="no usable images"):
        split(fake_index({"a": 3}).iloc[:0])


def test_split_config_must_add_up():
    with pytest.raises(ConfigError, match="add up to 1"):
        SplitConfig(0.7, 0.2, 0.2)


# --- manifest -----------------------------------------------------------------------------

def test_manifest_round_trip_is_identical_including_dtypes(tmp_path):
    index = fake_index({"NA": 5, "001": 6, "null": 4, 'Café, "quoted"': 5, "日本": 3})
    index.loc[0, "path"] = "/data/NA/with,comma and\nnewline.jpg"
    df = split(index, SplitConfig(seed=3))
    path = tmp_path / "runs" / "r1" / "split.csv"
    save_split(df, path)
    loaded = load_split(path)
    pd.testing.assert_frame_equal(loaded, df)
    assert loaded["label"].tolist().count("NA") == 5  # not parsed as missing
    assert loaded["label_index"].dtype == "int64" and loaded["width"].dtype == "int64"
    assert not list(path.parent.glob("*.tmp"))


def test_manifest_of_an_ingested_dataset_round_trips(small_dataset, tmp_path, studio_home):
    df = split(ingest(small_dataset).index)
    save_split(df, tmp_path / "s.csv")
    pd.testing.assert_frame_equal(load_split(tmp_path / "s.csv"), df)


def test_manifest_errors(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        load_split(tmp_path / "missing.csv")
    with pytest.raises(DatasetError, match="no split column"):
        save_split(fake_index({"a": 3}), tmp_path / "x.csv")
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DatasetError, match="lacks columns"):
        load_split(tmp_path / "other.csv")


def test_named_groups_are_kept_in_a_group_column_that_round_trips(tmp_path):
    index = fake_index({"a": 6, "b": 6}, dup_of={"/data/b/005.jpg": "/data/b/004.jpg"})
    groups = {"/data/a/000.jpg": "near/0", "/data/a/001.jpg": "near/0"}
    df = split(index, SplitConfig(seed=0), groups=groups)
    by_path = df.set_index("path")["group"]
    assert by_path["/data/a/000.jpg"] == by_path["/data/a/001.jpg"]
    assert by_path["/data/b/004.jpg"] == by_path["/data/b/005.jpg"]  # identical content
    assert by_path.nunique() == len(df) - 2
    save_split(df, tmp_path / "split.csv")
    pd.testing.assert_frame_equal(load_split(tmp_path / "split.csv"), df)
    assert "group" not in split(index, SplitConfig(seed=0)).columns


def test_folds_are_stratified_and_keep_groups_together() -> None:
    y = np.array([0] * 30 + [1] * 20)
    groups = np.array([f"g{i // 3}" for i in range(50)])  # threes, never across classes
    folds = stratified_folds(y, 5, seed=0, groups=groups)
    for name in np.unique(groups):
        assert len(set(folds[groups == name])) == 1
    for fold in range(5):
        counts = np.bincount(y[folds == fold], minlength=2)
        assert 3 <= counts[0] <= 9 and 3 <= counts[1] <= 6
    assert fold_count(y, groups, 5) == 5
    assert fold_count(np.array([0, 0, 1, 1, 1]), None, 5) == 2
