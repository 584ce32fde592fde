"""A saved dataset's parts: what the store lists (SavedDataset), what adding photos did
(AddResult), and its files (the lock, counts, names of stored photos, copies by content)."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.config import MIN_IMAGES_PER_CLASS
from core.data import images, uploads
from core.errors import DatasetError, ImageError

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"
RECOMMENDED_PER_CLASS = 10


@dataclass(frozen=True)
class SavedDataset:
    """One saved dataset as listed.

    Attributes:
        id: Its folder name under <home>/saved-datasets (stable across renames).
        name: Its name for people (unique, ignoring case).
        created: When it was saved (UTC, ISO 8601).
        source: Where it came from: "built here", the zip's name or the folder's path.
        kind: "built", "upload" or "folder".
        root: The folder holding its class folders.
        classes: Class name -> number of photo files.
        runs: Ids of the runs trained on it, newest first.
        damaged: Why its record (saved.json) cannot be used, or None. A damaged dataset is
            listed so that it does not vanish without a word; it can only be deleted.
    """

    id: str
    name: str
    created: str
    source: str
    kind: str
    root: Path
    classes: dict[str, int] = field(default_factory=dict)
    runs: list[str] = field(default_factory=list)
    damaged: str | None = None

    @property
    def available(self) -> bool:
        """Whether its photos are on the server: a server folder may have been moved or
        deleted (the uploads' size budget never removes an upload a saved dataset uses)."""
        return self.damaged is None and self.root.is_dir()

    @property
    def photos(self) -> int:
        """Photo files over all classes."""
        return sum(self.classes.values())

    def short_classes(self) -> list[str]:
        """Classes with fewer photos than a split needs."""
        return [c for c, n in self.classes.items() if n < MIN_IMAGES_PER_CLASS]

    def ready(self) -> bool:
        """Whether it has two classes or more, each with enough photos to split."""
        return len(self.classes) >= 2 and not self.short_classes()

    def to_dict(self) -> dict[str, Any]:
        """{"name", "classes", "created", "source", "runs"}, as `python -m core datasets`."""
        return {"name": self.name, "classes": dict(self.classes), "created": self.created,
                "source": self.source, "runs": list(self.runs),
                **({"damaged": self.damaged} if self.damaged else {})}


@dataclass
class AddResult:
    """What became of photos offered to a class.

    Attributes:
        added: Stored file names of the photos added.
        duplicates: Photos already in the dataset, as {"file", "reason"}; not added again.
        refused: Photos that cannot be used, as {"file", "reason"}.
        problem: What stopped the adding (a full disk), or None; the photos not added
            because of it are in refused.
    """

    added: list[str] = field(default_factory=list)
    duplicates: list[dict[str, str]] = field(default_factory=list)
    refused: list[dict[str, str]] = field(default_factory=list)
    problem: str | None = None


@contextlib.contextmanager
def _locked(folder: Path, *, create: bool = True) -> Iterator[None]:
    """An exclusive lock on folder (threads and processes alike), held inside the block.

    Raises:
        DatasetError: create is False and the folder is gone (the dataset was deleted).
    """
    if create:
        folder.mkdir(parents=True, exist_ok=True)
    try:
        fh = open(folder / LOCK_FILE, "a+b")
    except FileNotFoundError as exc:
        raise DatasetError("This dataset was deleted meanwhile (perhaps in another tab). "
                           "Reload the page.") from exc
    with fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _visible(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if not uploads.is_ignored_name(p.name)
                      and p.name != uploads.UPLOAD_MARKER)
    except OSError:
        return []


def _count_files(folder: Path) -> int:
    total = 0
    for dirpath, dirnames, names in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not uploads.is_ignored_name(d)]
        total += sum(1 for n in names if not uploads.is_ignored_name(n))
    return total


def class_counts(root: Path) -> dict[str, int]:
    """Class folder name -> number of visible files under it (any depth)."""
    return {p.name: _count_files(p) for p in _visible(root) if p.is_dir()}


def _link_by_content(src: str, dst: str) -> None:
    """copytree's copy function: the file under <sha256[:24]><suffix>, as photos added here
    are named, so a photo added later is known as a duplicate; a hard link where possible.

    Only regular files up to the size limit are copied: a named pipe or a link to a device
    in a server folder must not hang the copy (and the dataset's lock) or read forever.
    """
    try:
        fh = images.open_regular(src)
    except (ImageError, OSError) as exc:
        log.warning("Not copying %s into the saved dataset: %s", src, exc)
        return
    digest = hashlib.sha256()
    with fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    target = Path(dst).with_name(stored_name(Path(src).name, digest.hexdigest()[:24],
                                             Path(src).suffix.lower()))
    if any(target.parent.glob(f"*{digest.hexdigest()[:_HASH_CHARS]}.*")):
        # an identical file in the same folder: ingestion keeps one anyway
        return
    try:
        os.link(src, target)
    except OSError:
        shutil.copy2(src, target)


# A stored photo is "<the name it was given>~<content hash><suffix>": the hash keeps two
# photos from sharing a file, the given name is what people see (given_name()).
_HASH_CHARS = 24
_STORED = re.compile(r"^(?P<given>.*)~(?P<hash>[0-9a-f]{24})(?P<suffix>\.[A-Za-z0-9]+)$")
_GIVEN_MAX_CHARS = 80


def stored_name(given: str, digest: str, suffix: str) -> str:
    """The file name of a photo given this name, with this content hash and format suffix."""
    stem = "".join(c if c.isalnum() or c in " -_.()" else "_" for c in Path(given).stem)
    stem = stem.strip(" .")[:_GIVEN_MAX_CHARS] or "photo"
    return f"{stem}~{digest[:_HASH_CHARS]}{suffix}"


def given_name(path: str | Path) -> str:
    """The name a photo was given when added ("daisy 1.jpg"); other names as they are."""
    name = Path(path).name
    match = _STORED.match(name)
    return f"{match['given']}{match['suffix']}" if match else name


def _not_copied(folder: str, names: list[str]) -> list[str]:
    """copytree's ignore: hidden and system files, and linked folders (a link to / or to a
    parent would copy the whole disk or never end)."""
    return [n for n in names if uploads.is_ignored_name(n)
            or os.path.islink(os.path.join(folder, n)) and os.path.isdir(os.path.join(folder, n))]
