"""The dataset audit's plumbing on synthetic features: planted label flips, near-duplicate
groups, outliers, choices, the split that keeps groups together, and the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import make_class_folders
from PIL import Image, ImageOps
from test_cli import run_cli

from core.audit import choices as audit_choices
from core.audit import findings as audit
from core.audit import near_duplicates as nd
from core.config import AuditConfig, SplitConfig
from core.data import datasets, splits
from core.errors import ConfigError

CLASSES = {"ants": 30, "bees": 30, "wasps": 30}
FLIPPED = [3, 40, 75]  # rows whose folder (label) is not the class their features come from
COPIES = [(10, 11), (33, 70)]  # near-identical features; the second pair spans classes
OUTLIER = 50


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A 90-photo dataset and features with planted problems (known rows)."""
    root = tmp_path_factory.mktemp("audit")
    data = make_class_folders(root / "data", CLASSES, size=24)
    dataset = datasets.ingest(data, home=root / "home")
    y = dataset.index["label_index"].to_numpy()
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, (3, 64))
    truth = y.copy()
    for row in FLIPPED:
        truth[row] = (y[row] + 1) % 3
    x = centres[truth] * 2 + rng.normal(0, 1, (len(y), 64))
    for a, b in COPIES:
        x[b] = x[a] + rng.normal(0, 0.01, 64)
    x[OUTLIER] = -centres[truth[OUTLIER]] * 2 + rng.normal(0, 1, 64)  # unlike every class
    home = root / "home"
    result = audit.audit(dataset, features=x.astype(np.float32), home=home,
                         check_pixels=False)
    names = audit.relative_names(dataset.index, dataset.root)
    return {"dataset": dataset, "x": x, "home": home, "result": result, "names": names}


def test_planted_label_flips_are_found_with_their_true_class(planted: dict) -> None:
    result, names = planted["result"], planted["names"]
    flagged = {item["file"]: item for item in result.label_issues}
    for row in FLIPPED:
        assert names[row] in flagged
    labels = planted["dataset"].classes
    given = planted["dataset"].index["label_index"].to_numpy()
    for row in FLIPPED:
        assert flagged[names[row]]["suggested"] == labels[(given[row] + 1) % 3]
    scores = [item["score"] for item in result.label_issues]
    assert scores == sorted(scores, reverse=True)
    assert 0 < result.summary["estimated_wrong_label_share"] < 0.2


def test_near_duplicate_groups_and_label_conflicts(planted: dict) -> None:
    result, names = planted["result"], planted["names"]
    groups = {tuple(g["files"]): g for g in result.near_duplicates}
    same = tuple(sorted([names[10], names[11]]))
    cross = tuple(sorted([names[33], names[70]]))
    assert set(groups) == {same, cross}
    assert groups[cross]["cross_class"] and not groups[same]["cross_class"]
    assert all(g["similarity"] > 0.99 for g in groups.values())
    assert result.summary["near_duplicate_groups"] == 2


def test_the_outlier_comes_first(planted: dict) -> None:
    outliers = planted["result"].outliers
    assert outliers and outliers[0]["file"] == planted["names"][OUTLIER]
    assert outliers[0]["label"] == planted["dataset"].index["label"].iloc[OUTLIER]


def test_json_shape_and_saved_with_the_dataset(planted: dict) -> None:
    data = planted["result"].to_dict()
    assert list(data) == ["label_issues", "near_duplicates", "outliers", "summary"]
    assert set(data["label_issues"][0]) == {"file", "given", "suggested", "score"}
    assert set(data["near_duplicates"][0]) == {"files", "similarity", "cross_class",
                                               "spans_splits"}
    assert set(data["outliers"][0]) == {"file", "label", "score"}
    json.dumps(data, allow_nan=False)
    loaded = audit.load_audit(planted["dataset"], planted["home"])
    assert loaded is not None and loaded.to_dict() == json.loads(json.dumps(data))


def test_split_keeps_near_duplicate_groups_together(planted: dict) -> None:
    dataset, result = planted["dataset"], planted["result"]
    groups = audit_choices.split_groups(dataset, result)
    assert len(groups) == 4
    for seed in range(15):
        df = splits.split(dataset.index, SplitConfig(seed=seed), groups=groups)
        where = dict(zip(df["path"], df["split"]))
        for group in result.near_duplicates:
            assert len({where[str(dataset.root / f)] for f in group["files"]}) == 1
    # Without the groups, some seed splits a pair: the test would notice a split ignoring them.
    apart = [seed for seed in range(15)
             if any(len({dict(zip(d["path"], d["split"]))[str(dataset.root / f)]
                         for f in g["files"]}) > 1
                    for d in [splits.split(dataset.index, SplitConfig(seed=seed))]
                    for g in result.near_duplicates)]
    assert apart


def test_choices_make_a_corrected_index_and_survive_a_reload(planted: dict) -> None:
    dataset, home, names = planted["dataset"], planted["home"], planted["names"]
    labels = dataset.classes
    audit_choices.set_choice(dataset, names[FLIPPED[0]], "move", labels[2], home=home)
    audit_choices.set_choice(dataset, names[OUTLIER], "exclude", home=home)
    audit_choices.set_choice(dataset, names[FLIPPED[1]], "exclude", home=home)
    audit_choices.set_choice(dataset, names[FLIPPED[1]], "keep", home=home)
    choices = audit_choices.load_choices(dataset, home)
    assert choices == {names[FLIPPED[0]]: {"action": "move", "label": labels[2]},
                       names[OUTLIER]: {"action": "exclude"}}
    fixed = audit_choices.corrected_index(dataset, choices)
    assert len(fixed) == len(dataset.index) - 1
    moved = fixed[fixed["path"] == dataset.index["path"].iloc[FLIPPED[0]]]
    assert moved["label"].item() == labels[2] and moved["label_index"].item() == 2
    assert Path(dataset.index["path"].iloc[OUTLIER]).is_file()  # files never touched
    record = audit_choices.audit_record(planted["result"], choices)
    assert record["excluded"] == 1 and record["moved"] == 1
    assert record["audit_id"] == planted["result"].audit_id
    with pytest.raises(datasets.DatasetError):
        audit_choices.set_choice(dataset, names[0], "move", "hornets", home=home)


def test_similar_pairs_matches_a_brute_force_search() -> None:
    rng = np.random.default_rng(1)
    x = nd.normalize(rng.normal(0, 1, (300, 8)))
    i, j, s = nd.similar_pairs(x, 0.9, block=64)
    full = x @ x.T
    want = {(a, b) for a, b in zip(*np.nonzero(np.triu(full >= 0.9, 1)))}
    assert set(zip(i.tolist(), j.tolist())) == want
    assert np.allclose(s, full[i, j], atol=1e-5)
    groups = nd.groups_from_pairs(300, i, j)
    assert sum(len(g) for g in groups) == len(set(i.tolist()) | set(j.tolist()))


def test_pixel_check_tells_copies_from_different_photos(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    base = Image.fromarray(rng.integers(0, 255, (40, 60, 3), np.uint8)).resize((240, 160))
    other = Image.fromarray(rng.integers(0, 255, (40, 60, 3), np.uint8)).resize((240, 160))
    base.save(tmp_path / "a.png")
    other.save(tmp_path / "other.png")
    base.resize((120, 80)).save(tmp_path / "small.jpg", quality=50)
    ImageOps.mirror(base).save(tmp_path / "flip.png")
    base.crop((12, 8, 240, 160)).save(tmp_path / "crop.png")
    sig = {p.stem: nd.pixel_signature(p) for p in tmp_path.iterdir()}
    for copy in ("small", "flip", "crop"):
        assert nd.pixel_match(sig["a"], sig[copy]) >= 0.95, copy
    assert nd.pixel_match(sig["a"], sig["other"]) < 0.5


def test_audit_config_rejects_out_of_bounds_values() -> None:
    with pytest.raises(ConfigError):
        AuditConfig(folds=1)


def test_cli_audit_json_and_unusable_exit_code(tmp_path: Path) -> None:
    data = make_class_folders(tmp_path / "data", {"cats": 8, "dogs": 8}, size=32)
    done = run_cli("audit", str(data), "--weights", "none", "--json", home=tmp_path / "h")
    out = json.loads(done.stdout)
    assert list(out) == ["label_issues", "near_duplicates", "outliers", "summary"]
    assert out["summary"]["images"] == 16
    empty = tmp_path / "empty"
    (empty / "cats").mkdir(parents=True)
    done = run_cli("audit", str(empty), "--json", home=tmp_path / "h", check=False)
    assert done.returncode == 2


def test_audit_text_says_which_audit_the_split_respected(planted: dict) -> None:
    assert audit_choices.audit_text({"name": "x"}).startswith("Not audited")
    record = audit_choices.audit_record(planted["result"], {
        planted["names"][0]: {"action": "exclude"}})
    text = audit_choices.audit_text({"audit": record})
    assert planted["result"].audit_id in text
    assert "2 near-duplicate groups" in text and "1 photos excluded" in text
