"""core.data.datasets.ingest: folders, duplicates, the report and scale (zips: test_uploads.py)."""

from __future__ import annotations

import json
import tracemalloc
import unicodedata
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_class_folders, require_asset
from dataset_helpers import img_bytes, rejected, two_classes, write_files, zip_bytes
from PIL import Image

from core.config import IngestConfig
from core.data import datasets
from core.data.datasets import INDEX_COLUMNS, Dataset, ValidationReport, ingest
from core.errors import ConfigError, DatasetError
from core.progress import ProgressEvent

# --- folders -----------------------------------------------------------------------------

def test_folder_gives_index_and_clean_report(small_dataset, studio_home):
    ds = ingest(small_dataset)
    assert isinstance(ds, Dataset) and ds.root == small_dataset.resolve()
    assert ds.report.classes == {"cats": 12, "dogs": 12, "fish": 12}
    assert ds.report.usable and not ds.report.warnings and not ds.report.rejected
    assert ds.classes == ["cats", "dogs", "fish"]
    idx = ds.index
    assert list(idx.columns) == INDEX_COLUMNS and len(idx) == 36
    assert idx["path"].tolist() == sorted(idx["path"])
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in idx["path"])
    assert (idx["label_index"] == idx["label"].map(ds.classes.index)).all()
    assert idx["label_index"].dtype == np.int64 and idx["width"].dtype == np.int64
    assert set(idx["format"]) == {"PNG"} and set(idx["width"]) == {48}
    assert idx["sha256"].str.len().eq(64).all() and idx["sha256"].is_unique
    assert not (studio_home / "uploads").exists()  # folders are read in place


def test_images_in_deeper_subfolders_belong_to_their_class(tmp_path, studio_home):
    files = two_classes(2)
    files["a/summer/2019/x.png"] = img_bytes(0, 50)
    files["a/winter/y.png"] = img_bytes(0, 51)
    ds = ingest(write_files(tmp_path / "d", files))
    assert ds.report.classes == {"a": 4, "b": 2}
    assert (ds.index["label"] == "a").sum() == 4


def test_formats_by_content_whatever_the_extension(tmp_path, studio_home):
    files = {
        "a/jpeg_named.png": img_bytes(0, 1, fmt="JPEG"),
        "a/png_named.JPG": img_bytes(0, 2, fmt="PNG"),
        "a/bmp_no_ext": img_bytes(0, 3, fmt="BMP"),
        "b/webp.TIFF": img_bytes(1, 1, fmt="WEBP"),
        "b/tiff.gif": img_bytes(1, 2, fmt="TIFF"),
        "b/gif.bmp": img_bytes(1, 3, fmt="GIF"),
    }
    ds = ingest(write_files(tmp_path / "d", files))
    assert ds.report.rejected == [] and ds.report.classes == {"a": 3, "b": 3}
    formats = dict(zip(ds.index["path"].map(lambda p: Path(p).name), ds.index["format"]))
    assert formats == {"jpeg_named.png": "JPEG", "png_named.JPG": "PNG", "bmp_no_ext": "BMP",
                       "webp.TIFF": "WEBP", "tiff.gif": "TIFF", "gif.bmp": "GIF"}


def test_bad_files_are_rejected_with_reasons_never_crash(tmp_path, studio_home):
    good = two_classes(3)
    jpeg = img_bytes(0, 9, size=90, fmt="JPEG")
    bad = {
        "a/empty.jpg": b"",
        "a/truncated.jpg": jpeg[: len(jpeg) // 2],
        "a/notes.png": b"not a photo at all\n" * 20,
        "b/tiny.png": img_bytes(1, 9, size=8),
        "b/huge.png": img_bytes(1, 10, size=120),
    }
    ds = ingest(write_files(tmp_path / "d", {**good, **bad}),
                config=IngestConfig(max_pixels=10_000))
    reasons = rejected(ds.report)
    assert set(reasons) == set(bad)
    assert "empty file" in reasons["a/empty.jpg"]
    assert "truncated" in reasons["a/truncated.jpg"]
    assert reasons["a/notes.png"].startswith("not an image")
    assert reasons["b/tiny.png"].startswith("too small")
    assert reasons["b/huge.png"].startswith("too large")
    assert ds.report.classes == {"a": 3, "b": 3} and len(ds.index) == 6


def test_ignored_system_and_hidden_files_are_counted(tmp_path, studio_home):
    files = two_classes(3)
    junk = {
        ".DS_Store": b"x", "a/.DS_Store": b"x", "a/Thumbs.db": b"x", "b/THUMBS.DB": b"x",
        "b/desktop.ini": b"x", "a/.ipynb_checkpoints/0-checkpoint.png": img_bytes(0, 20),
        "a/.hidden.png": img_bytes(0, 21), "b/.cache/one.png": img_bytes(1, 22),
        "b/.cache/two.png": img_bytes(1, 23), "__MACOSX/a/._0.png": b"\x00\x05\x16\x07",
        ".git/config": b"[core]",
    }
    ds = ingest(write_files(tmp_path / "d", {**files, **junk}))
    assert ds.report.ignored == len(junk)
    assert ds.report.classes == {"a": 3, "b": 3}
    assert ds.report.rejected == [] and ds.report.unassigned == []


def test_top_level_images_are_reported_not_dropped(tmp_path, studio_home):
    files = {**two_classes(3), "loose.jpg": img_bytes(2, 1, fmt="JPEG"),
             "IMG_2.png": img_bytes(2, 2), "README.txt": b"my flowers"}
    ds = ingest(write_files(tmp_path / "d", files))
    assert ds.report.unassigned == ["IMG_2.png", "loose.jpg"]
    assert ds.report.ignored == 1  # README.txt
    assert any("top level" in w and "class folder" in w for w in ds.report.warnings)
    assert ds.report.usable and len(ds.index) == 6


def test_only_loose_images_says_how_to_lay_out_folders(tmp_path, studio_home):
    files = {f"{i}.png": img_bytes(0, i) for i in range(3)}
    ds = ingest(write_files(tmp_path / "d", files))
    assert not ds.report.usable and len(ds.report.unassigned) == 3
    assert "one folder per class" in ds.report.errors[0]


def test_nfd_folder_names_give_nfc_labels(tmp_path, studio_home):
    nfd = unicodedata.normalize("NFD", "Café")
    ds = ingest(write_files(tmp_path / "d", {f"{nfd}/{i}.png": img_bytes(0, i) for i in range(3)}
                            | {f"b/{i}.png": img_bytes(1, i) for i in range(3)}))
    assert "Café" in ds.report.classes and "Café" in ds.classes  # NFC spelling
    assert all(Path(p).exists() for p in ds.index["path"])


# --- duplicates ----------------------------------------------------------------------------

def test_duplicates_within_a_class_are_kept_once(tmp_path, studio_home):
    files = two_classes(3)
    files["a/copy_of_1.png"] = files["a/1.png"]
    files["a/zz/again_1.png"] = files["a/1.png"]
    ds = ingest(write_files(tmp_path / "d", files))
    assert ds.report.duplicates == [{
        "files": ["a/1.png", "a/copy_of_1.png", "a/zz/again_1.png"], "cross_class": False,
        "kept": ["a/1.png"],
    }]
    assert ds.report.classes == {"a": 3, "b": 3} and ds.index["sha256"].is_unique


def test_cross_class_duplicates_are_label_conflicts_left_out(tmp_path, studio_home):
    files = two_classes(3)
    files["b/same_as_a0.png"] = files["a/0.png"]
    ds = ingest(write_files(tmp_path / "d", files))
    assert ds.report.duplicates == [{"files": ["a/0.png", "b/same_as_a0.png"],
                                     "cross_class": True, "kept": []}]
    assert ds.report.classes == {"a": 2, "b": 3}
    assert any("more than one class" in w for w in ds.report.warnings)
    kept = ingest(write_files(tmp_path / "d", files),
                  config=IngestConfig(drop_cross_class_duplicates=False))
    assert kept.report.duplicates[0]["kept"] == ["a/0.png", "b/same_as_a0.png"]
    assert kept.report.classes == {"a": 3, "b": 4}


# --- whole-dataset errors and warnings -------------------------------------------------------

def test_one_class_is_an_error_saying_what_to_do(tmp_path, studio_home):
    ds = ingest(make_class_folders(tmp_path / "d", {"only": 12}))
    assert ds.report.errors == [(
        "Only one class folder found ('only'). Add at least one more class folder with "
        "images: a classifier needs 2 or more classes."
    )]


def test_too_few_usable_images_in_a_class(tmp_path, studio_home):
    root = make_class_folders(tmp_path / "d", {"a": 12, "b": 1})
    (root / "empty").mkdir()
    (root / "b" / "broken.png").write_bytes(b"")
    ds = ingest(root)
    assert not ds.report.usable
    assert any("'b' has 1 usable image; add at least 2 more" in e for e in ds.report.errors)
    assert any("'empty' has 0 usable images; add at least 3 more" in e
               for e in ds.report.errors)


def test_inspect_and_split_apply_one_minimum_class_size(tmp_path, studio_home):
    """A class of 2 photos is refused by both; 3 distinct photos pass both (issue 20 #10)."""
    from core.config import MIN_IMAGES_PER_CLASS
    from core.data import splits

    small = ingest(make_class_folders(tmp_path / "d", {"a": 12, "b": MIN_IMAGES_PER_CLASS - 1}))
    assert not small.report.usable
    assert any("'b' has 2 usable images; add at least 1 more" in e
               for e in small.report.errors)
    with pytest.raises(DatasetError, match=f"at least {MIN_IMAGES_PER_CLASS} distinct"):
        splits.split(small.index)
    enough = ingest(make_class_folders(tmp_path / "e", {"a": 12, "b": MIN_IMAGES_PER_CLASS}))
    assert enough.report.usable
    assert set(splits.split(enough.index).query("label == 'b'")["split"]) == {
        "train", "val", "test"}
    with pytest.raises(ConfigError, match="at least 3"):
        IngestConfig(min_images_per_class=2)
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    assert f"at least {MIN_IMAGES_PER_CLASS} usable photos per class" in readme


def test_small_class_and_imbalance_warnings(tmp_path, studio_home):
    ds = ingest(make_class_folders(tmp_path / "d", {"big": 36, "small": 6}))
    assert ds.report.usable
    assert any("'small' has only 6 images" in w for w in ds.report.warnings)
    assert any("imbalanced" in w and "6.0:1" in w for w in ds.report.warnings)
    balanced = ingest(make_class_folders(tmp_path / "e", {"x": 25, "y": 5}))
    assert not any("imbalanced" in w for w in balanced.report.warnings)  # exactly 1:5


def test_min_images_per_class_is_configurable(tmp_path, studio_home):
    root = make_class_folders(tmp_path / "d", {"a": 4, "b": 4})
    assert ingest(root).report.usable
    strict = ingest(root, config=IngestConfig(min_images_per_class=5))
    assert len(strict.report.errors) == 2


# --- report, progress, scale -------------------------------------------------------------

def test_report_round_trips_through_json(tmp_path, studio_home):
    files = {**two_classes(3), "a/copy.png": img_bytes(0, 0), "b/bad.png": b"",
             "loose.png": img_bytes(3, 3), ".DS_Store": b"x"}
    report = ingest(write_files(tmp_path / "d", files)).report
    assert report.rejected and report.duplicates and report.unassigned and report.ignored
    data = json.loads(report.to_json())
    assert data["usable"] is True and data["images"] == 6
    assert ValidationReport.from_dict(data) == report
    assert ValidationReport.from_dict(report.to_dict()) == report


def test_progress_is_reported(tmp_path, studio_home):
    events: list[ProgressEvent] = []
    data = zip_bytes(two_classes(4))
    ingest(data, on_event=events.append)
    seen = [(e.phase, e.step, e.total_steps) for e in events]
    assert {phase for phase, _, _ in seen} == {"unpacking", "checking photos"}
    assert seen[-1] == ("checking photos", 8, 8)
    assert all(isinstance(e, ProgressEvent) and e.message for e in events)


def test_thousands_of_images_with_worker_processes_and_flat_memory(tmp_path, studio_home):
    rng = np.random.default_rng(0)
    root = tmp_path / "many"
    n_per_class = 1000
    for c in ("a", "b", "c"):
        (root / c).mkdir(parents=True)
        pixels = rng.integers(0, 256, (n_per_class, 16, 16, 3), dtype=np.uint8)
        for i in range(n_per_class):
            Image.fromarray(pixels[i]).save(root / c / f"{i:05d}.png")
    (root / "a" / "00000.png").write_bytes(b"")  # one bad file among thousands
    tracemalloc.start()
    try:
        ds = ingest(root, config=IngestConfig(workers=2))
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert ds.report.classes == {"a": 999, "b": 1000, "c": 1000}
    assert rejected(ds.report) == {"a/00000.png": "empty file (0 bytes); re-export or remove it"}
    assert len(ds.index) == 2999 and ds.index["sha256"].is_unique
    # Python-level allocations in this process stay small: no pixels or file bytes kept.
    assert peak < 40 * 1024**2, f"peak traced memory {peak / 1e6:.1f} MB"


@pytest.mark.real
def test_real_flower_photos_tiny_all_usable(studio_home):
    root = require_asset("datasets/flower_photos_tiny")
    ds = ingest(root)
    assert ds.report.classes == {c: 100 for c in
                                 ["daisy", "dandelion", "roses", "sunflowers", "tulips"]}
    assert ds.report.usable and ds.report.rejected == [] and ds.report.duplicates == []
    assert ds.report.warnings == [] and ds.report.unassigned == []
    assert set(ds.index["format"]) == {"JPEG"} and len(ds.index) == 500
    assert (ds.index["width"] >= 100).all()


def test_index_dataframe_types_are_stable(small_dataset, studio_home):
    idx = ingest(small_dataset).index
    expected = pd.DataFrame({c: idx[c].astype(t) for c, t in
                             {"path": str, "label": str, "label_index": "int64",
                              "sha256": str, "width": "int64", "height": "int64",
                              "format": str}.items()})
    pd.testing.assert_frame_equal(idx, expected)


def _die_in_worker(path: str, **_limits) -> None:
    """Stands in for images.probe_file: a decoder crash that kills the worker process."""
    import os

    os._exit(3)


def test_a_crashed_worker_becomes_a_clear_error(tmp_path, studio_home, monkeypatch):
    files = {f"{c}/{i}.png": b"x" for c in "ab" for i in range(datasets.POOL_MIN_FILES)}
    root = write_files(tmp_path / "d", files)
    monkeypatch.setattr(datasets.images, "probe_file", _die_in_worker)
    with pytest.raises(DatasetError, match="worker process .* died"):
        ingest(root, config=IngestConfig(workers=2))


def test_empty_folder_and_empty_zip_say_how_to_lay_out_folders(tmp_path, studio_home):
    (tmp_path / "empty").mkdir()
    for source in (tmp_path / "empty", zip_bytes({})):
        ds = ingest(source)
        assert not ds.report.usable and ds.index.empty and ds.classes == []
        assert "one folder per class" in ds.report.errors[0]
        assert list(ds.index.columns) == INDEX_COLUMNS


# --- special files and names (issue 20 #1, #4) ----------------------------------------------

def _finishes(fn, seconds: float = 30.0):
    """Runs fn in a thread; fails (instead of hanging the suite) when it does not return."""
    import threading

    out: dict = {}

    def run() -> None:
        try:
            out["value"] = fn()
        except BaseException as exc:
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s (blocked on a file?)"
    if "error" in out:
        raise out["error"]
    return out["value"]


def test_pipes_and_devices_are_rejected_unread(tmp_path, studio_home):
    import os

    from core.data import images

    root = make_class_folders(tmp_path / "d", {"a": 4, "b": 4})
    os.mkfifo(root / "a" / "pipe.jpg")
    (root / "b" / "zero.jpg").symlink_to("/dev/zero")
    (root / "b" / "null.png").symlink_to("/dev/null")
    ds = _finishes(lambda: ingest(root))
    reasons = rejected(ds.report)
    assert set(reasons) == {"a/pipe.jpg", "b/zero.jpg", "b/null.png"}
    assert all(r == images.NOT_REGULAR_FILE for r in reasons.values())
    assert ds.report.classes == {"a": 4, "b": 4}
    # The probe itself (what worker processes run) refuses them too, without blocking.
    for name in ("a/pipe.jpg", "b/zero.jpg"):
        probe = _finishes(lambda name=name: images.probe_file(str(root / name)))
        assert not probe.ok and probe.reason == images.NOT_REGULAR_FILE


def test_files_over_the_size_limit_are_rejected_unread(tmp_path, studio_home):
    from core.data import images

    root = make_class_folders(tmp_path / "d", {"a": 4, "b": 4})
    limit = max(1024, max(p.stat().st_size for p in root.rglob("*.png")))
    (root / "a" / "huge.png").write_bytes(img_bytes(0, 9) + b"\0" * limit)
    ds = ingest(root, config=IngestConfig(max_file_bytes=limit))
    assert "too large a file" in rejected(ds.report)["a/huge.png"]
    assert ds.report.classes == {"a": 4, "b": 4}
    probe = images.probe_file(str(root / "a" / "huge.png"), max_bytes=limit)
    assert not probe.ok and f"over the limit of {limit:,} bytes" in probe.reason


def test_names_that_are_not_utf8_are_rejected_with_a_reason(tmp_path, studio_home):
    import os

    root = make_class_folders(tmp_path / "d", {"a": 4, "b": 4})
    data = img_bytes(0, 7)
    with open(os.path.join(os.fsencode(root / "a"), b"caf\xe9.png"), "wb") as fh:
        fh.write(data)
    bad_class = os.path.join(os.fsencode(root), b"\xff\xfeclass")
    os.mkdir(bad_class)
    for i in range(3):
        with open(os.path.join(bad_class, f"{i}.png".encode()), "wb") as fh:
            fh.write(img_bytes(2, i))
    ds = ingest(root)
    reasons = rejected(ds.report)
    assert "not valid UTF-8" in reasons["a/caf\ufffd.png"]
    assert sum("class folder's name is not valid UTF-8" in r for r in reasons.values()) == 3
    assert ds.report.classes == {"a": 4, "b": 4} and ds.report.usable
    ds.report.to_json().encode("utf-8")  # storable as it is
    ds.index.to_csv(tmp_path / "index.csv")
    inner = os.path.join(os.fsencode(tmp_path), b"d\xe9ta")
    os.mkdir(inner)
    with pytest.raises(DatasetError, match="not valid UTF-8"):
        ingest(os.fsdecode(inner))


def test_worker_processes_do_not_run_the_callers_main_script(tmp_path, studio_home,
                                                             monkeypatch):
    """Under Streamlit __main__ is the page script; spawned workers must not re-run it."""
    import sys
    import types

    marker = tmp_path / "page-ran"
    page = tmp_path / "page.py"
    page.write_text(f"open({str(marker)!r}, 'a').write('ran\\n')\n", encoding="utf-8")
    fake_main = types.ModuleType("__main__")
    fake_main.__file__ = str(page)
    monkeypatch.setitem(sys.modules, "__main__", fake_main)
    n = datasets.POOL_MIN_FILES // 2 + 1
    root = make_class_folders(tmp_path / "d", {"a": n, "b": n}, size=16)
    ds = ingest(root, config=IngestConfig(workers=2))
    assert ds.report.classes == {"a": n, "b": n}
    assert not marker.exists(), "a worker process ran the caller's __main__ script"
    assert sys.modules["__main__"] is fake_main  # put back afterwards
