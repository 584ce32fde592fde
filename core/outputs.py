"""Where an --out may write: a regular file or a folder, never a device, pipe or socket.

Files are written atomically (a temporary file renamed over the target), and a rename over
/dev/full, a named pipe or a symbolic link would replace it: as root, a system device. So an
output path is checked first. A symbolic link is written through to the regular file or folder
it leads to, as Unix tools do; anything else that is not a regular file or folder is refused
with a message.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from core.errors import AppError


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
