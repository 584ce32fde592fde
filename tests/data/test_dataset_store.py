"""Saved datasets: building, registering uploads and folders, names, concurrency, the zip."""

from __future__ import annotations

import io
import os
import shutil
import threading
import time
import zipfile
from pathlib import Path

import pytest
from dataset_helpers import img_bytes, two_classes, write_files, zip_bytes

from core.data import datasets, upload_space
from core.data import uploads as core_uploads
from core.data.names import clean_name, unique_name
from core.data.store import DatasetStore
from core.errors import DatasetError


@pytest.fixture
def store(tmp_path: Path) -> DatasetStore:
    return DatasetStore(tmp_path / "home")


@pytest.mark.parametrize("bad", ["a/b", "a\\b", "..", ".hidden", "CON", "nul", "com1.txt",
                                 "LPT9", "trailing.", "dot. ", "x" * 101, "tab\there",
                                 "", "   ", "what?", "a:b"])
def test_invalid_class_names_are_refused_with_what_to_do(bad: str) -> None:
    with pytest.raises(DatasetError, match="name"):
        clean_name(bad)


def test_a_name_too_long_in_bytes_for_a_folder_is_refused(store: DatasetStore) -> None:
    """100 characters of Chinese are 300 bytes: over the 255 a Linux folder name may hold."""
    store.create("d")
    with pytest.raises(DatasetError, match="bytes"):
        store.add_class("d", "猫" * 100)
    assert store.add_class("d", "猫" * 85) == "猫" * 85  # 255 bytes: the most that fits
    assert store.get("d").classes == {"猫" * 85: 0}


def test_valid_names_are_kept_normalised() -> None:
    assert clean_name("  cats ") == "cats"
    assert clean_name("e\u0301clair") == "\u00e9clair"
    assert clean_name("console") == "console"  # only the exact device names are reserved
    assert clean_name("x" * 100) == "x" * 100


def test_unique_name_ignores_case() -> None:
    assert unique_name("flowers", ["Flowers", "flowers (2)"]) == "flowers (3)"
    assert unique_name("cats", ["dogs"]) == "cats"


def test_build_a_dataset_then_ingest_it(store: DatasetStore) -> None:
    saved = store.create("pets")
    store.add_class("pets", "cats")
    store.add_class("pets", "dogs")
    for k, cls in enumerate(["cats", "dogs"]):
        result = store.add_photos("pets", cls, [(f"{i}.png", img_bytes(k, i)) for i in range(3)])
        assert len(result.added) == 3 and not result.refused and not result.duplicates
    listed = store.list()
    assert [s.name for s in listed] == ["pets"]
    assert listed[0].classes == {"cats": 3, "dogs": 3}
    assert listed[0].ready() and listed[0].to_dict()["source"] == "built here"
    dataset = datasets.ingest(saved.root, home=store.home)
    assert dataset.report.usable and dataset.report.classes == {"cats": 3, "dogs": 3}


def test_photos_are_checked_like_an_upload(store: DatasetStore) -> None:
    store.create("d")
    store.add_class("d", "a")
    store.add_class("d", "b")
    good = img_bytes(0, 1)
    result = store.add_photos("d", "a", [
        ("ok.png", good), ("broken.jpg", b"\xff\xd8\xff\xe0 truncated"),
        ("tiny.png", img_bytes(0, 2, size=4)), ("notes.txt", b"hello"), ("again.png", good),
    ])
    assert len(result.added) == 1 and result.added[0].endswith(".png")
    assert {r["file"] for r in result.refused} == {"broken.jpg", "tiny.png", "notes.txt"}
    assert result.duplicates == [{"file": "again.png", "reason": "already in this class"}]
    other = store.add_photos("d", "b", [("same.png", good)])
    assert other.duplicates[0]["reason"] == "already in class 'a'" and not other.added


def test_class_names_differing_in_case_are_duplicates(store: DatasetStore) -> None:
    store.create("d")
    store.add_class("d", "Cats")
    with pytest.raises(DatasetError, match="only in case"):
        store.add_class("d", "cats")
    with pytest.raises(DatasetError, match="device"):
        store.add_class("d", "AUX")
    with pytest.raises(DatasetError, match="already exists"):
        store.create("D".lower())


def test_rename_and_remove_classes_and_photos(store: DatasetStore) -> None:
    store.create("d")
    store.add_class("d", "a")
    added = store.add_photos("d", "a", [("1.png", img_bytes(0, 1)), ("2.png", img_bytes(0, 2))])
    assert store.rename_class("d", "a", "apples") == "apples"
    assert store.get("d").classes == {"apples": 2}
    store.remove_photo("d", "apples", added.added[0])
    assert [p.name for p in store.photos("d", "apples")] == [added.added[1]]
    with pytest.raises(DatasetError, match="not a photo"):
        store.remove_photo("d", "apples", "../saved.json")
    store.remove_class("d", "apples")
    assert store.get("d").classes == {}


def test_two_threads_adding_at_once_lose_nothing(store: DatasetStore) -> None:
    store.create("d")
    store.add_class("d", "a")
    errors: list[BaseException] = []

    def add(offset: int) -> None:
        try:
            for i in range(6):
                store.add_photos("d", "a", [(f"{i}.png", img_bytes(1, offset + i))])
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(k * 100,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    photos = store.photos("d", "a")
    assert len(photos) == 12
    leftovers = [p for p in store.get("d").root.parent.rglob("*")
                 if p.name.startswith(".") and p.name != ".lock"]
    assert leftovers == []  # no temporary file or folder is left behind


def test_registered_upload_is_named_after_the_zip_and_copied_on_change(
        store: DatasetStore, tmp_path: Path) -> None:
    dataset = datasets.ingest(zip_bytes(two_classes(3, "flowers/")), home=store.home)
    first = store.register(dataset.root, name="flowers.zip", source="flowers.zip",
                           kind="upload")
    again = store.register(dataset.root, name="flowers.zip", source="flowers.zip",
                           kind="upload")
    assert first.id == again.id and first.name == "flowers"
    folder = write_files(tmp_path / "flowers", two_classes(3))
    second = store.register(folder, name="flowers", source=str(folder), kind="folder")
    assert second.name == "flowers (2)" and second.classes == {"a": 3, "b": 3}
    store.add_photos("flowers (2)", "a", [("new.png", img_bytes(0, 50))])
    assert store.get("flowers (2)").classes == {"a": 4, "b": 3}
    known = store.add_photos("flowers (2)", "a", [("copy.png", (folder / "b" / "1.png")
                                                     .read_bytes())])
    assert known.duplicates == [{"file": "copy.png", "reason": "already in class 'b'"}]
    assert sorted(p.name for p in (folder / "a").iterdir()) == ["0.png", "1.png", "2.png"]
    assert store.resolve_source("FLOWERS (2)") == store.get("flowers (2)").root
    assert first.available
    shutil.rmtree(dataset.root.parent)  # the extraction deleted outside the studio
    assert not store.get("flowers").available and store.get("flowers").classes == {}
    again = datasets.ingest(zip_bytes(two_classes(3, "flowers/")), home=store.home)
    assert store.register(again.root, name="flowers.zip", source="flowers.zip",
                          kind="upload").id == first.id
    assert store.get("flowers").available  # the same zip uploaded again brings it back


def _age(uploads_dir: Path) -> None:
    """Makes every extraction look last used two hours ago (older than recent use)."""
    old = time.time() - 2 * upload_space.RECENTLY_USED_SECONDS
    for marker in uploads_dir.glob(f"*/{core_uploads.UPLOAD_MARKER}"):
        os.utime(marker, (old, old))


def test_the_uploads_budget_never_removes_an_upload_a_saved_dataset_uses(
        store: DatasetStore) -> None:
    """Issue 20 #5: least recently used extractions go first, never one a saved dataset needs.

    The pin ends when the saved dataset is deleted, or when a change copied its photos into
    its own folder (hard links: the copy keeps the photos when the extraction goes).
    """
    uploads_dir = store.home / "uploads"
    kept = datasets.ingest(zip_bytes(two_classes(3, "kept/")), home=store.home)
    changed = datasets.ingest(zip_bytes(two_classes(3, "changed/")), home=store.home)
    gone = datasets.ingest(zip_bytes(two_classes(3, "gone/")), home=store.home)
    unsaved = datasets.ingest(zip_bytes(two_classes(3, "unsaved/")), home=store.home)
    for ds in (kept, changed, gone):
        store.register(ds.root, name=f"{ds.root.name}.zip", source="x.zip", kind="upload")
    store.add_photos("changed", "a", [("new.png", img_bytes(0, 77))])  # copies, then unpins
    store.delete("gone")
    _age(uploads_dir)

    removed = upload_space.prune_uploads(uploads_dir, 1)

    assert set(removed) == {changed.root.parent, gone.root.parent, unsaved.root.parent}
    assert kept.root.is_dir() and store.get("kept").available
    assert store.get("changed").classes == {"a": 4, "b": 3}  # its own photos remain
    again = datasets.ingest(store.get("changed").root, home=store.home)
    assert again.report.classes == {"a": 4, "b": 3}  # and still trains
    assert sorted(p.name for p in (uploads_dir / upload_space.PINS_DIR).iterdir()) == [
        kept.root.parent.name]  # the pins of removed extractions went with them
    store.delete("kept")
    assert upload_space.prune_uploads(uploads_dir, 1) == [kept.root.parent]


def test_an_unreadable_pin_keeps_its_extraction(store: DatasetStore) -> None:
    ds = datasets.ingest(zip_bytes(two_classes(3, "ds/")), home=store.home)
    store.register(ds.root, name="ds.zip", source="ds.zip", kind="upload")
    pins = store.home / "uploads" / upload_space.PINS_DIR / ds.root.parent.name
    for pin in pins.iterdir():
        pin.write_text("{torn")
    _age(store.home / "uploads")
    assert upload_space.prune_uploads(store.home / "uploads", 1) == []
    assert ds.root.is_dir()


def test_rename_delete_and_zip(store: DatasetStore) -> None:
    store.create("d")
    for k, cls in enumerate("ab"):
        store.add_class("d", cls)
        store.add_photos("d", cls, [(f"{i}.png", img_bytes(k, i)) for i in range(2)])
    store.rename("d", "renamed")
    with zipfile.ZipFile(io.BytesIO(store.zip_bytes("renamed"))) as zf:
        names = zf.namelist()
    assert len(names) == 4 and all(n.startswith(("renamed/a/", "renamed/b/")) for n in names)
    assert store.delete("renamed") == []
    assert store.list() == []
    with pytest.raises(DatasetError, match="No saved dataset"):
        store.get("renamed")


def _add_in_process(home: str, offset: int) -> int:
    store = DatasetStore(home)
    added = 0
    for i in range(4):
        added += len(store.add_photos("d", "a", [(f"{i}.png", img_bytes(2, offset + i))]).added)
    return added


def test_two_processes_adding_at_once_lose_nothing(store: DatasetStore) -> None:
    import multiprocessing

    store.create("d")
    store.add_class("d", "a")
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        counts = pool.starmap(_add_in_process, [(str(store.home), 0), (str(store.home), 100)])
    assert counts == [4, 4]
    assert len(store.photos("d", "a")) == 8


def test_a_deleted_dataset_cannot_be_changed(store: DatasetStore) -> None:
    store.create("d")
    store.add_class("d", "a")
    store.delete("d")
    with pytest.raises(DatasetError, match="No saved dataset"):
        store.add_photos("d", "a", [("x.png", img_bytes(0, 0))])
    assert not any(store.dir.iterdir()) or [p.name for p in store.dir.iterdir()] == [".lock"]


def test_copying_a_server_folder_skips_pipes_devices_and_linked_folders(
        store: DatasetStore, tmp_path: Path) -> None:
    """Issue 20 #1, where a saved dataset copies a server folder before its first change."""
    folder = write_files(tmp_path / "server", two_classes(3))
    os.mkfifo(folder / "a" / "pipe.png")
    (folder / "a" / "zero.png").symlink_to("/dev/zero")
    (folder / "a" / "loop").symlink_to(folder)  # a linked folder that contains itself
    store.register(folder, name="server", source=str(folder), kind="folder")
    done = threading.Event()

    def add() -> None:
        store.add_photos("server", "b", [("new.png", img_bytes(1, 60))])
        done.set()

    worker = threading.Thread(target=add, daemon=True)
    worker.start()
    worker.join(30)
    assert done.is_set(), "the copy hung on a pipe, a device or a linked folder"
    copied = store.get("server").root
    assert store.get("server").classes == {"a": 3, "b": 4}
    assert not any(p.is_symlink() or not p.is_file() for p in copied.rglob("*.png"))
