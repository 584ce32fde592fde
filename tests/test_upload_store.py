"""The upload store's budget per session and its files on disk (ui.upload_store), unit by unit;
tests/app/test_upload_budget_server.py tries it on a running server."""

from __future__ import annotations

import io
import mmap
import zipfile
from unittest import mock

import pytest
from starlette.exceptions import HTTPException
from streamlit.runtime.memory_uploaded_file_manager import MemoryUploadedFileManager
from streamlit.runtime.uploaded_file_manager import UploadedFile, UploadedFileRec

from ui import upload_store

MB = 2**20


def record(file_id: str, size_mb: float, name: str = "photo.jpg") -> UploadedFileRec:
    return UploadedFileRec(file_id, name, "image/jpeg", b"x" * int(size_mb * MB))


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> upload_store.BudgetedUploadStore:
    monkeypatch.setattr(upload_store, "session_mb", lambda: 64)
    monkeypatch.setattr(upload_store, "MEMORY_PER_SESSION_MB", 8)
    monkeypatch.setattr(upload_store, "MEMORY_ALL_SESSIONS_MB", 12)
    monkeypatch.setattr(upload_store, "SPOOL_ABOVE_MB", 5)
    return upload_store.BudgetedUploadStore("/_stcore/upload_file")


def test_a_session_over_its_budget_is_refused_with_413_and_others_are_not(
        store: upload_store.BudgetedUploadStore) -> None:
    for n in range(3):
        store.add_file("a", record(f"a{n}", 20))
    with pytest.raises(HTTPException) as refused:
        store.add_file("a", record("a3", 5))  # 65 MB > 64
    assert refused.value.status_code == 413
    assert "64 MB" in refused.value.detail and "60 MB" in refused.value.detail
    assert store.held_bytes("a") == 60 * MB
    store.add_file("b", record("b0", 20))  # another session has its own budget
    store.add_file("a", record("a1", 4))  # the same file again replaces it: 44 + 4
    assert store.held_bytes("a") == 44 * MB
    store.remove_file("a", "a0")
    store.add_file("a", record("a3", 5))  # room again once a file is released
    assert store.held_bytes("a") == 29 * MB


def test_a_session_holds_at_most_so_many_files(store: upload_store.BudgetedUploadStore,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(upload_store, "SESSION_FILES", 3)
    for n in range(3):
        store.add_file("a", record(f"a{n}", 0.01))
    with pytest.raises(HTTPException, match="3 uploaded files"):
        store.add_file("a", record("a3", 0.01))


def test_large_files_and_files_beyond_the_memory_budgets_go_to_the_disk(
        store: upload_store.BudgetedUploadStore) -> None:
    store.add_file("a", record("small", 3))
    store.add_file("a", record("large", 6))  # over SPOOL_ABOVE_MB
    store.add_file("a", record("more", 4))  # 3 + 4 in memory, within 8
    store.add_file("a", record("beyond", 2))  # 7 + 2 > 8: to the disk
    store.add_file("b", record("b-small", 4))  # 7 + 4 in memory in all
    store.add_file("b", record("b-beyond", 2))  # 11 + 2 > 12 for all sessions: disk
    kinds = {f.file_id: type(f.data) for s in ("a", "b")
             for f in store.get_files(s, ["small", "large", "more", "beyond", "b-small",
                                          "b-beyond"])}
    assert kinds == {"small": bytes, "large": mmap.mmap, "more": bytes, "beyond": mmap.mmap,
                     "b-small": bytes, "b-beyond": mmap.mmap}
    assert store.held_bytes("a") == 15 * MB  # disk counts in the session's budget


def test_a_zip_kept_on_disk_reads_as_the_same_file(store: upload_store.BudgetedUploadStore
                                                    ) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("flowers/roses/a.jpg", b"r" * (6 * MB))
        archive.writestr("flowers/tulips/b.jpg", b"t" * 100)
    data = buffer.getvalue()
    store.add_file("a", UploadedFileRec("zip", "flowers.zip", "application/zip", data))
    (rec,) = store.get_files("a", ["zip"])
    assert isinstance(rec.data, mmap.mmap)
    upload = UploadedFile(rec, None)  # what st.file_uploader returns
    assert upload.size == len(data) and upload.getvalue() == data
    with zipfile.ZipFile(upload) as archive:
        assert archive.read("flowers/tulips/b.jpg") == b"t" * 100
    store.remove_session_files("a")
    assert store.get_files("a", ["zip"]) == []


def test_a_nearly_full_disk_refuses_a_file_that_would_go_to_it(
        store: upload_store.BudgetedUploadStore) -> None:
    usage = mock.Mock(free=upload_store.DISK_RESERVE_MB * MB + 5 * MB)
    with mock.patch.object(upload_store.shutil, "disk_usage", return_value=usage), \
            pytest.raises(HTTPException, match="disk is nearly full"):
        store.add_file("a", record("large", 6))
    store.add_file("a", record("small", 1))  # memory is still fine


def test_install_gives_the_servers_store_the_budget_once_and_leaves_others_alone() -> None:
    plain = MemoryUploadedFileManager("/_stcore/upload_file")
    plain.add_file("a", record("before", 1))
    assert upload_store.install(plain)
    assert isinstance(plain, upload_store.BudgetedUploadStore)
    assert [f.file_id for f in plain.get_files("a", ["before"])] == ["before"]
    assert upload_store.install(plain)  # idempotent
    assert not upload_store.install(mock.MagicMock())  # AppTest's mocked runtime
    assert not upload_store.install()  # no server in this process: nothing to do


def test_a_file_the_disk_cannot_take_is_refused_not_a_server_error(
        store: upload_store.BudgetedUploadStore) -> None:
    with mock.patch.object(upload_store.tempfile, "TemporaryFile",
                           side_effect=OSError(28, "No space left on device")), \
            pytest.raises(HTTPException, match="cannot keep this file") as refused:
        store.add_file("a", record("large", 6))
    assert refused.value.status_code == 413
    assert store.held_bytes("a") == 0
