"""The feature cache: one .npy vector per photo and view on disk, the recent ones in memory.

Layout: <home>/cache/features/<fingerprint>-d<decoder version>/<view>/<sha[:2]>/<sha>.npy,
keyed by the fingerprint string of the base and its weights (ResolvedWeights.fingerprint),
never by an extractor object, so any code that knows the fingerprint finds the vectors.

Module-level state: `recent_vectors`, the vectors this process read or wrote last (up to
128 MB), so a second run on the same photos opens no files. A cached file never changes once
written, so a kept vector is always what the file holds: the cache cannot change a result.
Tests clear it with forget_recent_features().
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import shutil
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from core import files

log = logging.getLogger(__name__)


def cache_root(home: str | Path, fingerprint: str) -> Path:
    """<home>/cache/features/<fingerprint>-d<decoder version>: one base's cached features.

    The decoder's version is in the name because the same photo decoded another way gives
    other pixels, so features cached before a decoding change must not be reused.
    """
    from core.data import images  # lazy: images loads TensorFlow, this module only numpy

    return Path(home) / "cache" / "features" / f"{fingerprint}-d{images.DECODER_VERSION}"


def remove_stale_caches(home: str | Path, fingerprint: str) -> list[Path]:
    """Deletes the fingerprint's feature caches from earlier decoder versions.

    No version of the code reads them again (cache_root names the current one), so they
    would only fill the disk.

    Returns:
        The folders removed.
    """
    root = cache_root(home, fingerprint)
    stale = re.compile(rf"{re.escape(fingerprint)}(-d\d+)?")
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for folder in root.parent.iterdir():
            if folder != root and folder.is_dir() and stale.fullmatch(folder.name):
                shutil.rmtree(folder, ignore_errors=True)
                log.info("Removed features cached by an earlier decoder: %s", folder)
                removed.append(folder)
    return removed


class FeatureCache:
    """The cached vectors of one base (by fingerprint) for some views, memory first.

    Attributes:
        root: cache_root(home, fingerprint).
        dim: Length of one vector.
    """

    def __init__(self, home: str | Path, fingerprint: str, dim: int,
                 views: list[int] | tuple[int, ...]) -> None:
        self.root = cache_root(home, fingerprint)
        if not self.root.exists():
            remove_stale_caches(home, fingerprint)
        self.dim = int(dim)
        self._folders = {v: self.root / str(v) for v in views}
        self._keys = {v: str(folder) for v, folder in self._folders.items()}
        self._header = npy_header(self.dim)
        self._made: set[Path] = set()

    def get(self, view: int, sha: str) -> np.ndarray | None:
        """The vector of (view, photo), from memory or disk; None when not cached."""
        key = self._keys[view]
        vector = recent_vectors.get(key, sha)
        if vector is None:
            vector = read_vector(vector_file(self._folders[view], sha), self.dim, self._header)
            if vector is not None:
                recent_vectors.put(key, sha, vector)
        return vector

    def put(self, view: int, sha: str, vector: np.ndarray) -> None:
        """Caches the vector of (view, photo) on disk and in memory."""
        write_vector(vector_file(self._folders[view], sha), vector, self._header, self._made)
        recent_vectors.put(self._keys[view], sha, vector)


class RecentVectors:
    """The cached vectors this process read or wrote last, kept in memory up to a byte budget.

    A second run on the same photos then opens no files. A cache file never changes once
    written (its path names the base, the decoder, the view and the photo's content), so a
    kept vector is always what the file holds.
    """

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self._vectors: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, folder: str, sha: str) -> np.ndarray | None:
        key = (folder, sha.lower())
        with self._lock:
            vector = self._vectors.get(key)
            if vector is not None:
                self._vectors.move_to_end(key)
            return vector

    def put(self, folder: str, sha: str, vector: np.ndarray) -> None:
        vector = np.array(vector, np.float32)  # a copy the caller cannot change
        vector.flags.writeable = False
        key = (folder, sha.lower())
        with self._lock:
            old = self._vectors.pop(key, None)
            self._bytes += vector.nbytes - (old.nbytes if old is not None else 0)
            self._vectors[key] = vector
            while self._bytes > self.budget_bytes and self._vectors:
                _, dropped = self._vectors.popitem(last=False)
                self._bytes -= dropped.nbytes

    def clear(self) -> None:
        with self._lock:
            self._vectors.clear()
            self._bytes = 0


# 128 MB: the features of 25,000 photos for a 1,280-wide base.
recent_vectors = RecentVectors(128 * 2**20)


def forget_recent_features() -> None:
    """Drops the feature vectors kept in memory: the next read goes to the disk cache."""
    recent_vectors.clear()


def vector_file(folder: Path, sha: str) -> Path:
    """<folder>/<sha[:2]>/<sha>.npy: where one vector of one view is cached."""
    sha = sha.lower()
    return folder / sha[:2] / f"{sha}.npy"


def npy_header(dim: int) -> bytes:
    """The exact .npy header write_vector produces for a float32 vector of length dim."""
    buffer = io.BytesIO()
    np.save(buffer, np.zeros(dim, np.float32), allow_pickle=False)
    return buffer.getvalue()[: -dim * 4]


def read_vector(path: Path, dim: int, header: bytes | None = None) -> np.ndarray | None:
    """The float32 vector of length dim in path, or None when missing or unreadable.

    header: npy_header(dim), which spares np.load's header parsing for the files
    write_vector wrote.
    """
    if header is not None:
        # Fast path: our own files have a known header, and np.load's header parsing costs
        # far more than the read; anything else goes to np.load.
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError:
            data = b""
        if len(data) == len(header) + 4 * dim and data.startswith(header):
            return np.frombuffer(data, np.float32, offset=len(header))
    try:
        arr = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("Ignoring unreadable cached features %s: %s", path, exc)
        return None
    if arr.shape != (dim,) or arr.dtype != np.float32:
        log.warning("Ignoring cached features %s of shape %s", path, arr.shape)
        return None
    return arr


def write_vector(path: Path, vector: np.ndarray, header: bytes | None = None,
                  made: set[Path] | None = None) -> None:
    """Writes one vector as .npy atomically (temp file, then rename).

    header: npy_header(len(vector)), which spares np.save's header building; made: folders
    already created by this caller, which spares a mkdir per file. Both matter at thousands of
    vectors per run.
    """
    folder = path.parent
    if made is None or folder not in made:
        folder.mkdir(parents=True, exist_ok=True)
        if made is not None:
            made.add(folder)
    vector = np.ascontiguousarray(vector, np.float32)
    if header is None:
        buffer = io.BytesIO()
        np.save(buffer, vector, allow_pickle=False)
        data = buffer.getvalue()
    else:
        data = header + vector.tobytes()
    files.write_bytes_atomic(path, data, durable=False)
