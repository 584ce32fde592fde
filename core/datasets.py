"""Zip/folder ingestion, the validation report, duplicates, and stratified splits."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import hashlib
import io
import json
import logging
import lzma
import math
import multiprocessing
import os
import shutil
import socket
import stat
import tempfile
import time
import unicodedata
import uuid
import zipfile
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

import numpy as np
import pandas as pd

from core import images
from core.config import IngestConfig, SplitConfig, studio_home
from core.errors import DatasetError

log = logging.getLogger(__name__)

INDEX_COLUMNS = ["path", "label", "label_index", "sha256", "width", "height", "format"]
SPLIT_COLUMN = "split"
SPLITS = ("train", "val", "test")

ProgressFn = Callable[[str, int, int], None]
"""on_progress(stage, done, total); stage is "extracting" or "checking"."""

# Names skipped everywhere (compared case-insensitively); hidden names (".x") are skipped too.
IGNORED_NAMES = frozenset(
    {"__macosx", ".ds_store", "thumbs.db", "desktop.ini", ".ipynb_checkpoints", "@eadir"}
)
# Written inside an extraction folder, last, to mark it complete; never part of the data.
UPLOAD_MARKER = ".tl-studio-upload.json"
# Extensions that make a loose top-level file count as an image when deciding whether a
# single folder wraps the dataset (before content is checked).
_IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff",
     ".mpo", ".heic", ".heif"}
)
# Below this many files, probing in this process beats starting worker processes.
_POOL_MIN_FILES = 200
_SPLIT_DTYPES = {
    "path": str, "label": str, "label_index": "int64", "sha256": str, "width": "int64",
    "height": "int64", "format": str, SPLIT_COLUMN: str,
}


@dataclass
class ValidationReport:
    """What ingestion found: usable images per class and everything that was left out.

    Attributes:
        root: The dataset root folder (class folders live directly under it).
        classes: Class name -> number of usable images (0 for an empty class folder).
        rejected: Files left out, as {"file": path relative to root, "reason": why}.
        duplicates: Groups of identical files, as {"files": [...], "cross_class": bool,
            "kept": [files kept]}; cross-class groups keep nothing by default.
        ignored: Number of files skipped without a check: system and hidden files
            (__MACOSX, .DS_Store, Thumbs.db...) and non-image files beside the class
            folders (README.txt, LICENSE...).
        unassigned: Images lying at the top level, outside any class folder.
        warnings: Problems worth fixing that do not stop training.
        errors: Problems that make the dataset unusable, each saying what to do.
    """

    root: str
    classes: dict[str, int] = field(default_factory=dict)
    rejected: list[dict[str, str]] = field(default_factory=list)
    duplicates: list[dict[str, Any]] = field(default_factory=list)
    ignored: int = 0
    unassigned: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        """True when nothing stops training on this dataset."""
        return not self.errors

    @property
    def num_images(self) -> int:
        """Usable images over all classes."""
        return sum(self.classes.values())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; also carries the derived "usable" and "images" keys."""
        data = dataclasses.asdict(self)
        data["usable"] = self.usable
        data["images"] = self.num_images
        return data

    def to_json(self, indent: int | None = None) -> str:
        """The report as one JSON object."""
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ValidationReport:
        """Inverse of to_dict; derived and unknown keys are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class Dataset:
    """An ingested dataset: its root, one index row per usable image, and the report.

    Attributes:
        root: The dataset root folder.
        index: DataFrame with INDEX_COLUMNS, absolute paths, sorted by path.
        report: The validation report.
    """

    root: Path
    index: pd.DataFrame
    report: ValidationReport

    @property
    def classes(self) -> list[str]:
        """Class names with usable images, sorted; label_index is the position here."""
        return sorted(self.index["label"].unique().tolist())


# ---------------------------------------------------------------------------------------
# Zip extraction


def _is_ignored(name: str) -> bool:
    return name.startswith(".") or name.lower() in IGNORED_NAMES


def _entry_name(info: zipfile.ZipInfo) -> str:
    """The entry's name, fixing UTF-8 names stored without the UTF-8 flag."""
    name = info.filename
    if not info.flag_bits & 0x800:
        # zipfile decoded the raw bytes as CP437 (a bijection), so they can be recovered.
        # Many tools write UTF-8 without setting the flag; real CP437 rarely is valid UTF-8.
        try:
            name = name.encode("cp437").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            pass
    return name.replace("\\", "/")


def _safe_parts(name: str) -> tuple[str, ...] | None:
    """The entry's path components, or None when it could land outside the target folder."""
    if name.startswith("/") or (len(name) >= 2 and name[1] == ":" and name[0].isalpha()):
        return None
    parts = tuple(p for p in PurePosixPath(name).parts if p not in ("", "."))
    if any(p == ".." or "\x00" in p for p in parts):
        return None
    return parts


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return info.create_system == 3 and stat.S_ISLNK(info.external_attr >> 16)


def _zip_signature_error(head: bytes, what: str) -> DatasetError:
    """A DatasetError for a source that is not a zip, naming what it seems to be."""
    kinds = [
        (b"Rar!", "a RAR archive"), (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
        (b"\x1f\x8b", "a gzip/tar.gz archive"), (b"\xff\xd8\xff", "a single JPEG image"),
        (b"\x89PNG", "a single PNG image"),
    ]
    for magic, kind in kinds:
        if head.startswith(magic):
            return DatasetError(
                f"{what} is {kind}, not a zip. Use a .zip holding one folder per class, "
                "or a folder path."
            )
    if head.startswith(b"PK\x03\x04"):
        return DatasetError(
            f"{what} is a damaged or incomplete zip (its end is missing, as after an "
            "interrupted download or upload). Create the zip again and retry."
        )
    if len(head) >= 262 and head[257:262] == b"ustar":
        return DatasetError(
            f"{what} is a tar archive, not a zip. Re-pack it as .zip with one folder per class."
        )
    kind = "a zip file" if what == "The upload" else "a folder nor a zip file"
    return DatasetError(
        f"{what} is {'not' if what == 'The upload' else 'neither'} {kind}. Use a .zip "
        "holding one folder per class, or a folder path."
    )


def _hash_stream(fh: IO[bytes]) -> str:
    digest = hashlib.sha256()
    for block in iter(functools.partial(fh.read, 1 << 20), b""):
        digest.update(block)
    return digest.hexdigest()


def _format_bytes(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n} bytes"  # pragma: no cover


def _check_zip_limits(zf: zipfile.ZipFile, config: IngestConfig, home: Path) -> None:
    """Refuses a zip over the entry, size or free-disk limits before writing anything."""
    infos = zf.infolist()
    if len(infos) > config.max_zip_entries:
        raise DatasetError(
            f"The zip holds {len(infos):,} entries, over the limit of "
            f"{config.max_zip_entries:,}. Split it into smaller zips, or put the folder on the "
            "server and give its path."
        )
    total = sum(i.file_size for i in infos)
    if total > config.max_zip_bytes:
        raise DatasetError(
            f"The zip would unpack to {_format_bytes(total)}, over the limit of "
            f"{_format_bytes(config.max_zip_bytes)}. Split it into smaller zips, or put the "
            "folder on the server and give its path."
        )
    free = shutil.disk_usage(home).free
    if total > free:
        raise DatasetError(
            f"The zip would unpack to {_format_bytes(total)} but only {_format_bytes(free)} "
            f"is free under {home}. Free some space or point TL_STUDIO_HOME elsewhere."
        )


def _extract_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path) -> str | None:
    """Writes one entry; returns why it was skipped, or None when written."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with zf.open(info) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    except RuntimeError as exc:  # zipfile raises RuntimeError for encrypted entries
        target.unlink(missing_ok=True)
        if "encrypted" in str(exc):
            return "encrypted in the zip; zip it again without a password"
        return f"cannot be unpacked ({exc}); re-create the zip"
    except NotImplementedError as exc:
        target.unlink(missing_ok=True)
        return (f"compressed with a method this reader lacks ({exc}); re-create the zip with "
                "standard (deflate) compression")
    except (zipfile.BadZipFile, EOFError, ValueError, OSError) as exc:
        target.unlink(missing_ok=True)
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return f"damaged inside the zip ({detail}); re-create the zip"
    except (zlib.error, lzma.LZMAError) as exc:  # one bad entry must not stop the rest
        target.unlink(missing_ok=True)
        return f"damaged inside the zip ({exc}); re-create the zip"
    return None


def _extract_zip(
    zf: zipfile.ZipFile, dest: Path, on_progress: ProgressFn | None
) -> list[dict[str, str]]:
    """Extracts the safe entries of zf into dest; returns the entries skipped, with reasons."""
    skipped: list[dict[str, str]] = []
    infos = zf.infolist()
    root = dest.resolve()
    for n, info in enumerate(infos, 1):
        name = _entry_name(info)
        parts = _safe_parts(name)
        if parts is None:
            skipped.append({"file": name, "reason": "unsafe path in the zip (it points outside "
                            "the extraction folder); skipped"})
        elif _is_symlink(info):
            skipped.append({"file": name, "reason": "symbolic link in the zip; skipped for "
                            "safety, put the real file in the zip instead"})
        elif parts and not info.is_dir() and not any(_is_ignored(p) for p in parts) \
                and parts[-1].lower().endswith(".zip"):
            skipped.append({"file": name, "reason": "nested zip archives are not expanded; "
                            "unzip it first"})
        elif parts:
            target = root.joinpath(*parts)
            if os.path.commonpath([root, target]) != str(root):  # belt and braces
                skipped.append({"file": name, "reason": "unsafe path in the zip; skipped"})
            elif info.is_dir() or name.endswith("/"):
                target.mkdir(parents=True, exist_ok=True)
            else:
                reason = _extract_entry(zf, info, target)
                if reason:
                    skipped.append({"file": name, "reason": reason})
        if on_progress and (n % 256 == 0 or n == len(infos)):
            on_progress("extracting", n, len(infos))
    return skipped


def _open_zip_source(source: Any) -> tuple[IO[bytes], str, str]:
    """Returns (seekable binary stream, sha256 of the zip, what to call it in messages)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        return io.BytesIO(data), hashlib.sha256(data).hexdigest(), "The upload"
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            fh: IO[bytes] = open(path, "rb")  # noqa: SIM115 - closed by the caller
        except OSError as exc:
            raise DatasetError(
                f"Cannot read {path}: {exc.strerror}. Check the path and its permissions."
            ) from exc
        digest = _hash_stream(fh)
        fh.seek(0)
        return fh, digest, f"{path}"
    if hasattr(source, "read"):
        fh = source
        seekable = getattr(fh, "seekable", lambda: False)()
        if not seekable:
            fh = io.BytesIO(fh.read())
        fh.seek(0)
        digest = _hash_stream(fh)
        fh.seek(0)
        return fh, digest, "The upload"
    raise DatasetError(
        f"Cannot read a dataset from a {type(source).__name__}; give a folder path, a zip "
        "path, or the zip's bytes."
    )


# A half-extracted upload whose owner cannot be asked is abandoned after this long.
_ABANDONED_AFTER_SECONDS = 24 * 3600


def _host_tag() -> str:
    return "".join(c for c in socket.gethostname() if c.isalnum())[:32] or "host"


def _partial_prefix(digest: str) -> str:
    """Names the extracting process, so another can tell when it died mid-extraction."""
    return f".partial-{digest[:16]}-{_host_tag()}-{os.getpid()}-"


def _extraction_abandoned(folder: Path) -> bool:
    """Whether a .partial-* folder's extracting process is gone (killed, crashed)."""
    parts = folder.name.split("-")  # .partial, digest, host, pid, random
    if len(parts) >= 5 and parts[2] == _host_tag() and parts[3].isdigit():
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


def _unpack_upload(
    source: Any, home: Path, config: IngestConfig, on_progress: ProgressFn | None
) -> tuple[Path, list[dict[str, str]]]:
    """Extracts a zip under <home>/uploads/<sha256[:16]>/ (reused when complete).

    Returns the extraction folder and the zip entries that were skipped, with reasons.
    """
    stream, digest, what = _open_zip_source(source)
    try:
        uploads = home / "uploads"
        dest = uploads / digest[:16]
        marker = dest / UPLOAD_MARKER
        if marker.is_file():
            try:
                notes = json.loads(marker.read_text(encoding="utf-8"))
                log.info("Reusing extracted upload %s", dest)
                return dest, list(notes.get("skipped", []))
            except (OSError, ValueError):
                log.warning("Upload marker %s unreadable; extracting again", marker)
        head = stream.read(512)
        stream.seek(0)
        if not zipfile.is_zipfile(stream):
            raise _zip_signature_error(head, what)
        stream.seek(0)
        try:
            zf = zipfile.ZipFile(stream)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            raise DatasetError(
                f"{what} is a damaged zip ({exc}). Create the zip again and re-upload it."
            ) from exc
        with zf:
            uploads.mkdir(parents=True, exist_ok=True)
            _check_zip_limits(zf, config, uploads)
            # Extract into a private folder, mark it complete, then publish it with one
            # atomic rename, so a half-written folder is never taken for a finished one.
            _remove_abandoned_extractions(uploads)
            tmp = Path(tempfile.mkdtemp(prefix=_partial_prefix(digest), dir=uploads))
            try:
                skipped = _extract_zip(zf, tmp, on_progress)
                _write_json_atomic(tmp / UPLOAD_MARKER, {
                    "zip_sha256": digest, "entries": len(zf.infolist()), "skipped": skipped,
                })
                if dest.exists() and not marker.is_file():
                    shutil.rmtree(dest, ignore_errors=True)  # leftover of a foreign writer
                try:
                    os.rename(tmp, dest)
                except OSError:
                    if not marker.is_file():  # another process did not win the race either
                        raise
                    log.info("Upload %s was extracted concurrently; using that copy", dest)
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
        return dest, skipped
    finally:
        if stream is not source:
            stream.close()


def _write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, ensure_ascii=False)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------
# Folder walk


@dataclass
class _Layout:
    """Files found under a dataset root, before their content is checked."""

    root: Path
    class_files: dict[str, list[Path]]  # folder name -> files, sorted
    top_files: list[Path]  # loose files directly under root
    ignored: int


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
            if _is_ignored(entry.name):
                ignored += _count_files(Path(entry.path)) if is_dir else 1
            elif is_dir:
                dirs.append(Path(entry.path))
            elif entry.is_file():
                files.append(Path(entry.path))
    return dirs, files, ignored


def _walk_files(folder: Path) -> tuple[list[Path], int]:
    """All visible files under folder (any depth), sorted, and the count of ignored ones."""
    found: list[Path] = []
    ignored = 0
    for dirpath, dirnames, filenames in os.walk(folder):
        keep = []
        for d in dirnames:
            if _is_ignored(d):
                ignored += _count_files(Path(dirpath) / d)
            else:
                keep.append(d)
        dirnames[:] = sorted(keep)
        for name in filenames:
            if _is_ignored(name) or name == UPLOAD_MARKER:
                ignored += name != UPLOAD_MARKER
            else:
                found.append(Path(dirpath) / name)
    return sorted(found), ignored


def _scan(top: Path) -> _Layout:
    """Finds the dataset root (unwrapping single wrapping folders) and its class folders."""
    root = top
    ignored = 0
    dirs, files, hidden = _visible_children(root)
    # A lone folder that itself holds folders wraps the dataset (flowers.zip -> flowers/...).
    # A lone folder holding only images is a (single) class, so it is not unwrapped.
    while len(dirs) == 1 and not any(f.suffix.lower() in _IMAGE_SUFFIXES for f in files):
        sub_dirs, sub_files, sub_hidden = _visible_children(dirs[0])
        if not sub_dirs:
            break
        ignored += hidden + len(files)  # loose non-image files beside the wrapper
        root, dirs, files, hidden = dirs[0], sub_dirs, sub_files, sub_hidden
    ignored += hidden
    class_files: dict[str, list[Path]] = {}
    for folder in dirs:
        found, skipped = _walk_files(folder)
        class_files[folder.name] = found
        ignored += skipped
    return _Layout(root, class_files, files, ignored)


# ---------------------------------------------------------------------------------------
# Probing files in worker processes


def _worker_count(config: IngestConfig) -> int:
    if config.workers:
        return config.workers
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _probe_all(
    paths: list[Path], config: IngestConfig, on_progress: ProgressFn | None
) -> Iterator[images.ProbeResult]:
    """Probes every path (in a process pool for many files), yielding results in order."""
    probe = functools.partial(
        images.probe_file, max_pixels=config.max_pixels, min_side=config.min_side
    )
    total = len(paths)
    workers = min(_worker_count(config), max(1, total))
    names = (str(p) for p in paths)
    step = max(1, min(256, total // 100))
    if workers == 1 or total < _POOL_MIN_FILES:
        results: Iterable[images.ProbeResult] = map(probe, names)
        pool = None
    else:
        # spawn, not fork: the caller may be a threaded server (Streamlit) or hold TF state.
        pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
            initializer=images.quiet_worker,
        )
        chunksize = max(1, min(64, total // (workers * 8)))
        results = pool.map(probe, names, chunksize=chunksize)
    try:
        for done, result in enumerate(results, 1):
            if on_progress and (done % step == 0 or done == total):
                on_progress("checking", done, total)
            yield result
    except concurrent.futures.BrokenExecutor as exc:
        raise DatasetError(
            "A worker process checking the images died (out of memory, or a decoder crashed "
            "on a malformed file). Lower the number of workers or the pixel limit, or remove "
            "recently added files, and try again."
        ) from exc
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


# ---------------------------------------------------------------------------------------
# Ingestion


def _rel(path: Path | str, root: Path) -> str:
    return Path(path).relative_to(root).as_posix()


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _dataset_messages(
    report: ValidationReport, config: IngestConfig, cross_dropped: int
) -> None:
    """Fills report.errors and report.warnings from the class counts."""
    counts = report.classes
    if len(counts) < 2:
        if not counts:
            where = (f"; {_plural(len(report.unassigned), 'image')} lie at the top level"
                     if report.unassigned else "")
            report.errors.append(
                f"No class folders found{where}. Put the images in one folder per class, "
                "e.g. flowers/daisy/1.jpg and flowers/tulips/2.jpg."
            )
        else:
            only = next(iter(counts))
            report.errors.append(
                f"Only one class folder found ('{only}'). Add at least one more class folder "
                "with images: a classifier needs 2 or more classes."
            )
    for name, n in counts.items():
        if n < config.min_images_per_class:
            missing = config.min_images_per_class - n
            report.errors.append(
                f"Class '{name}' has {_plural(n, 'usable image')}; add at least {missing} more "
                f"(each class needs {config.min_images_per_class}) or remove the folder."
            )
        elif n < config.warn_images_per_class:
            report.warnings.append(
                f"Class '{name}' has only {_plural(n, 'image')}; {config.warn_images_per_class} "
                "or more per class give a more reliable model."
            )
    nonzero = {k: v for k, v in counts.items() if v > 0}
    if len(nonzero) >= 2:
        big = max(nonzero, key=nonzero.__getitem__)
        small = min(nonzero, key=nonzero.__getitem__)
        ratio = nonzero[big] / nonzero[small]
        if ratio > config.warn_imbalance_ratio:
            report.warnings.append(
                f"Classes are imbalanced: '{big}' has {nonzero[big]} images, '{small}' only "
                f"{nonzero[small]} ({ratio:.1f}:1, more than {config.warn_imbalance_ratio:g}:1). "
                "Add images to the small classes or train with balanced class weights."
            )
    if report.unassigned:
        report.warnings.append(
            f"{_plural(len(report.unassigned), 'image')} at the top level belong to no class "
            "and were left out; move them into a class folder."
        )
    if cross_dropped:
        report.warnings.append(
            f"{_plural(cross_dropped, 'image')} appear in more than one class (label "
            "conflicts) and were left out; keep each photo in one class only."
        )


def ingest(
    source: str | Path | bytes | IO[bytes],
    *,
    home: Path | None = None,
    config: IngestConfig = IngestConfig(),  # noqa: B008 - frozen, so sharing it is safe
    on_progress: ProgressFn | None = None,
) -> Dataset:
    """Turns a folder or a zip of class folders into a validated dataset.

    Every file is checked by content in worker processes (hash, full decode); no decoded
    image is kept, so memory stays flat however large the dataset.

    Args:
        source: A folder path, a zip path, the zip's bytes, or a binary file object (an
            upload). Zips are extracted under <studio home>/uploads/<sha256[:16]>/.
        home: Studio home; default core.config.studio_home().
        config: Limits and thresholds.
        on_progress: Called as on_progress(stage, done, total) with stage "extracting"
            or "checking".

    Returns:
        The Dataset; problems with the data as a whole are in dataset.report.errors.

    Raises:
        DatasetError: When the source itself is unusable (missing, not a folder or zip,
            damaged zip, zip over the limits).
    """
    zip_skipped: list[dict[str, str]] = []
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        if not path.exists():
            raise DatasetError(
                f"{path} does not exist. Give the path of a folder with one sub-folder per "
                "class, or of a zip of such folders."
            )
        if path.is_dir():
            top = path.resolve()
        elif path.is_file():
            top, zip_skipped = _unpack_upload(path, studio_home(home), config, on_progress)
        else:
            raise DatasetError(f"{path} is neither a folder nor a zip file.")
    else:
        top, zip_skipped = _unpack_upload(source, studio_home(home), config, on_progress)

    layout = _scan(top)
    root = layout.root
    report = ValidationReport(root=str(root), ignored=layout.ignored)
    wrapper = root.relative_to(top).as_posix() + "/" if root != top else ""
    for item in zip_skipped:
        name = item["file"]
        rel = name[len(wrapper):] if wrapper and name.startswith(wrapper) else name
        report.rejected.append({"file": rel, "reason": item["reason"]})

    # Labels are NFC-normalised: macOS writes decomposed names (e + combining accent), which
    # would otherwise look identical to, yet differ from, the same name typed elsewhere.
    labelled = [
        (p, unicodedata.normalize("NFC", folder))
        for folder, files in layout.class_files.items() for p in files
    ]
    all_paths = [p for p, _ in labelled] + layout.top_files
    labels = [label for _, label in labelled]
    probes = _probe_all(all_paths, config, on_progress)

    usable: list[tuple[str, str, images.ProbeResult]] = []  # (relative path, class, probe)
    for i, probe in enumerate(probes):
        rel = _rel(probe.path, root)
        if i >= len(labelled):  # a loose top-level file
            if probe.is_image:
                report.unassigned.append(rel)
            else:
                report.ignored += 1  # README.txt, LICENSE... beside the class folders
        elif probe.ok:
            usable.append((rel, labels[i], probe))
        else:
            report.rejected.append({"file": rel, "reason": probe.reason})

    kept, cross_dropped = _resolve_duplicates(usable, report, config)
    class_names = sorted({unicodedata.normalize("NFC", f) for f in layout.class_files})
    report.classes = {name: 0 for name in class_names}
    for _rel_path, label, _probe in kept:
        report.classes[label] += 1
    report.rejected.sort(key=lambda item: item["file"])
    _dataset_messages(report, config, cross_dropped)

    index = _make_index(kept)
    log.info(
        "Ingested %s: %d usable images in %d classes, %d rejected, %d ignored",
        root, len(index), len(report.classes), len(report.rejected), report.ignored,
    )
    return Dataset(root=root, index=index, report=report)


def _resolve_duplicates(
    usable: list[tuple[str, str, images.ProbeResult]], report: ValidationReport,
    config: IngestConfig,
) -> tuple[list[tuple[str, str, images.ProbeResult]], int]:
    """Keeps one copy per class of identical files; drops label conflicts when asked."""
    by_hash: dict[str, list[tuple[str, str, images.ProbeResult]]] = defaultdict(list)
    for item in usable:
        by_hash[item[2].sha256].append(item)
    drop: set[str] = set()
    cross_dropped = 0
    for group in by_hash.values():
        if len(group) < 2:
            continue
        group.sort(key=lambda item: item[0])
        files = [item[0] for item in group]
        cross = len({item[1] for item in group}) > 1
        if cross and config.drop_cross_class_duplicates:
            keep: list[str] = []
            cross_dropped += len(files)
        else:
            first_per_class: dict[str, str] = {}
            for rel, label, _probe in group:
                first_per_class.setdefault(label, rel)
            keep = sorted(first_per_class.values())
        drop.update(f for f in files if f not in keep)
        report.duplicates.append({"files": files, "cross_class": cross, "kept": keep})
    report.duplicates.sort(key=lambda d: d["files"][0])
    kept = [item for item in usable if item[0] not in drop]
    return kept, cross_dropped


def _make_index(kept: list[tuple[str, str, images.ProbeResult]]) -> pd.DataFrame:
    labels = sorted({label for _rel, label, _probe in kept})
    position = {name: i for i, name in enumerate(labels)}
    rows = sorted(kept, key=lambda item: item[2].path)
    frame = pd.DataFrame({
        "path": pd.Series([p.path for _r, _l, p in rows], dtype=str),
        "label": pd.Series([lab for _r, lab, _p in rows], dtype=str),
        "label_index": pd.Series([position[lab] for _r, lab, _p in rows], dtype="int64"),
        "sha256": pd.Series([p.sha256 for _r, _l, p in rows], dtype=str),
        "width": pd.Series([p.info.width for _r, _l, p in rows], dtype="int64"),
        "height": pd.Series([p.info.height for _r, _l, p in rows], dtype="int64"),
        "format": pd.Series([p.info.format for _r, _l, p in rows], dtype=str),
    })
    return frame[INDEX_COLUMNS]


# ---------------------------------------------------------------------------------------
# Splits


def _split_sizes(n: int, config: SplitConfig) -> tuple[int, int, int]:
    """(train, val, test) counts for n items; each at least 1 when n >= 3."""
    n_val = max(1, math.floor(n * config.val_fraction + 0.5))
    n_test = max(1, math.floor(n * config.test_fraction + 0.5))
    while n - n_val - n_test < 1:
        if n_val >= n_test and n_val > 1:
            n_val -= 1
        elif n_test > 1:
            n_test -= 1
        else:  # pragma: no cover - impossible for n >= 3
            break
    return n - n_val - n_test, n_val, n_test


def split(
    index: pd.DataFrame, config: SplitConfig = SplitConfig(),  # noqa: B008 - frozen
    groups: dict[str, str] | None = None,
) -> pd.DataFrame:
    """Assigns each image to train, val or test: stratified by class, seeded.

    Identical files (same sha256) always land in the same split, even across classes, and
    so do the photos of one group (an audit's near-duplicates: core.audit_choices.split_groups).
    Every class needs at least 3 distinct images (or groups) so it appears in every split.

    Args:
        index: A dataset index (INDEX_COLUMNS at least "path", "label", "sha256").
        config: Shares and seed.
        groups: {path: group name}: photos sharing a group name move together.

    Returns:
        A copy of index (same row order, fresh RangeIndex) with a "split" column holding
        "train", "val" or "test".

    Raises:
        DatasetError: When the index is empty, lacks columns, or a class is too small.
    """
    missing = {"path", "label", "sha256"} - set(index.columns)
    if missing:
        raise DatasetError(
            f"The index lacks columns {sorted(missing)}; build it with datasets.ingest()."
        )
    if index.empty:
        raise DatasetError("The dataset has no usable images to split; add images first.")
    df = index.drop(columns=[SPLIT_COLUMN], errors="ignore").reset_index(drop=True)
    # A group is every row sharing one file content; it belongs to the class of its
    # first row (by path) and moves as a unit, so duplicates never straddle splits.
    keys = _group_keys(df, groups) if groups else df["sha256"].astype(str)
    order = df.assign(_group=keys).sort_values("path", kind="stable")
    group_class: dict[str, str] = {}
    for sha, label in zip(order["_group"], order["label"]):
        group_class.setdefault(sha, label)
    groups_by_class: dict[str, list[str]] = defaultdict(list)
    for sha, label in group_class.items():  # insertion order = path order
        groups_by_class[label].append(sha)

    too_small = [(c, len(g)) for c, g in sorted(groups_by_class.items()) if len(g) < 3]
    if too_small:
        detail = ", ".join(f"'{c}' has {_plural(n, 'distinct image')}" for c, n in too_small)
        raise DatasetError(
            f"Every class needs at least 3 distinct images to appear in train, validation and "
            f"test, but {detail}. Add images to those classes or remove their folders."
        )
    rng = np.random.default_rng(config.seed)
    assignment: dict[str, str] = {}
    for label in sorted(groups_by_class):
        shas = groups_by_class[label]
        order_idx = rng.permutation(len(shas))
        n_train, n_val, _n_test = _split_sizes(len(shas), config)
        for rank, i in enumerate(order_idx):
            name = "train" if rank < n_train else "val" if rank < n_train + n_val else "test"
            assignment[shas[i]] = name
    df[SPLIT_COLUMN] = pd.Series([assignment[s] for s in keys], dtype=str)
    return df


def _group_keys(df: pd.DataFrame, groups: dict[str, str]) -> pd.Series:
    """One key per row joining rows of equal content and rows of one named group (the
    connected components of both relations), named after a sha256 of the component."""
    parent: dict[str, str] = {}

    def find(node: str) -> str:
        while parent.setdefault(node, node) != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for path, sha in zip(df["path"].astype(str), df["sha256"].astype(str)):
        name = groups.get(path)
        if name is not None:
            a, b = find(sha), find(f"group:{name}")
            if a != b:
                parent[max(a, b)] = min(a, b)  # "group:" sorts after hex: a sha is the root
    return pd.Series([find(sha) for sha in df["sha256"].astype(str)], index=df.index)


def split_summary(split_df: pd.DataFrame) -> pd.DataFrame:
    """Counts images per class and split, for display.

    Args:
        split_df: The output of split().

    Returns:
        One row per class, columns "train", "val", "test" and "total".
    """
    table = pd.crosstab(split_df["label"], split_df[SPLIT_COLUMN])
    table = table.reindex(columns=list(SPLITS), fill_value=0)
    table["total"] = table.sum(axis=1)
    return table


def save_split(df: pd.DataFrame, path: str | Path) -> None:
    """Writes a split manifest as UTF-8 CSV, atomically (no half-written file on a crash).

    Args:
        df: The output of split().
        path: CSV file to write; parent folders are created.

    Raises:
        DatasetError: When df has no "split" column.
    """
    if SPLIT_COLUMN not in df.columns:
        raise DatasetError("This table has no split column; make it with datasets.split().")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        df.to_csv(tmp, index=False, encoding="utf-8")
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def load_split(path: str | Path) -> pd.DataFrame:
    """Reads a manifest written by save_split back to the identical DataFrame.

    Class names like "NA", "null" or "001" stay strings; column dtypes are restored.

    Args:
        path: CSV file written by save_split.

    Returns:
        The split DataFrame, equal (values and dtypes) to the one saved.

    Raises:
        DatasetError: When the file is missing, damaged, or lacks the split columns.
    """
    source = Path(path)
    if not source.is_file():
        raise DatasetError(f"Split manifest {source} not found; make a split first.")
    header = pd.read_csv(source, nrows=0, encoding="utf-8").columns
    dtypes = {c: t for c, t in _SPLIT_DTYPES.items() if c in header}
    try:
        # No NA parsing: a class may well be called "NA" or "null".
        df = pd.read_csv(source, dtype=dtypes, keep_default_na=False, na_filter=False,
                         encoding="utf-8")
    except (ValueError, pd.errors.ParserError) as exc:
        raise DatasetError(f"Split manifest {source} is damaged ({exc}); make the split again.")\
            from exc
    missing = {"path", "label", SPLIT_COLUMN} - set(df.columns)
    if missing:
        raise DatasetError(
            f"Split manifest {source} lacks columns {sorted(missing)}; make the split again."
        )
    return df
