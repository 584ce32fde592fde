"""What checking a file found, kept so that reading the same folder again skips the decode.

Checking a photo means hashing and decoding it whole (images.probe_file): on 1,500 photos that
is most of a second run's time once the features are cached. A file is checked again when its
size, modification time (ns), inode or device changed, or when the rules it was checked by
did (pixel and size limits, the decoder's version): the signature that `make` and `rsync`
trust. The cache is a state file like any other: anything malformed is ignored and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from core.config import IngestConfig
from core.data import images
from core.files import read_json, write_text_atomic

log = logging.getLogger(__name__)

VERSION = 1
# (size, mtime_ns, inode, device): what says the file is the one checked before.
Signature = tuple[int, int, int, int]


def _signature(path: str) -> Signature | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)


def _rules(config: IngestConfig) -> dict[str, Any]:
    return {"decoder": images.DECODER_VERSION, "max_pixels": config.max_pixels,
            "min_side": config.min_side, "max_file_bytes": config.max_file_bytes}


def _entry(value: Any) -> tuple[Signature, images.ProbeResult] | None:
    """A stored entry, or None when it is not exactly what `_stored` writes."""
    if not (isinstance(value, list) and len(value) == 8):
        return None
    *signature, sha, width, height, fmt = value
    if not (all(type(v) is int and v >= 0 for v in signature)
            and isinstance(sha, str) and len(sha) == 64
            and type(width) is int and type(height) is int and width > 0 and height > 0
            and isinstance(fmt, str) and fmt):
        return None
    return tuple(signature), images.ProbeResult("", sha, images.ImageInfo(width, height, fmt),
                                                "", True)


class ProbeCache:
    """The usable files of one folder as last checked; only usable files are kept (a rejected
    file is checked again, so its message is always today's)."""

    def __init__(self, home: Path, root: Path, config: IngestConfig) -> None:
        key = hashlib.sha256(str(Path(root).resolve()).encode("utf-8", "surrogateescape"))
        self.path = Path(home) / "cache" / "probes" / f"{key.hexdigest()[:24]}.json"
        self.rules = _rules(config)
        self.known: dict[str, tuple[Signature, images.ProbeResult]] = {}
        self.found: dict[str, tuple[Signature, images.ProbeResult]] = {}
        self._load()

    def _load(self) -> None:
        try:
            stored = read_json(self.path)
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("Ignoring the damaged file-check cache %s: %s", self.path, exc)
            return
        if not (isinstance(stored, dict) and stored.get("version") == VERSION
                and stored.get("rules") == self.rules and isinstance(stored.get("files"), dict)):
            return
        for name, value in stored["files"].items():
            entry = _entry(value)
            if isinstance(name, str) and entry is not None:
                self.known[name] = entry

    def lookup(self, path: str) -> images.ProbeResult | None:
        """The earlier result for this file when it has not changed since; else None."""
        entry = self.known.get(path)
        if entry is None or _signature(path) != entry[0]:
            return None
        self.found[path] = entry
        probe = entry[1]
        return images.ProbeResult(path, probe.sha256, probe.info, "", True)

    def remember(self, probe: images.ProbeResult, signature: Signature | None) -> None:
        if probe.ok and signature is not None and probe.info is not None:
            self.found[probe.path] = (signature, probe)

    def save(self) -> None:
        """Keeps what this read found (files gone since are forgotten). Never raises."""
        if self.found == self.known:
            return
        files = {name: [*sig, p.sha256, p.info.width, p.info.height, p.info.format]
                 for name, (sig, p) in self.found.items() if p.info is not None}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(self.path, json.dumps(
                {"version": VERSION, "rules": self.rules, "files": files},
                ensure_ascii=False, separators=(",", ":")))
        except OSError as exc:
            log.warning("Could not keep the file-check cache %s: %s", self.path, exc)


def signatures(paths: Iterable[str]) -> dict[str, Signature | None]:
    """Each path's signature, taken before it is checked (a file changed while being checked
    then fails to match next time, and is checked again)."""
    return {path: _signature(path) for path in paths}
