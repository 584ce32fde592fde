"""Saved datasets (<home>/saved-datasets): built here, or uploads and folders registered on use.

Each saved dataset is a folder <home>/saved-datasets/<id>/ with saved.json (name, created,
source, kind, root) and, for datasets built or changed here, photos/<class>/<file>. An
uploaded zip or a server folder is registered, not copied: its root is recorded. The first
change to it (a photo or class added, renamed or removed) copies its class folders into
photos/ (hard links where possible), so the upload or the folder itself never changes.

Every photo is checked like an upload (core.data.images.probe_file) before it is written, and
written atomically under a name made from its content hash, so two sessions adding at once
never overwrite each other and a crash never leaves half a photo.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import io
import logging
import os
import re
import shutil
import tempfile
import uuid
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core import files, schema
from core.config import MIN_IMAGES_PER_CLASS, IngestConfig, studio_home
from core.data import images, upload_space, uploads
from core.data import schemas as saved_schema
from core.data.names import clean_name, refuse_duplicate, same_name, unique_name
from core.errors import DatasetError, ImageError

log = logging.getLogger(__name__)

STORE_DIR = "saved-datasets"  # not "datasets": the container mounts photos at /data/datasets
META_FILE = "saved.json"
PHOTOS_DIR = "photos"
LOCK_FILE = ".lock"
RECOMMENDED_PER_CLASS = 10
KINDS = ("built", "upload", "folder")
_SUFFIX = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "GIF": ".gif", "BMP": ".bmp",
           "WEBP": ".webp", "TIFF": ".tif"}


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


class DatasetStore:
    """The saved datasets of one studio home."""

    def __init__(self, home: str | Path | None = None) -> None:
        self.home = studio_home(home)
        self.dir = self.home / STORE_DIR

    # -- reading ----------------------------------------------------------------------

    def _records(self) -> list[tuple[Path, dict[str, Any] | None, str | None]]:
        """(folder, record, None) of each saved dataset, or (folder, None, why) when its
        record is missing or damaged."""
        found: list[tuple[Path, dict[str, Any] | None, str | None]] = []
        for folder in _visible(self.dir):
            if not folder.is_dir() or folder.name.startswith("."):
                continue
            try:
                meta = schema.check(files.read_json(folder / META_FILE), saved_schema.SAVED,
                                    META_FILE)
            except FileNotFoundError:  # being created or deleted right now
                continue
            except schema.SchemaError as exc:
                found.append((folder, None, f"{META_FILE} is damaged: {exc}"))
                continue
            except (OSError, ValueError) as exc:
                found.append((folder, None, f"{META_FILE} cannot be read ({exc})"))
                continue
            found.append((folder, meta, None))
        return found

    def _metas(self) -> list[tuple[Path, dict[str, Any]]]:
        return [(folder, meta) for folder, meta, _why in self._records() if meta is not None]

    def _damaged(self, folder: Path, why: str) -> SavedDataset:
        return SavedDataset(id=folder.name, name=f"damaged dataset {folder.name}", created="",
                            source="", kind="damaged", root=folder / PHOTOS_DIR,
                            damaged=f"{why}. Delete it, or fix {folder / META_FILE}.")

    def _root(self, folder: Path, meta: dict[str, Any]) -> Path:
        return Path(meta["root"]) if meta.get("root") else folder / PHOTOS_DIR

    def _roots_of(self, folder: Path, meta: dict[str, Any]) -> set[str]:
        return {str(self._root(folder, meta)), *meta.get("past_roots", [])}

    def _runs_by_root(self) -> dict[str, list[str]]:
        """Dataset root -> ids of the runs trained on it (from the run list, which the run
        index keeps: no run folder is read when nothing changed)."""
        from core.runs.store import RunStore

        found: dict[str, list[str]] = {}
        for summary in RunStore(self.home).list():
            if summary.dataset_root:
                found.setdefault(str(Path(summary.dataset_root)), []).append(summary.run_id)
        return found

    def _saved(self, folder: Path, meta: dict[str, Any],
               runs: dict[str, list[str]] | None) -> SavedDataset:
        root = self._root(folder, meta)
        used = ([] if runs is None else
                [r for key in sorted(self._roots_of(folder, meta)) for r in runs.get(key, [])])
        return SavedDataset(
            id=folder.name, name=meta["name"], created=str(meta.get("created", "")),
            source=str(meta.get("source", "")), kind=str(meta.get("kind", "built")),
            root=root, classes=class_counts(root), runs=used,
        )

    def list(self, *, with_runs: bool = True) -> list[SavedDataset]:
        """Every saved dataset, newest first (with the runs trained on each)."""
        runs = self._runs_by_root() if with_runs else None
        saved = [self._saved(folder, meta, runs) if meta is not None
                 else self._damaged(folder, str(why)) for folder, meta, why in self._records()]
        saved.sort(key=lambda s: (s.created, s.name), reverse=True)
        return saved

    def _find(self, name: str) -> tuple[Path, dict[str, Any]] | None:
        for folder, meta in self._metas():
            if same_name(meta["name"], name) or folder.name == name:
                return folder, meta
        return None

    def _require(self, name: str) -> tuple[Path, dict[str, Any]]:
        found = self._find(name)
        if found is None:
            known = ", ".join(sorted(m["name"] for _f, m in self._metas())) or "none yet"
            raise DatasetError(f"No saved dataset is named '{name}' (saved: {known}). Check "
                               "the name with `python -m core datasets`, or give a path.")
        return found

    def find(self, name: str) -> SavedDataset | None:
        """The saved dataset of that name (ignoring case), or None."""
        found = self._find(name)
        return None if found is None else self._saved(*found, self._runs_by_root())

    def get(self, name: str) -> SavedDataset:
        """The saved dataset of that name; DatasetError naming the saved ones when unknown."""
        return self._saved(*self._require(name), self._runs_by_root())

    def resolve_source(self, text: str | Path) -> str | Path:
        """What ingest should read for a command-line argument: an existing path as given,
        else the root of the saved dataset of that name.

        Raises:
            DatasetError: Neither a path nor a saved dataset's name; names the saved ones.
        """
        if isinstance(text, str) and not Path(text).expanduser().exists():
            found = self._find(text)
            if found is not None:
                return self._root(*found)
            known = ", ".join(sorted(m["name"] for _f, m in self._metas())) or "none yet"
            raise DatasetError(f"{text} does not exist, and no saved dataset has that name "
                               f"(saved: {known}). Give a folder with one sub-folder per "
                               "class, a zip of such folders, or a saved dataset's name.")
        return text

    # -- saving -----------------------------------------------------------------------

    def _new(self, name: str, source: str, kind: str, root: Path | None) -> SavedDataset:
        folder = self.dir / uuid.uuid4().hex[:12]
        folder.mkdir(parents=True)
        if root is None:
            (folder / PHOTOS_DIR).mkdir()
        files.write_json_atomic(folder / META_FILE, {
            "name": name, "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "source": source, "kind": kind, "root": str(root) if root else None,
            "past_roots": [],
        })
        log.info("Saved dataset %s as %s", name, folder)
        return self._saved(folder, files.read_json(folder / META_FILE), {})

    def create(self, name: str) -> SavedDataset:
        """A new empty dataset built here; DatasetError when the name is invalid or taken."""
        name = clean_name(name, "dataset")
        with _locked(self.dir):
            refuse_duplicate(name, (m["name"] for _f, m in self._metas()), "dataset")
            return self._new(name, "built here", "built", None)

    def register(self, root: str | Path, *, name: str, source: str, kind: str) -> SavedDataset:
        """The saved dataset for an ingested upload or folder, saving it the first time.

        Args:
            root: The dataset root (class folders directly under it), as ingest found it.
            name: Preferred name (the zip's or folder's name); made valid and unique.
            source: Where it came from, shown in the list.
            kind: "upload" or "folder".
        """
        root = Path(root).resolve()
        with _locked(self.dir):
            metas = self._metas()
            for folder, meta in metas:
                if str(root) in self._roots_of(folder, meta):
                    if meta.get("root") == str(root):
                        self._pin(root, folder)
                    return self._saved(folder, meta, None)
            try:
                base = clean_name(Path(name).stem if name.lower().endswith(".zip") else name,
                                  "dataset")
            except DatasetError:
                base = "dataset"
            unique = unique_name(base, (m["name"] for _f, m in metas))
            saved = self._new(unique, source, kind, root)
            self._pin(root, self.dir / saved.id)
            return saved

    def _pin(self, root: Path, folder: Path) -> None:
        """Keeps an upload's extraction from the uploads' size budget while folder exists."""
        try:
            upload_space.pin(root, folder, self.home)
        except OSError as exc:  # the dataset is saved all the same; the budget may take it
            log.warning("Could not keep %s from the uploads' size budget: %s", root, exc)

    def rename(self, name: str, new_name: str) -> SavedDataset:
        """Renames a saved dataset; its runs keep pointing to it."""
        new_name = clean_name(new_name, "dataset")
        with _locked(self.dir):
            folder, meta = self._require(name)
            refuse_duplicate(new_name, (m["name"] for f, m in self._metas() if f != folder),
                             "dataset")
            meta["name"] = new_name
            files.write_json_atomic(folder / META_FILE, meta)
        return self.get(new_name)

    def delete(self, name: str, *, confirm_runs: bool = False) -> list[str]:
        """Deletes a saved dataset; returns the ids of the runs trained on it.

        The runs keep their models, so they still load and predict. A registered server
        folder itself is never deleted, only its entry.

        Raises:
            DatasetError: Runs were trained on it and confirm_runs is False; names them.
        """
        with _locked(self.dir):
            damaged = next((f for f, meta, _why in self._records()
                            if meta is None and f.name == name), None)
            if damaged is not None:  # its record cannot be read: only deleting it is offered
                shutil.rmtree(damaged, ignore_errors=True)
                log.info("Deleted the damaged saved dataset %s", damaged)
                return []
            folder, meta = self._require(name)
            self._refuse_if_training(folder, meta)
            runs = self._saved(folder, meta, self._runs_by_root()).runs
            if runs and not confirm_runs:
                raise DatasetError(f"Runs were trained on '{meta['name']}': {', '.join(runs)}. "
                                   "They keep working without it; confirm to delete it anyway.")
            with _locked(folder, create=False):  # waits for a change under way to end
                with contextlib.suppress(OSError):
                    (folder / META_FILE).unlink()  # unlisted first: no reader sees half of it
                shutil.rmtree(folder, ignore_errors=True)
        log.info("Deleted saved dataset %s (%s)", meta["name"], folder)
        return runs

    def _refuse_if_training(self, folder: Path, meta: dict[str, Any]) -> None:
        """DatasetError when a run still training reads its photos."""
        from core.runs.store import RunStore
        from core.status import RUNNING

        roots = [Path(r) for r in self._roots_of(folder, meta)]

        def reads_it(run_root: str | None) -> bool:  # its root, or a folder it unwrapped
            return bool(run_root) and any(Path(run_root) == r or r in Path(run_root).parents
                                          for r in roots)

        busy = [s.run_id for s in RunStore(self.home).list()
                if s.status == RUNNING and reads_it(s.dataset_root)]
        if busy:
            raise DatasetError(f"'{meta['name']}' is in use by a training; cancel it first "
                               f"(run {', '.join(busy)}), then delete the dataset.")

    # -- classes and photos -----------------------------------------------------------

    def _own_root(self, folder: Path, meta: dict[str, Any]) -> Path:
        """photos/ of the dataset, copying a registered root there first (under its lock).

        The copies are named by content like the photos added here (see _link_by_content).
        """
        photos = folder / PHOTOS_DIR
        if not meta.get("root"):
            photos.mkdir(exist_ok=True)
            return photos
        source = Path(meta["root"])
        tmp = Path(tempfile.mkdtemp(prefix=".copying-", dir=folder))
        for cls in _visible(source):
            if cls.is_dir():
                shutil.copytree(cls, tmp / cls.name, copy_function=_link_by_content,
                                ignore=_not_copied)
        os.replace(tmp, photos)
        meta["past_roots"] = sorted({*meta.get("past_roots", []), str(source)})
        meta["root"] = None
        files.write_json_atomic(folder / META_FILE, meta)
        upload_space.unpin(source, folder, self.home)  # its photos are its own now
        log.info("Copied %s into saved dataset %s before changing it", source, meta["name"])
        return photos

    @contextlib.contextmanager
    def _changing(self, name: str) -> Iterator[Path]:
        """Locks a dataset for a change and yields its own class folder root."""
        folder, _meta = self._require(name)
        with _locked(folder, create=False):
            folder, meta = self._require(name)  # re-read: it may have changed meanwhile
            yield self._own_root(folder, meta)

    @staticmethod
    def _class_dir(root: Path, cls: str) -> Path:
        for p in _visible(root):
            if p.is_dir() and same_name(p.name, cls):
                return p
        raise DatasetError(f"There is no class '{cls}' in this dataset. Add it first.")

    def add_class(self, name: str, cls: str) -> str:
        """Adds an empty class; returns its stored name."""
        cls = clean_name(cls)
        with self._changing(name) as root:
            refuse_duplicate(cls, (p.name for p in _visible(root) if p.is_dir()))
            (root / cls).mkdir()
        return cls

    def rename_class(self, name: str, cls: str, new_cls: str) -> str:
        """Renames a class (its photos stay); returns the new name."""
        new_cls = clean_name(new_cls)
        with self._changing(name) as root:
            old = self._class_dir(root, cls)
            refuse_duplicate(new_cls, (p.name for p in _visible(root)
                                       if p.is_dir() and p != old))
            os.rename(old, root / new_cls)
            files.fsync_dir(root)
        return new_cls

    def remove_class(self, name: str, cls: str) -> None:
        """Removes a class and its photos."""
        with self._changing(name) as root:
            shutil.rmtree(self._class_dir(root, cls))

    def photos(self, name: str, cls: str) -> list[Path]:
        """The photo files of a class, sorted by name."""
        root = self._root(*self._require(name))
        return sorted(p for p in self._class_dir(root, cls).rglob("*")
                      if p.is_file() and not uploads.is_ignored_name(p.name))

    def remove_photo(self, name: str, cls: str, file_name: str) -> None:
        """Removes one photo (its file name as listed by photos())."""
        with self._changing(name) as root:
            target = self._class_dir(root, cls) / file_name
            if Path(file_name).name != file_name or not target.is_file():
                raise DatasetError(f"'{file_name}' is not a photo of class '{cls}'; it may "
                                   "have been removed already. Reload the page.")
            target.unlink()
            files.fsync_dir(target.parent)

    def add_photos(self, name: str, cls: str, photos: Iterable[tuple[str, bytes]],
                   config: IngestConfig = IngestConfig()) -> AddResult:
        """Checks photos like an upload and adds the usable ones to a class.

        Each photo is decoded by content (EXIF orientation and colour profile applied as
        ingestion does); broken, tiny and gigantic files are refused with the reason, and a
        photo already in the dataset (same bytes) is reported, not added again. Each one is
        written atomically under <sha256>.<format suffix>, so concurrent additions are safe.

        Args:
            name: The saved dataset.
            cls: One of its classes.
            photos: (file name for messages, bytes) pairs.
            config: The limits of ingestion (pixels, smallest side, file size).
        """
        result = AddResult()
        with self._changing(name) as root:
            target = self._class_dir(root, cls)
            others = [p for p in _visible(root) if p.is_dir() and p != target]
            work = Path(tempfile.mkdtemp(prefix=".incoming-", dir=root.parent))
            pending = list(photos)
            try:
                for n, (label, data) in enumerate(pending):
                    try:
                        self._add_one(label, data, target, others, work, config, result)
                    except OSError as exc:
                        if exc.errno not in files.FULL_ERRNOS:
                            raise
                        # Keep what was added; say which photos were not, and why.
                        full = files.disk_full(target / label, len(data), "the photo")
                        result.problem = str(full)
                        result.refused.extend({"file": name, "reason": "not added: the disk "
                                               "is full"} for name, _ in pending[n:])
                        break
            finally:
                shutil.rmtree(work, ignore_errors=True)
        return result

    @staticmethod
    def _add_one(label: str, data: bytes, target: Path, others: list[Path], work: Path,
                 config: IngestConfig, result: AddResult) -> None:
        if len(data) > config.max_file_bytes:
            result.refused.append({"file": label, "reason": "too large a file (over "
                                   f"{config.max_file_bytes // 2**20} MB); use a smaller copy"})
            return
        probe_path = work / uuid.uuid4().hex
        probe_path.write_bytes(data)
        probe = images.probe_file(str(probe_path), max_pixels=config.max_pixels,
                                  min_side=config.min_side, max_bytes=config.max_file_bytes)
        probe_path.unlink()
        if not probe.ok:
            result.refused.append({"file": label, "reason": probe.reason})
            return
        stem = probe.sha256[:24]
        suffix = _SUFFIX.get(probe.info.format.upper(), Path(label).suffix.lower() or ".img")
        for folder in [target, *others]:
            if any(folder.glob(f"*{stem}.*")):
                where = "this class" if folder == target else f"class '{folder.name}'"
                result.duplicates.append({"file": label, "reason": f"already in {where}"})
                return
        stored = stored_name(label, stem, suffix)
        files.write_bytes_atomic(target / stored, data)
        result.added.append(stored)

    def zip_bytes(self, name: str) -> bytes:
        """The dataset as a zip of class folders (<name>/<class>/<photo>)."""
        folder, meta = self._require(name)
        root = self._root(folder, meta)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:  # photos are compressed
            for cls in _visible(root):
                if not cls.is_dir():
                    continue
                for path in sorted(cls.rglob("*")):
                    if path.is_file() and not uploads.is_ignored_name(path.name):
                        arc = f"{meta['name']}/{path.relative_to(root).as_posix()}"
                        zf.write(path, arc)
        return buf.getvalue()


def ingest_saved(source: str | Path | bytes | Any, *, home: str | Path | None = None,
                 name: str | None = None, config: IngestConfig = IngestConfig(),
                 on_event: Any = None, within: Any = None
                 ) -> tuple[Any, SavedDataset | None]:
    """Ingests a path, a zip (path, bytes or file) or a saved dataset's name, and saves it.

    A name that is not an existing path opens the saved dataset of that name. A zip or
    folder read for the first time becomes a saved dataset named after it (made unique).

    Args:
        source: What core.data.datasets.ingest accepts, or a saved dataset's name.
        home: Studio home.
        name: What to call an upload (its file name); default the path's name.
        config: Ingestion limits.
        on_event: ingest's progress callback (ProgressEvents).
        within: ingest's within (the folders a server shares), or None.

    Returns:
        (the core.data.datasets.Dataset, its SavedDataset); the second is None when the dataset
        could not be saved (the studio home is read-only), which never stops the reading.
    """
    from core.data import datasets

    store = DatasetStore(home)
    resolved = store.resolve_source(source) if isinstance(source, str) else source
    dataset = datasets.ingest(resolved, home=store.home, config=config,
                              on_event=on_event, within=within)
    is_path = isinstance(resolved, (str, os.PathLike))
    is_folder = is_path and Path(resolved).expanduser().is_dir()
    label = name or (Path(resolved).name if is_path else "upload")
    try:
        saved = store.register(dataset.root, name=label,
                               source=str(Path(resolved).expanduser().resolve()) if is_path
                               else label, kind="folder" if is_folder else "upload")
    except (OSError, DatasetError) as exc:
        log.warning("Could not save %s in the list of datasets: %s", label, exc)
        saved = None
    return dataset, saved
