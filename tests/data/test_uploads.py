"""core.data.uploads through datasets.ingest: zip sources, safety, extraction and publishing."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from conftest import zip_folder
from dataset_helpers import img_bytes, patch_names, rejected, two_classes, write_files, zip_bytes

import core.data.upload_space
import core.data.uploads
from core.config import IngestConfig
from core.data.datasets import ingest
from core.data.uploads import UPLOAD_MARKER
from core.errors import DatasetError

# --- zips --------------------------------------------------------------------------------

def test_zip_as_bytes_file_object_or_path(small_dataset, tmp_path, studio_home):
    zpath = zip_folder(small_dataset, tmp_path / "small.zip")
    data = zpath.read_bytes()
    results = [ingest(data), ingest(io.BytesIO(data)), ingest(zpath), ingest(str(zpath))]
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

    monkeypatch.setattr(core.data.uploads, "extract_zip", no_extraction)
    again = ingest(data)
    assert again.root == first.root and len(again.index) == 36


def test_incomplete_extraction_is_redone(small_dataset, tmp_path, studio_home):
    data = zip_folder(small_dataset, tmp_path / "s.zip").read_bytes()
    stale = studio_home / "uploads" / hashlib.sha256(data).hexdigest()[:16]
    write_files(stale, {"cats/half_written.png": b"\x89PNG"})  # no completion marker
    ds = ingest(data)
    assert ds.report.classes == {"cats": 12, "dogs": 12, "fish": 12}
    assert not (stale / "cats" / "half_written.png").exists() and ds.report.rejected == []


def test_extraction_left_by_a_killed_process_is_removed(small_dataset, tmp_path, studio_home):
    """A process killed mid-extraction leaves a .partial-* folder; the next upload clears it."""
    uploads = studio_home / "uploads"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)
    digest = "0" * 16
    host = core.data.upload_space.host_tag()
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


# --- entries no file system accepts (issue 20 #3) and oversized entries (#5) -----------------

@pytest.mark.parametrize("file_first", [True, False])
def test_a_file_and_a_folder_of_one_name_are_skipped_with_a_reason(tmp_path, studio_home,
                                                                   file_first):
    files = two_classes(3, prefix="ds/")
    clash = {"ds/tulips": img_bytes(3, 0), "ds/tulips/": b"", "ds/tulips/1.png": img_bytes(3, 1)}
    if not file_first:
        clash = {"ds/tulips/": b"", "ds/tulips/1.png": img_bytes(3, 1), "ds/tulips": b"x"}
    ds = ingest(zip_bytes({**files, **clash}))
    reasons = rejected(ds.report)
    skipped = {name for name, why in reasons.items() if "file and a folder of the same name" in why}
    # The first of the two is written; whatever needs the name the other way is skipped.
    assert skipped == ({"tulips/", "tulips/1.png"} if file_first else {"tulips"})
    assert ds.report.classes["a"] == 3 and ds.report.classes["b"] == 3


def test_names_longer_than_file_systems_allow_are_skipped_with_a_reason(tmp_path, studio_home):
    long_file = "ds/a/" + "x" * 300 + ".png"
    long_folder = "ds/" + "y" * 300 + "/1.png"
    ds = ingest(zip_bytes({**two_classes(3, prefix="ds/"), long_file: img_bytes(0, 9),
                           long_folder: img_bytes(1, 9)}))
    reasons = rejected(ds.report)
    assert "longer than 255 bytes" in reasons[long_file[3:]]
    assert "longer than 255 bytes" in reasons[long_folder[3:]]
    assert ds.report.classes == {"a": 3, "b": 3}


def test_entries_larger_than_an_image_are_not_unpacked(tmp_path, studio_home):
    big = b"\0" * 50_000  # compresses to almost nothing, like a zip bomb's entries
    data = zip_bytes({**two_classes(3, prefix="ds/"), "ds/a/zeros.png": big})
    ds = ingest(data, config=IngestConfig(max_file_bytes=20_000))
    assert "more than an image can be" in rejected(ds.report)["a/zeros.png"]
    assert not list((studio_home / "uploads").rglob("zeros.png"))  # never written
    assert ds.report.classes == {"a": 3, "b": 3}


def test_uploads_keep_to_their_budget_least_recently_used_first(tmp_path, studio_home):
    """Finished extractions are removed oldest-use first, never a held or recent one (#5)."""
    zips = [zip_bytes(two_classes(3, prefix=f"ds{i}/")) for i in range(4)]
    folders = [ingest(data).root.parent for data in zips[:3]]  # <uploads>/<digest>/ds<i>
    sizes = [sum(p.stat().st_size for p in f.rglob("*") if p.is_file()) for f in folders]
    hour_ago = time.time() - 2 * core.data.upload_space.RECENTLY_USED_SECONDS
    for age, folder in enumerate(folders):  # folder 0 used longest ago
        os.utime(folder / UPLOAD_MARKER, (hour_ago - 100 + age, hour_ago - 100 + age))
    budget = sum(sizes[1:]) + max(sizes)  # room for three of the four
    config = IngestConfig(max_uploads_bytes=budget)
    with core.data.upload_space.hold(folders[1]):
        ingest(zips[0], config=config)  # reused: now the most recently used
        ingest(zips[3], config=config)
    assert folders[0].is_dir() and folders[1].is_dir()  # just used; held
    assert not folders[2].exists()  # the least recently used that could go
    uploads = studio_home / "uploads"
    assert len([p for p in uploads.iterdir() if not p.name.startswith(".")]) == 3
    # With nothing held and everything old, the budget is met again.
    for folder in uploads.iterdir():
        os.utime(folder / UPLOAD_MARKER, (hour_ago, hour_ago))
    removed = core.data.upload_space.prune_uploads(uploads, 1)
    assert len(removed) == 3 and list(uploads.iterdir()) == []


def test_upload_folders_of_a_dataset(tmp_path, studio_home):
    ds = ingest(zip_bytes(two_classes(3, prefix="ds/")))
    folders = core.data.upload_space.upload_folders(ds.index["path"], studio_home)
    assert folders == {ds.root.parent}
    assert core.data.upload_space.upload_folders([str(tmp_path / "elsewhere.png")], studio_home) == set()
