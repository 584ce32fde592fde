"""Which files under a dataset folder are candidates: class folders, refusals without reading.

The walk never opens a file: special files (pipes, devices), names that are not UTF-8 and,
on a server sharing only some folders, links leading out of them are refused by their
type, name or real place. Their contents are checked later, in core.data.datasets.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from core.data import images, names, uploads
from core.data.uploads import UPLOAD_MARKER

# Extensions that make a loose top-level file count as an image when deciding whether a
# single folder wraps the dataset (before content is checked).
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff",
     ".mpo", ".heic", ".heif"}
)


@dataclass
class Layout:
    """Files found under a dataset root, before their content is checked."""

    root: Path
    class_files: dict[str, list[Path]]  # folder name -> files, sorted
    top_files: list[Path]  # loose files directly under root
    ignored: int
    refused: list[tuple[Path, str]] = field(default_factory=list)  # (file, why), never read


OUTSIDE_SHARED = ("a link to a place outside the folders this server shares: copy the photo "
                  "into the folder instead")


def confine(layout: Layout, within: Sequence[Path]) -> None:
    """Refuses, without reading, every file whose real place (links followed) is outside
    within: a link planted in a shared folder must not lead a visitor to other files."""
    roots = [Path(root).resolve() for root in within]

    def inside(path: Path) -> bool:
        real = path.resolve()
        return any(real == root or root in real.parents for root in roots)

    for name, paths in list(layout.class_files.items()):
        verdicts = [(p, inside(p)) for p in paths]
        kept = [p for p, ok in verdicts if ok]
        layout.refused.extend((p, OUTSIDE_SHARED) for p, ok in verdicts if not ok)
        if kept or not paths:
            layout.class_files[name] = kept
        else:  # a linked class folder: not a class of this dataset
            del layout.class_files[name]
    verdicts = [(p, inside(p)) for p in layout.top_files]
    layout.refused.extend((p, OUTSIDE_SHARED) for p, ok in verdicts if not ok)
    layout.top_files = [p for p, ok in verdicts if ok]


def _count_files(folder: Path) -> int:
    total = 0
    for _dirpath, _dirs, files in os.walk(folder):
        total += len(files)
    return total


def _visible_children(folder: Path) -> tuple[list[Path], list[Path], int]:
    """(sub-folders, files, ignored file count) directly inside folder, sorted."""
    dirs: list[Path] = []
    files: list[Path] = []
    ignored = 0
    with os.scandir(folder) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.name == UPLOAD_MARKER:
                continue
            is_dir = entry.is_dir()
            if uploads.is_ignored_name(entry.name):
                ignored += _count_files(Path(entry.path)) if is_dir else 1
            elif is_dir:
                dirs.append(Path(entry.path))
            elif entry.is_file():
                files.append(Path(entry.path))
    return dirs, files, ignored


def is_utf8(name: str) -> bool:
    """Whether a file name (as os.fsdecode gives it) is valid UTF-8 text.

    On Linux a name is any bytes; the ones that are not UTF-8 come back with surrogate
    escapes, which no file format of the index (CSV, JSON, Arrow) can hold.
    """
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable(name: str) -> str:
    """A name safe to show and store: bytes that are not UTF-8 become U+FFFD."""
    return os.fsencode(name).decode("utf-8", "replace")


CONTROL_NAME = (f"its name {names.CONTROL_REASON}, which would break labels.txt, CSV "
                "files and terminals; rename it and load the folder again")
NOT_UTF8 = ("its name is not valid UTF-8 text, so it cannot be stored in the dataset "
             "index; rename it (for example with convmv) and load the folder again")


def _refusal(path: Path) -> str | None:
    """Why a file found by the walk must not be read at all, or None.

    The type is checked with stat, without opening: only regular files (or links to
    them) are candidates. Opening a named pipe waits for a writer, and a device such as
    /dev/zero never ends.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        return f"cannot read the file: {exc.strerror or exc}"
    if not stat.S_ISREG(mode):
        return images.NOT_REGULAR_FILE
    return None


def _walk_files(folder: Path) -> tuple[list[Path], int, list[tuple[Path, str]]]:
    """All visible files under folder (any depth), sorted, the count of ignored ones, and
    the files refused without reading (special files, names that are not UTF-8)."""
    found: list[Path] = []
    refused: list[tuple[Path, str]] = []
    ignored = 0
    for dirpath, dirnames, filenames in os.walk(folder):
        keep = []
        for d in dirnames:
            if uploads.is_ignored_name(d):
                ignored += _count_files(Path(dirpath) / d)
            else:
                keep.append(d)
        dirnames[:] = sorted(keep)
        for name in filenames:
            path = Path(dirpath) / name
            if uploads.is_ignored_name(name) or name == UPLOAD_MARKER:
                ignored += name != UPLOAD_MARKER
            elif not is_utf8(str(path)):
                refused.append((path, NOT_UTF8))
            elif names.has_control(name):
                refused.append((path, CONTROL_NAME))
            elif (reason := _refusal(path)) is not None:
                refused.append((path, reason))
            else:
                found.append(path)
    return sorted(found), ignored, refused


def scan(top: Path) -> Layout:
    """Finds the dataset root (unwrapping single wrapping folders) and its class folders."""
    root = top
    ignored = 0
    dirs, files, hidden = _visible_children(root)
    # A lone folder that itself holds folders wraps the dataset (flowers.zip -> flowers/...).
    # A lone folder holding only images is a (single) class, so it is not unwrapped.
    while len(dirs) == 1 and not any(f.suffix.lower() in IMAGE_SUFFIXES for f in files):
        sub_dirs, sub_files, sub_hidden = _visible_children(dirs[0])
        if not sub_dirs:
            break
        ignored += hidden + len(files)  # loose non-image files beside the wrapper
        root, dirs, files, hidden = dirs[0], sub_dirs, sub_files, sub_hidden
    ignored += hidden
    class_files: dict[str, list[Path]] = {}
    refused: list[tuple[Path, str]] = []
    for folder in dirs:
        found, skipped, not_read = _walk_files(folder)
        ignored += skipped
        if is_utf8(folder.name) and not names.has_control(folder.name):
            class_files[folder.name] = found
            refused.extend(not_read)
        else:  # not a class: its name could not be a label
            reason = (NOT_UTF8 if not is_utf8(folder.name) else CONTROL_NAME).replace(
                "its name", "its class folder's name")
            refused.extend((path, reason) for path in sorted(found + [p for p, _ in not_read]))
    return Layout(root, class_files, files, ignored, refused)
