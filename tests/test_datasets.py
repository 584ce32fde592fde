"""core.datasets.ingest: folders and zips, every case of issue 2 section 2, built here."""

from __future__ import annotations

import io
import json
import stat
import tracemalloc
import unicodedata
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_class_folders, patterned_image, require_asset, zip_folder
from PIL import Image

from core import datasets
from core.config import IngestConfig
from core.datasets import INDEX_COLUMNS, UPLOAD_MARKER, Dataset, ValidationReport, ingest
from core.errors import DatasetError


def img_bytes(cls: int = 0, var: int = 0, size: int = 32, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    patterned_image(cls, var, size).save(buf, fmt)
    return buf.getvalue()


def write_files(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def two_classes(n: int = 3, prefix: str = "") -> dict[str, bytes]:
    """n distinct images in each of the classes 'a' and 'b'."""
    return {f"{prefix}{c}/{i}.png": img_bytes(k, i) for k, c in enumerate("ab")
            for i in range(n)}


def zip_bytes(files: dict[str, bytes], *, raw: bool = False) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED if raw else zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def patch_names(data: bytes, replacements: dict[bytes, bytes]) -> bytes:
    """Swaps same-length placeholder name bytes for raw bytes, leaving the UTF-8 flag unset."""
    for placeholder, raw in replacements.items():
        assert len(placeholder) == len(raw)
        assert data.count(placeholder) >= 2  # local header + central directory, per entry
        data = data.replace(placeholder, raw)
    return data


def rejected(report: ValidationReport) -> dict[str, str]:
    return {item["file"]: item["reason"] for item in report.rejected}


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


# --- zips --------------------------------------------------------------------------------

def test_zip_as_bytes_file_object_or_path(small_dataset, tmp_path, studio_home):
    zpath = zip_folder(small_dataset, tmp_path / "small.zip")
    data = zpath.read_bytes()
    results = [ingest(data), ingest(io.BytesIO(data)), ingest(zpath), ingest(str(zpath))]
    import hashlib

    expected_root = studio_home / "uploads" / hashlib.sha256(data).hexdigest()[:16]
    for ds in results:
        assert ds.root == expected_root.resolve()
        assert ds.report.classes == {"cats": 12, "dogs": 12, "fish": 12}
        assert ds.index["sha256"].tolist() == results[0].index["sha256"].tolist()
    assert (expected_root / UPLOAD_MARKER).is_file()
    assert [p.name for p in (studio_home / "uploads").iterdir()] == [expected_root.name]


def test_same_zip_reuses_the_extracted_folder(small_dataset, tmp_path, studio_home,
                                              monkeypatch):
    data = zip_folder(small_dataset, tmp_path / "s.zip").read_bytes()
    first = ingest(data)

    def no_extraction(*args, **kwargs):
        raise AssertionError("extracted again")

    monkeypatch.setattr(datasets, "_extract_zip", no_extraction)
    again = ingest(data)
    assert again.root == first.root and len(again.index) == 36


def test_incomplete_extraction_is_redone(small_dataset, tmp_path, studio_home):
    data = zip_folder(small_dataset, tmp_path / "s.zip").read_bytes()
    import hashlib

    stale = studio_home / "uploads" / hashlib.sha256(data).hexdigest()[:16]
    write_files(stale, {"cats/half_written.png": b"\x89PNG"})  # no completion marker
    ds = ingest(data)
    assert ds.report.classes == {"cats": 12, "dogs": 12, "fish": 12}
    assert not (stale / "cats" / "half_written.png").exists() and ds.report.rejected == []


def test_extraction_left_by_a_killed_process_is_removed(small_dataset, tmp_path, studio_home):
    """A process killed mid-extraction leaves a .partial-* folder; the next upload clears it."""
    import os
    import subprocess
    import sys
    import time

    uploads = studio_home / "uploads"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)
    digest = "0" * 16
    host = datasets._host_tag()
    killed = uploads / f".partial-{digest}-{host}-{dead_pid}-abc123"
    running = uploads / f".partial-{digest}-{host}-{os.getpid()}-def456"  # a live extraction
    elsewhere_old = uploads / f".partial-{digest}-otherhost-1-ghi789"
    elsewhere_new = uploads / f".partial-{digest}-otherhost-2-jkl012"
    for folder in (killed, running, elsewhere_old, elsewhere_new):
        write_files(folder, {"cats/a.png": b"\x89PNG"})
    day_ago = time.time() - 25 * 3600
    os.utime(elsewhere_old, (day_ago, day_ago))

    ingest(zip_folder(small_dataset, tmp_path / "s.zip").read_bytes())
    left = {p.name for p in uploads.iterdir() if p.name.startswith(".partial-")}
    assert left == {running.name, elsewhere_new.name}


@pytest.mark.parametrize("with_macosx", [False, True])
def test_single_wrapping_folder_is_unwrapped(tmp_path, studio_home, with_macosx):
    files = two_classes(3, prefix="flowers/")
    if with_macosx:
        files["__MACOSX/flowers/a/._0.png"] = b"\x00\x05\x16\x07"
        files["__MACOSX/flowers/._a"] = b"\x00\x05\x16\x07"
    ds = ingest(zip_bytes(files))
    assert ds.report.classes == {"a": 3, "b": 3} and ds.root.name == "flowers"
    assert ds.report.ignored == (2 if with_macosx else 0)


def test_nested_wrappers_and_notes_beside_them_are_unwrapped(tmp_path, studio_home):
    files = two_classes(3, prefix="export/flowers/")
    files["export/flowers/LICENSE.txt"] = b"CC BY"
    files["README.md"] = b"read me"
    ds = ingest(zip_bytes(files))
    assert ds.report.classes == {"a": 3, "b": 3} and ds.root.name == "flowers"
    assert ds.report.ignored == 2 and ds.report.usable


def test_single_class_folder_is_not_unwrapped(tmp_path, studio_home):
    ds = ingest(zip_bytes({f"cats/{i}.png": img_bytes(0, i) for i in range(4)}))
    assert ds.report.classes == {"cats": 4}
    assert not ds.report.usable
    assert "Add at least one more class folder" in ds.report.errors[0]


@pytest.mark.parametrize("evil", [
    "../evil.png", "a/../../evil.png", "/tmp/evil_abs.png", "C:/evil_drive.png",
    "C:\\evil_backslash.png", "..\\evil_win.png",
])
def test_zip_entries_outside_the_folder_are_skipped_and_reported(tmp_path, studio_home,
                                                                 monkeypatch, evil):
    work = tmp_path / "work" / "deep"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    files = {**two_classes(3), evil: img_bytes(3, 3)}
    ds = ingest(zip_bytes(files))
    assert ds.report.classes == {"a": 3, "b": 3}
    reasons = rejected(ds.report)
    assert len(reasons) == 1 and "outside the extraction folder" in next(iter(reasons.values()))
    written = {p.name for p in tmp_path.rglob("*evil*")} | {
        p.name for p in Path("/tmp").glob("evil_abs*")}
    assert written == set()


def test_symlink_entries_are_skipped_and_reported(tmp_path, studio_home):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in two_classes(3).items():
            zf.writestr(name, data)
        link = zipfile.ZipInfo("a/link.png")
        link.create_system = 3
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "../../../../etc/passwd")
    ds = ingest(buf.getvalue())
    assert "symbolic link" in rejected(ds.report)["a/link.png"]
    assert not (ds.root / "a" / "link.png").exists()
    assert not any(p.is_symlink() for p in ds.root.rglob("*"))


def test_zip_limits_are_checked_before_extraction(tmp_path, studio_home):
    data = zip_bytes(two_classes(5))
    with pytest.raises(DatasetError, match=r"10 entries, over the limit of 4") as info:
        ingest(data, config=IngestConfig(max_zip_entries=4))
    assert "smaller zips" in str(info.value)
    with pytest.raises(DatasetError, match=r"would unpack to .* over the limit of 1,000 bytes"):
        ingest(data, config=IngestConfig(max_zip_bytes=1000))
    uploads = studio_home / "uploads"
    assert not uploads.exists() or list(uploads.iterdir()) == []


def test_zip_bomb_declared_size_is_refused_before_writing(tmp_path, studio_home):
    files = {**two_classes(3), "a/zeros.bin": b"\0" * 5_000_000}  # compresses ~1000x
    data = zip_bytes(files)
    assert len(data) < 100_000
    with pytest.raises(DatasetError, match="over the limit"):
        ingest(data, config=IngestConfig(max_zip_bytes=1_000_000))


def test_nested_zips_are_not_expanded(tmp_path, studio_home):
    inner = zip_bytes({"c/0.png": img_bytes(2, 0)})
    ds = ingest(zip_bytes({**two_classes(3), "a/more.zip": inner, "extra.ZIP": inner}))
    reasons = rejected(ds.report)
    assert reasons == {
        "a/more.zip": "nested zip archives are not expanded; unzip it first",
        "extra.ZIP": "nested zip archives are not expanded; unzip it first",
    }
    assert ds.report.classes == {"a": 3, "b": 3}


def test_utf8_flagged_names_with_non_ascii_classes(tmp_path, studio_home):
    files = {f"{c}/{i}_é.png": img_bytes(k, i) for k, c in enumerate(["Café", "日本の花"])
             for i in range(3)}
    data = zip_bytes(files)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert all(info.flag_bits & 0x800 for info in zf.infolist())
    ds = ingest(data)
    assert ds.report.classes == {"Café": 3, "日本の花": 3}
    assert ds.classes == sorted(["Café", "日本の花"])


def test_legacy_cp437_names_and_unflagged_utf8_names(tmp_path, studio_home):
    # Placeholders are ASCII (no UTF-8 flag); they are then swapped for raw bytes as old
    # Windows zip tools (CP437) and Info-ZIP-style tools (UTF-8 without the flag) write them.
    files = {f"QQQQQ/{i}.png": img_bytes(0, i) for i in range(3)}
    files |= {f"WWWWW/{i}.png": img_bytes(1, i) for i in range(3)}
    files |= {f"ZZZZZZ/{i}.png": img_bytes(2, i) for i in range(3)}
    data = patch_names(zip_bytes(files, raw=True), {
        b"QQQQQ": "Ärger".encode("cp437"),  # b"\x8erger": not valid UTF-8
        b"WWWWW": "Café".encode(),  # 5 bytes of UTF-8, flag unset
        b"ZZZZZZ": "日本".encode(),
    })
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert not any(info.flag_bits & 0x800 for info in zf.infolist())
    ds = ingest(data)
    assert ds.report.classes == {"Café": 3, "Ärger": 3, "日本": 3}
    assert (ds.root / "日本" / "0.png").is_file()


def test_windows_backslash_names_become_folders(tmp_path, studio_home):
    files = {name.replace("/", "\\"): data for name, data in two_classes(3).items()}
    ds = ingest(zip_bytes(files))
    assert ds.report.classes == {"a": 3, "b": 3}


def test_encrypted_entry_is_rejected_with_a_hint(tmp_path, studio_home):
    data = bytearray(zip_bytes({**two_classes(3), "a/secret.png": img_bytes(0, 9)}, raw=True))
    # Set the "encrypted" flag of that entry in the central directory (offset 8 of its record).
    pos = data.find(b"PK\x01\x02", data.find(b"a/secret.png") + 1)
    while data[pos + 46: pos + 46 + 12] != b"a/secret.png":
        pos = data.find(b"PK\x01\x02", pos + 1)
    data[pos + 8] |= 0x1
    ds = ingest(bytes(data))
    assert "without a password" in rejected(ds.report)["a/secret.png"]
    assert ds.report.classes == {"a": 3, "b": 3}


def test_damaged_entry_inside_a_zip_is_rejected_not_fatal(tmp_path, studio_home):
    payload = img_bytes(0, 9)
    data = bytearray(zip_bytes({**two_classes(3), "a/bitrot.png": payload}, raw=True))
    start = data.find(payload)
    data[start + 100] ^= 0xFF  # CRC check fails when this entry is read
    ds = ingest(bytes(data))
    assert "damaged inside the zip" in rejected(ds.report)["a/bitrot.png"]
    assert ds.report.classes == {"a": 3, "b": 3}


def test_zip_file_with_bad_image_inside_never_crashes(tmp_path, studio_home):
    ds = ingest(zip_bytes({**two_classes(3), "b/zero.jpg": b"", "b/x.png": b"junk"}))
    assert set(rejected(ds.report)) == {"b/zero.jpg", "b/x.png"} and ds.report.usable


# --- unusable sources raise DatasetError ---------------------------------------------------

def test_missing_path(tmp_path, studio_home):
    with pytest.raises(DatasetError, match="does not exist"):
        ingest(tmp_path / "nope")


@pytest.mark.parametrize(("content", "expected"), [
    (b"just some text\n" * 40, "(neither a folder nor a zip file|not a zip file)"),
    (b"Rar!\x1a\x07\x00" + b"\x00" * 100, "RAR archive"),
    (b"\x1f\x8b\x08" + b"\x00" * 100, "gzip"),
    (b"\xff\xd8\xff\xe0" + b"\x00" * 100, "single JPEG image"),
])
def test_not_a_zip(tmp_path, studio_home, content, expected):
    path = tmp_path / "upload.zip"
    path.write_bytes(content)
    with pytest.raises(DatasetError, match=expected):
        ingest(path)
    with pytest.raises(DatasetError, match=expected):
        ingest(content)


def test_truncated_zip_is_a_damaged_zip(tmp_path, studio_home):
    data = zip_bytes(two_classes(3))
    with pytest.raises(DatasetError, match="damaged or incomplete zip"):
        ingest(data[: len(data) // 2])


def test_unsupported_source_type(studio_home):
    with pytest.raises(DatasetError, match="folder path"):
        ingest(12345)  # type: ignore[arg-type]


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
    assert any("'b' has 1 usable image; add at least 1 more" in e for e in ds.report.errors)
    assert any("'empty' has 0 usable images; add at least 2 more" in e
               for e in ds.report.errors)


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
    seen: list[tuple[str, int, int]] = []
    data = zip_bytes(two_classes(4))
    ingest(data, on_progress=lambda stage, done, total: seen.append((stage, done, total)))
    stages = {s for s, _, _ in seen}
    assert stages == {"extracting", "checking"}
    assert ("checking", 8, 8) in seen and seen[-1] == ("checking", 8, 8)


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
    files = {f"{c}/{i}.png": b"x" for c in "ab" for i in range(datasets._POOL_MIN_FILES)}
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
