"""The uploads' disk budget: extractions held by running work, pinned by saved datasets or used
recently are kept, the rest pruned least recently used first; half-extracted folders of dead
processes are removed."""

from __future__ import annotations

import collections
import contextlib
import hashlib
import logging
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from core import files

log = logging.getLogger(__name__)

UPLOAD_MARKER = ".tl-studio-upload.json"

_ABANDONED_AFTER_SECONDS = 24 * 3600


def _format_bytes(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n} bytes"  # pragma: no cover


def host_tag() -> str:
    """This machine's name as it appears in the names of half-extracted upload folders."""
    return "".join(c for c in socket.gethostname() if c.isalnum())[:32] or "host"


def _partial_prefix(digest: str) -> str:
    """Names the extracting process, so another can tell when it died mid-extraction."""
    return f".partial-{digest[:16]}-{host_tag()}-{os.getpid()}-"


def _extraction_abandoned(folder: Path) -> bool:
    """Whether a .partial-* folder's extracting process is gone (killed, crashed)."""
    parts = folder.name.split("-")  # .partial, digest, host, pid, random
    if len(parts) >= 5 and parts[2] == host_tag() and parts[3].isdigit():
        try:
            os.kill(int(parts[3]), 0)
        except ProcessLookupError:
            return True
        except OSError:
            return False  # alive, though not ours to signal
        return False
    try:  # another machine sharing the home, or an older name: judged by age
        return time.time() - folder.stat().st_mtime > _ABANDONED_AFTER_SECONDS
    except OSError:
        return False


def _remove_abandoned_extractions(uploads: Path) -> None:
    """Deletes half-extracted uploads left by processes that died while extracting."""
    for folder in uploads.glob(".partial-*"):
        if folder.is_dir() and _extraction_abandoned(folder):
            log.info("Removing abandoned extraction %s", folder)
            shutil.rmtree(folder, ignore_errors=True)


# Extractions in use by this process (queued or running work), never removed by the budget.
_held: collections.Counter[Path] = collections.Counter()
_held_lock = threading.Lock()
# An extraction used this recently (by any process sharing the home) is never removed.
RECENTLY_USED_SECONDS = 3600


@contextlib.contextmanager
def hold(folder: str | Path) -> Iterator[None]:
    """Keeps an extracted upload from being removed by the size budget while inside.

    Work that will read a dataset later (a queued job) holds its upload folder until it ends.
    A folder used within RECENTLY_USED_SECONDS is kept too, which covers other processes.
    """
    key = Path(folder).resolve()
    with _held_lock:
        _held[key] += 1
    try:
        yield
    finally:
        with _held_lock:
            _held[key] -= 1
            if _held[key] <= 0:
                del _held[key]


PINS_DIR = ".pins"  # <uploads>/.pins/<extraction>/<owner digest>.json: who still needs it


def _pins(folder: Path) -> Path:
    return folder.parent / PINS_DIR / folder.name


def _pin_file(folder: Path, owner: str | Path) -> Path:
    digest = hashlib.sha256(str(Path(owner).resolve()).encode()).hexdigest()[:16]
    return _pins(folder) / f"{digest}.json"


def pin(path: str | Path, owner: str | Path, home: str | Path) -> bool:
    """Keeps the extraction holding path from the size budget for as long as owner exists.

    A saved dataset registered from an upload pins the extraction with its own folder as
    owner, so deleting the saved dataset ends the pin without a second step.

    Returns:
        Whether path is inside an extraction of home's uploads (otherwise nothing to pin).
    """
    found = upload_folders([path], home)
    for folder in found:
        _pins(folder).mkdir(parents=True, exist_ok=True)
        files.write_json_atomic(_pin_file(folder, owner), {"owner": str(Path(owner).resolve())})
    return bool(found)


def unpin(path: str | Path, owner: str | Path, home: str | Path) -> None:
    """Ends owner's pin on the extraction holding path (its photos were copied elsewhere)."""
    for folder in upload_folders([path], home):
        with contextlib.suppress(OSError):
            _pin_file(folder, owner).unlink()


def pinned(folder: Path) -> bool:
    """Whether an owner that still exists pins the extraction; stale pins are removed."""
    live = False
    for pin_file in _pins(folder).glob("*.json"):
        try:
            owner = files.read_json(pin_file).get("owner")
        except (OSError, ValueError, AttributeError):
            log.warning("Unreadable pin %s: keeping %s to be safe", pin_file, folder)
            live = True
            continue
        if isinstance(owner, str) and Path(owner).is_dir():
            live = True
        else:
            with contextlib.suppress(OSError):
                pin_file.unlink()
    return live


def upload_folders(paths: Iterable[str | Path], home: str | Path) -> set[Path]:
    """The extracted uploads (<home>/uploads/<digest>) that hold any of these files."""
    uploads = (Path(home) / "uploads").resolve()
    found = set()
    for path in paths:
        parts = Path(path).parts
        if len(parts) > len(uploads.parts) and Path(*parts[:len(uploads.parts)]) == uploads:
            found.add(uploads / parts[len(uploads.parts)])
    return found


def _mark_used(marker: Path) -> None:
    """Records a use of the extraction (its marker's mtime), for least-recently-used order."""
    with contextlib.suppress(OSError):
        os.utime(marker)


def _folder_bytes(folder: Path) -> int:
    total = 0
    for dirpath, _dirs, names in os.walk(folder):
        for name in names:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def prune_uploads(uploads: Path, budget_bytes: int, keep: Iterable[str | Path] = ()
                  ) -> list[Path]:
    """Removes the least recently used extractions until the uploads fit the budget.

    Never removes a folder in keep, one held (hold()), one pinned by a saved dataset (pin()),
    or one used within RECENTLY_USED_SECONDS. A removed folder loses its marker first, so no
    reader takes what remains for a complete extraction.

    Args:
        uploads: <home>/uploads.
        budget_bytes: Largest total size of the complete extractions.
        keep: Folders that must stay (the one just extracted or reused).

    Returns:
        The folders removed, least recently used first.
    """
    found = []
    for folder in (uploads.iterdir() if uploads.is_dir() else ()):
        marker = folder / UPLOAD_MARKER
        if folder.name.startswith(".") or not marker.is_file():
            continue
        try:
            used = marker.stat().st_mtime
            size = files.read_json(marker).get("bytes")
        except (OSError, ValueError, AttributeError):
            continue
        found.append((used, folder, size if isinstance(size, int) else _folder_bytes(folder)))
    total = sum(size for _used, _folder, size in found)
    with _held_lock:
        protected = {Path(k).resolve() for k in keep} | set(_held)
    removed: list[Path] = []
    now = time.time()
    for used, folder, size in sorted(found, key=lambda item: item[0]):
        if total <= budget_bytes:
            break
        if (folder.resolve() in protected or now - used < RECENTLY_USED_SECONDS
                or pinned(folder)):
            continue
        log.info("Removing the least recently used upload %s (%s) to keep the uploads under "
                 "%s", folder, _format_bytes(size), _format_bytes(budget_bytes))
        with contextlib.suppress(OSError):
            (folder / UPLOAD_MARKER).unlink()
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(_pins(folder), ignore_errors=True)
        total -= size
        removed.append(folder)
    return removed
