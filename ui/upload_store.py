"""Streamlit's upload store with a budget per session, and large files kept on the disk.

Why here, and why this way: Streamlit stores every file PUT to `/_stcore/upload_file/<session>/
<file>` in its MemoryUploadedFileManager, in the server's memory, until the session ends; the
only server-side limit is `server.maxUploadSize` per file (2 GB here, for the dataset zip), for
any number of files. A client that ignores the browser's per-widget limit can therefore hold
gigabytes per session. Streamlit (1.67) has no option for a per-session budget or for keeping
uploads on disk. Its supported way to put code in front of the endpoint is `st.App(...,
middleware=...)`, which changes how the app is launched (an ASGI entry file instead of
`streamlit run streamlit_app.py`). The endpoint hands every file to the manager's `add_file`,
and the server's routes and the runtime share one manager object; so the least invasive hook
is to give that object this subclass's behaviour when the app's script first runs
(install(), at the top of streamlit_app.py), which every launch (`streamlit run`, the
container, the tests) goes through. Streamlit runs no app code before a session's first run,
so the budget applies from the first page view after the server starts.

What it enforces, per session: at most session_mb() (server.maxUploadSize: one dataset zip at
the limit, or many photos) and SESSION_FILES files held at once; a file beyond is refused with
HTTP 413 and a reason (the browser's uploader shows "Request failed with status code 413"
beside the file; the reason is in the reply's body and the server's log). Of that, at most
MEMORY_PER_SESSION_MB stays in memory (and MEMORY_ALL_SESSIONS_MB for all sessions together);
larger files (over SPOOL_ABOVE_MB: the zip) and files beyond those budgets are kept in an
unlinked temporary file, mapped read-only (the operating system's page cache, which it can
drop, not the server's heap). A file is refused when the disk would keep less than
DISK_RESERVE_MB free.

What it cannot bound: Streamlit's endpoint reads each request's body (up to
server.maxUploadSize, into a temporary file and then into memory) before the manager sees it,
so requests in flight each cost their size until refused or stored; a reverse proxy's request
size and connection limits bound that (README, uploads; docs/benchmarks.md measures both).
"""

from __future__ import annotations

import logging
import mmap
import os
import shutil
import tempfile
from typing import Any

from streamlit.runtime.memory_uploaded_file_manager import MemoryUploadedFileManager
from streamlit.runtime.uploaded_file_manager import UploadedFileRec

from ui.uploads import PHOTO_MB

log = logging.getLogger(__name__)

MB = 2**20
SPOOL_ABOVE_MB = PHOTO_MB  # anything larger than a photo (the dataset zip) goes to the disk
MEMORY_PER_SESSION_MB = 64  # three photos at the limit, some 15 phone photos
MEMORY_ALL_SESSIONS_MB = 128
SESSION_FILES = 500  # the dataset builder takes many photos at once
DISK_RESERVE_MB = 1024


class UploadRefused(Exception):
    """A file over a session's budget; the endpoint answers 413 with the reason."""


def session_mb() -> int:
    """What one session may hold: server.maxUploadSize (one dataset zip at the limit)."""
    from streamlit import config

    return int(config.get_option("server.maxUploadSize"))


def _refusal(reason: str) -> Exception:
    try:
        from starlette.exceptions import HTTPException

        return HTTPException(status_code=413, detail=reason)
    except ImportError:  # pragma: no cover - Starlette is Streamlit's server
        return UploadRefused(reason)


def _spooled(data: bytes) -> Any:
    """The bytes in an unlinked temporary file, mapped read-only (bytes-like: len, slicing,
    the buffer protocol, as io.BytesIO and zipfile need). The space is freed when the last
    reference to the map goes."""
    with tempfile.TemporaryFile(prefix="tl-upload-") as spool:
        spool.write(data)
        spool.flush()
        if not data:
            return b""
        return mmap.mmap(spool.fileno(), len(data), access=mmap.ACCESS_READ)


class BudgetedUploadStore(MemoryUploadedFileManager):
    """MemoryUploadedFileManager with a byte and file budget per session; large files (and
    files beyond the memory budgets) kept on the disk. Thread-safe like its parent."""

    def _held(self, session_id: str) -> tuple[int, int, int]:
        """(bytes, files, bytes in memory) of a session; call with the lock held."""
        files = self.file_storage.get(session_id, {})
        total = sum(len(f.data) for f in files.values())
        memory = sum(len(f.data) for f in files.values() if isinstance(f.data, bytes))
        return total, len(files), memory

    def _memory_all(self) -> int:
        return sum(len(f.data) for files in self.file_storage.values() for f in files.values()
                   if isinstance(f.data, bytes))

    def add_file(self, session_id: str, file: UploadedFileRec) -> None:
        size = len(file.data)
        with self._lock:
            held, count, memory = self._held(session_id)
            old = self.file_storage.get(session_id, {}).get(file.file_id)
            if old is not None:  # the same file again replaces it
                held, count = held - len(old.data), count - 1
                memory -= len(old.data) if isinstance(old.data, bytes) else 0
            budget = session_mb() * MB
            if held + size > budget:
                log.warning("Upload refused: session %s would hold %d MB, over %d MB",
                            session_id, (held + size) // MB, budget // MB)
                raise _refusal(
                    f"Not stored: this page already holds {held / MB:.0f} MB of uploads and "
                    f"may hold {budget // MB} MB; remove files from the uploader, or reload "
                    "the page.")
            if count + 1 > SESSION_FILES:
                log.warning("Upload refused: session %s would hold over %d files",
                            session_id, SESSION_FILES)
                raise _refusal(f"Not stored: this page may hold {SESSION_FILES} uploaded files "
                               "at once; remove some from the uploader, or reload the page.")
            to_disk = (size > SPOOL_ABOVE_MB * MB
                       or memory + size > MEMORY_PER_SESSION_MB * MB
                       or self._memory_all() + size > MEMORY_ALL_SESSIONS_MB * MB)
        if to_disk:
            free = shutil.disk_usage(tempfile.gettempdir()).free
            if free - size < DISK_RESERVE_MB * MB:
                log.warning("Upload refused: %d MB free in %s", free // MB,
                            tempfile.gettempdir())
                raise _refusal("Not stored: the server's disk is nearly full; try later or "
                               "ask its admin.")
            try:
                file = file._replace(data=_spooled(file.data))  # outside the lock: disk time
            except (OSError, ValueError) as exc:
                log.warning("Upload refused: cannot keep it on the disk: %s", exc)
                raise _refusal("Not stored: the server cannot keep this file now; try "
                               "later or ask its admin.") from exc
        super().add_file(session_id, file)

    def held_bytes(self, session_id: str) -> int:
        """What a session holds now, in bytes (memory and disk)."""
        with self._lock:
            return self._held(session_id)[0]


def install(manager: Any = None) -> bool:
    """Gives the running server's upload store the budget (once per server; idempotent).

    Returns True when the store has it (now or before). Without a running server (AppTest,
    bare scripts) it does nothing and returns False.
    """
    if manager is None:
        from streamlit.runtime import Runtime

        if not Runtime.exists():
            return False
        manager = Runtime.instance().uploaded_file_mgr
    if isinstance(manager, BudgetedUploadStore):
        return True
    if type(manager) is not MemoryUploadedFileManager:
        return False  # another store (a test's mock, a future Streamlit): leave it alone
    with manager._lock:
        manager.__class__ = BudgetedUploadStore
    log.info("Upload store: %d MB per session (%d MB in memory), files over %d MB on disk "
             "(pid %d)", session_mb(), MEMORY_PER_SESSION_MB, SPOOL_ABOVE_MB, os.getpid())
    return True
