"""Files of the studio's state: atomic writes, JSON and JSON-lines reading, process liveness.

Every module that writes state writes it through here, so a reader never sees half a file and
a crash leaves the previous version intact.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import errno
import hashlib
import json
import logging
import math
import os
import shutil
import socket
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import AppError, DiskFullError

log = logging.getLogger(__name__)


def fsync_dir(folder: Path) -> None:
    """Makes a rename durable; some file systems cannot fsync a folder, which is harmless."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def disk_full(path: str | Path, needed_bytes: int | None = None,
              what: str | None = None) -> DiskFullError:
    """The error for a write that found the disk full: which disk, how much is free, about
    how much was needed, and that what was saved before is kept.

    Args:
        path: The file being written.
        needed_bytes: About how much the write needed, when known.
        what: Who needed it ("the run", "the photo"); guessed from the path when None.
    """
    path = Path(path)
    folder = next((p for p in (path, *path.parents) if p.is_dir()), Path("/"))
    try:
        free = shutil.disk_usage(folder).free / 1e6
    except OSError:
        free = 0.0
    what = what or ("the run" if "runs" in path.parts else "this")
    needs = (f", {what} needs about {max(needed_bytes / 1e6, 0.1):.1f} MB more"
             if needed_bytes else "")
    error = DiskFullError(f"The disk holding {folder} is full: {free:.0f} MB free{needs}. "
                          "What was saved before is kept; free some space (or move the studio "
                          "home to a larger disk) and try again.")
    error.errno = errno.ENOSPC  # still reads as "no space left" to code that checks
    return error


def write_bytes_atomic(path: str | Path, data: bytes, *, durable: bool = True) -> None:
    """Writes data to path so readers see either the old file or the new one, never a part.

    Args:
        path: Destination file; its folder must exist.
        data: The complete new content.
        durable: Flush the file and its folder to disk before returning. Only a cache whose
            reader checks every file (and recomputes a missing one) passes False: thousands
            of small files a run would otherwise wait for the disk.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o644)  # mkstemp's 0600 would hide runs from other users
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, DiskFullError) \
                and exc.errno in FULL_ERRNOS:
            raise disk_full(path, len(data)) from exc
        raise
    if durable:
        fsync_dir(path.parent)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Writes UTF-8 text atomically (see write_bytes_atomic)."""
    write_bytes_atomic(path, text.encode("utf-8"))


def to_jsonable(obj: Any) -> Any:
    """Converts numpy scalars/arrays, paths, dates, tuples and dataclasses to plain JSON values.

    Non-finite floats become None, so the files stay valid JSON for any reader.
    """
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = sorted(obj, key=str) if isinstance(obj, (set, frozenset)) else obj
        return [to_jsonable(v) for v in items]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        return value if math.isfinite(value) else None
    if obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (dt.datetime, dt.date)):
        return obj.isoformat()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    to_dict = getattr(obj, "to_dict", None)
    if callable(to_dict):
        return to_jsonable(to_dict())
    raise TypeError(f"cannot store a {type(obj).__name__} as JSON: {obj!r}")


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Writes obj as indented JSON atomically (see write_bytes_atomic and to_jsonable)."""
    text = json.dumps(to_jsonable(obj), indent=2, ensure_ascii=False, allow_nan=False)
    write_text_atomic(path, text + "\n")


def file_sha256(path: str | Path) -> str:
    """The file's sha256 (hex), read in blocks (hashlib.file_digest)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def read_json(path: str | Path) -> Any:
    """Reads a JSON file; raises OSError or ValueError when it is missing or corrupt."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def read_events(path: str | Path) -> list[dict[str, Any]]:
    """Reads an append-only JSON-lines file, skipping torn or corrupt lines.

    A process killed in the middle of an append leaves a partial last line; that line (and
    any other line that is not a JSON object) is skipped, not raised.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    events: list[dict[str, Any]] = []
    skipped = 0
    for line in raw.split(b"\n"):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError:
            skipped += 1
            continue
        if isinstance(value, dict):
            events.append(value)
        else:
            skipped += 1
    if skipped:
        log.warning("Skipped %d torn or corrupt line(s) in %s", skipped, path)
    return events


def proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks) of a Linux process, or None where /proc is absent."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may contain spaces and parentheses; the fields after the last ")" do not.
    fields = text[text.rfind(")") + 2:].split()
    if len(fields) < 20:
        return None
    return fields[0], fields[19]


def own_process_facts() -> dict[str, Any]:
    pid = os.getpid()
    stat = proc_stat(pid)
    return {"pid": pid, "hostname": socket.gethostname(), "pid_started": stat[1] if stat else None}


def process_alive(status: Mapping[str, Any]) -> bool:
    """Whether the process that wrote a status record (own_process_facts) may still run.

    Only a process on this host can be checked; on another host the answer is True (unknown).
    A recorded process start time guards against the pid having been reused.
    """
    pid = status.get("pid")
    if not isinstance(pid, int) or pid <= 0 or status.get("hostname") != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    stat = proc_stat(pid)
    if stat is None:
        return True
    state, started = stat
    if state in ("Z", "X"):  # killed but not yet reaped by its parent
        return False
    recorded = status.get("pid_started")
    return recorded is None or str(recorded) == started


# ----------------------------------------------------------------------------- where an --out may write
# Where an --out may write: a regular file or a folder, never a device, pipe or socket.
# 
# Files are written atomically (a temporary file renamed over the target), and a rename over
# /dev/full, a named pipe or a symbolic link would replace it: as root, a system device. So an
# output path is checked first. A symbolic link is written through to the regular file or folder
# it leads to, as Unix tools do; anything else that is not a regular file or folder is refused
# with a message.






class OutputError(AppError):
    """An --out path that is not a regular file or folder (or cannot hold one)."""


def kind_of(mode: int) -> str:
    """What a file mode is, in words."""
    for test, words in ((stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a folder"),
                        (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                        (stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"),
                        (stat.S_ISLNK, "a symbolic link")):
        if test(mode):
            return words
    return "a special file"


def _through_link(path: Path) -> tuple[Path, os.stat_result | None]:
    """(path or where its links lead, its stat or None when missing)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return path, None
    if not stat.S_ISLNK(info.st_mode):
        return path, info
    target = path.resolve()
    try:
        return target, os.stat(target)
    except FileNotFoundError:
        raise OutputError(f"{path} is a symbolic link to {target}, which does not exist. "
                          "Give a regular file's path with --out.") from None


def file_target(path: str | Path) -> Path:
    """The regular file to write for `--out FILE`: path (new or a regular file), or the
    regular file a symbolic link leads to.

    Raises:
        OutputError: path is (or leads to) a folder, a device, a pipe or a socket, or its
            folder does not exist.
    """
    given = Path(path).expanduser()
    target, info = _through_link(given)
    if info is None:
        parent = target.parent
        if not parent.is_dir():
            raise OutputError(f"Cannot write {given}: the folder {parent} does not exist. "
                              "Create it, or give another path with --out.")
        return target
    if not stat.S_ISREG(info.st_mode):
        via = f" (through the link to {target})" if target != given else ""
        raise OutputError(f"{given} is {kind_of(info.st_mode)}{via}, not a regular file: "
                          "nothing was written. Give a file's path with --out.")
    return target


def folder_target(path: str | Path) -> Path:
    """The folder to write in for `--out DIR`: path (new or a folder), or the folder a
    symbolic link leads to.

    Raises:
        OutputError: path is (or leads to) something other than a folder.
    """
    given = Path(path).expanduser()
    target, info = _through_link(given)
    if info is not None and not stat.S_ISDIR(info.st_mode):
        via = f" (through the link to {target})" if target != given else ""
        raise OutputError(f"{given} is {kind_of(info.st_mode)}{via}, not a folder: nothing "
                          "was written. Give a folder with --out.")
    return target


def replaceable_folder(path: Path) -> None:
    """Raises OutputError unless path is missing or a real folder (not a link, device...),
    before a folder is renamed over it."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(info.st_mode):
        raise OutputError(f"{path} is {kind_of(info.st_mode)}, not a folder the studio made: "
                          "it was left alone and nothing was written. Move it away, or "
                          "choose another folder with --out.")
