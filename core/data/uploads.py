"""Zip uploads: safe extraction (zip-slip, bombs, CP437 names) and publishing the folder."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import logging
import lzma
import os
import shutil
import stat
import tempfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import IO, Any

from core import files, schema
from core.config import IngestConfig
from core.data.upload_space import (
    UPLOAD_MARKER,
    _folder_bytes,
    _format_bytes,
    _mark_used,
    _partial_prefix,
    _remove_abandoned_extractions,
    prune_uploads,
)
from core.errors import DatasetError
from core.progress import UNPACKING, EventSink, PhaseProgress

log = logging.getLogger(__name__)


# Names skipped everywhere (compared case-insensitively); hidden names (".x") are skipped too.
IGNORED_NAMES = frozenset(
    {"__macosx", ".ds_store", "thumbs.db", "desktop.ini", ".ipynb_checkpoints", "@eadir"}
)
# Written inside an extraction folder, last, to mark it complete; never part of the data.
# The marker of an extracted upload; one that does not match is unreadable: extract again.
_MARKER = schema.document({
    "zip_sha256": schema.text(), "entries": schema.COUNT, "bytes": schema.COUNT,
    "skipped": schema.list_of(schema.record({"file": schema.text(), "reason": schema.text()},
                                            required=("file", "reason"))),
})
# A half-extracted upload whose owner cannot be asked is abandoned after this long.


def is_ignored_name(name: str) -> bool:
    """Whether a file or folder name is skipped without a check (hidden or system files)."""
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
    """Writes one entry (its folder exists); returns why it was skipped, or None when written."""
    try:
        with zf.open(info) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        return None
    except RuntimeError as exc:  # zipfile raises RuntimeError for encrypted entries
        reason = ("encrypted in the zip; zip it again without a password"
                  if "encrypted" in str(exc) else f"cannot be unpacked ({exc}); re-create the zip")
    except NotImplementedError as exc:
        reason = (f"compressed with a method this reader lacks ({exc}); re-create the zip with "
                  "standard (deflate) compression")
    except (zipfile.BadZipFile, EOFError, ValueError, OSError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        reason = f"damaged inside the zip ({detail}); re-create the zip"
    except (zlib.error, lzma.LZMAError) as exc:  # one bad entry must not stop the rest
        reason = f"damaged inside the zip ({exc}); re-create the zip"
    with contextlib.suppress(OSError):  # the file may never have been created
        target.unlink(missing_ok=True)
    return reason


# The longest file or folder name, in bytes, that common file systems accept.
_MAX_NAME_BYTES = 255


class _Written:
    """What extraction has written so far, so conflicts are found without asking the disk.

    The extraction folder is private and new, so everything in it came through here.
    """

    def __init__(self) -> None:
        self.folders: set[tuple[str, ...]] = {()}
        self.files: set[tuple[str, ...]] = set()

    def conflicts(self, parts: tuple[str, ...], is_dir: bool) -> bool:
        if any(parts[:depth] in self.files for depth in range(1, len(parts))):
            return True
        return parts in (self.files if is_dir else self.folders)

    def add(self, parts: tuple[str, ...], is_dir: bool) -> None:
        last = len(parts) if is_dir else len(parts) - 1
        self.folders.update(parts[:depth] for depth in range(1, last + 1))
        if not is_dir:
            self.files.add(parts)


def _skip_reason(info: zipfile.ZipInfo, name: str, parts: tuple[str, ...] | None,
                 written: _Written, max_file_bytes: int | None) -> str | None:
    """Why an entry must not be written, or None.

    Checked before writing anything: unsafe paths, links, nested zips, names file systems
    refuse, a file and a folder of one name, and entries larger than an image can be.
    """
    if parts is None:
        return "unsafe path in the zip (it points outside the extraction folder); skipped"
    if _is_symlink(info):
        return ("symbolic link in the zip; skipped for safety, put the real file in the zip "
                "instead")
    is_dir = info.is_dir() or name.endswith("/")
    if parts and not is_dir and not any(is_ignored_name(p) for p in parts) \
            and parts[-1].lower().endswith(".zip"):
        return "nested zip archives are not expanded; unzip it first"
    if not parts:
        return None
    if any(len(os.fsencode(p)) > _MAX_NAME_BYTES for p in parts):
        return (f"a name in its path is longer than {_MAX_NAME_BYTES} bytes, more than file "
                "systems allow; shorten it")
    if written.conflicts(parts, is_dir):
        return ("the zip holds a file and a folder of the same name here; rename one of them "
                "and zip again")
    if is_dir:
        return None
    if max_file_bytes is not None and info.file_size > max_file_bytes:
        return (f"{_format_bytes(info.file_size)} unpacked, more than an image can be (limit "
                f"{_format_bytes(max_file_bytes)}); not unpacked")
    return None


def extract_zip(
    zf: zipfile.ZipFile, dest: Path, on_event: EventSink | None,
    max_file_bytes: int | None = None,
) -> list[dict[str, str]]:
    """Extracts the safe entries of zf into dest (new and empty); returns the entries skipped.

    Unsafe entries (paths leaving dest, symbolic links), nested zips, entries no file system
    accepts (names over 255 bytes, a file and a folder of one name), entries larger than
    max_file_bytes, and entries that cannot be written are skipped,
    each as {"file": name in the zip, "reason": why}; one bad entry never stops the others.
    """
    skipped: list[dict[str, str]] = []
    infos = zf.infolist()
    root = dest.resolve()
    written = _Written()
    made: set[tuple[str, ...]] = {()}  # folders created on disk
    progress = PhaseProgress(on_event, UNPACKING, "files")
    for n, info in enumerate(infos, 1):
        name = _entry_name(info)
        parts = _safe_parts(name)
        reason = _skip_reason(info, name, parts, written, max_file_bytes)
        if reason is None and parts:
            is_dir = info.is_dir() or name.endswith("/")
            folder = parts if is_dir else parts[:-1]
            try:
                if folder not in made:
                    root.joinpath(*folder).mkdir(parents=True, exist_ok=True)
                    made.update(folder[:depth] for depth in range(1, len(folder) + 1))
            except OSError as exc:
                reason = f"cannot be unpacked ({exc.strerror or exc}); skipped"
            else:
                if not is_dir:
                    reason = _extract_entry(zf, info, root.joinpath(*parts))
            if reason is None:
                written.add(parts, is_dir)
        if reason:
            skipped.append({"file": name, "reason": reason})
        progress(n, len(infos))
    return skipped


def _open_zip_source(source: Any) -> tuple[IO[bytes], str, str]:
    """Returns (seekable binary stream, sha256 of the zip, what to call it in messages)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        return io.BytesIO(data), hashlib.sha256(data).hexdigest(), "The upload"
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            fh: IO[bytes] = open(path, "rb")
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


def unpack_upload(
    source: Any, home: Path, config: IngestConfig, on_event: EventSink | None
) -> tuple[Path, list[dict[str, str]]]:
    """Extracts a zip under <home>/uploads/<sha256[:16]>/ (reused when complete).

    The zip is extracted into a private .partial-* folder, marked complete with
    UPLOAD_MARKER, then published with one atomic rename; folders left by processes that died
    while extracting are removed.

    Args:
        source: A zip path, the zip's bytes, or a binary file object.
        home: Studio home.
        config: Limits (entries, total size).
        on_event: Called with ProgressEvents of phase "unpacking".

    Returns:
        The extraction folder and the zip entries that were skipped, as
        {"file": name in the zip, "reason": why}.

    Raises:
        DatasetError: Not a zip, a damaged zip, or a zip over the limits.
    """
    stream, digest, what = _open_zip_source(source)
    try:
        uploads = home / "uploads"
        dest = uploads / digest[:16]
        marker = dest / UPLOAD_MARKER
        if marker.is_file():
            try:
                notes = schema.check(files.read_json(marker), _MARKER, UPLOAD_MARKER)
                log.info("Reusing extracted upload %s", dest)
                _mark_used(marker)
                prune_uploads(uploads, config.max_uploads_bytes, keep=[dest])
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
                skipped = extract_zip(zf, tmp, on_event, config.max_file_bytes)
                files.write_json_atomic(tmp / UPLOAD_MARKER, {
                    "zip_sha256": digest, "entries": len(zf.infolist()), "skipped": skipped,
                    "bytes": _folder_bytes(tmp),
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
        prune_uploads(uploads, config.max_uploads_bytes, keep=[dest])
        return dest, skipped
    finally:
        if stream is not source:
            stream.close()

