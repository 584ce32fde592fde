"""An index of run summaries, so listing a thousand runs reads one small file, not every run.

`<home>/runs/.index.json` keeps, for each run folder, its summary and the stamp (modification
times and sizes) of the folder and of the files the summary is read from. Listing compares
stamps and re-reads only the runs that changed, appeared or are still running; the index is
rewritten atomically when anything changed, and rebuilt from the folders when it is missing,
damaged or of another version. It is only a cache: deleting it loses nothing.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.files import read_json, write_json_atomic
from core.run_folder import (
    CONFIG_FILE,
    DATASET_FILE,
    HISTORY_FILE,
    LABELS_FILE,
    METRICS_FILE,
    MODEL_FILE,
    STATUS_FILE,
)
from core.run_record import RunSummary
from core.status import RUNNING

log = logging.getLogger(__name__)

INDEX_FILE = ".index.json"
INDEX_VERSION = 1
# Files a summary is read from: a change to any of them makes the summary stale.
_STAMPED_FILES = (STATUS_FILE, CONFIG_FILE, LABELS_FILE, DATASET_FILE, METRICS_FILE,
                  HISTORY_FILE, MODEL_FILE)
# A file changed this recently may change again within the same clock tick of the file
# system, unseen by its time stamp: such a summary is not trusted on the next listing.
_RACY_NANOSECONDS = 2_000_000_000

Stamp = list[int]


def folder_stamp(run_dir: Path) -> Stamp:
    """Modification times and sizes of a run folder and of the files its summary comes from.

    Missing files count as 0, so a file appearing or vanishing changes the stamp too.
    """
    stamp: Stamp = []
    for path in (run_dir, *(run_dir / name for name in _STAMPED_FILES)):
        try:
            info = path.stat()
        except OSError:
            stamp += [0, 0]
            continue
        stamp += [info.st_mtime_ns, info.st_size if path is not run_dir else 0]
    return stamp


class RunIndex:
    """The summary index of one runs folder.

    Args:
        runs_dir: The folder holding one sub-folder per run.
    """

    def __init__(self, runs_dir: Path) -> None:
        self.runs_dir = runs_dir
        self.path = runs_dir / INDEX_FILE

    def summaries(self, read_summary: Callable[[Path], RunSummary]) -> list[RunSummary]:
        """The summary of every run folder, in no particular order.

        Args:
            read_summary: Reads one run folder's summary (never raises); called for the runs
                the index does not know, that changed, or that are still running.
        """
        known = self._read()
        entries: dict[str, dict[str, Any]] = {}
        summaries = []
        changed = False
        racy_after = time.time_ns() - _RACY_NANOSECONDS
        for run_dir in self._run_folders():
            stamp = folder_stamp(run_dir)
            entry = known.get(run_dir.name)
            if entry is not None and entry.get("stamp") == stamp \
                    and entry.get("summary", {}).get("status") != RUNNING:
                summary = RunSummary.from_dict({**entry["summary"], "run_dir": run_dir})
            else:
                summary = read_summary(run_dir)
                stamp = folder_stamp(run_dir)  # reading may tidy the folder
                changed = True
            trusted = max(stamp[0::2]) < racy_after
            entries[run_dir.name] = {"stamp": stamp if trusted else None,
                                     "summary": summary.to_dict()}
            summaries.append(summary)
        if changed or entries.keys() != known.keys():
            self._write(entries)
        return summaries

    def forget(self, run_id: str) -> None:
        """Drops one run from the index (after deleting it)."""
        known = self._read()
        if known.pop(run_id, None) is not None:
            self._write(known)

    def _run_folders(self) -> list[Path]:
        folders = []
        try:
            with os.scandir(self.runs_dir) as scan:
                for entry in scan:
                    # Hidden names: staging, trash, the index and temporary files.
                    if not entry.name.startswith(".") and entry.is_dir():
                        folders.append(Path(entry.path))
        except FileNotFoundError:
            return []
        return folders

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            data = read_json(self.path)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            log.warning("The run index %s is unreadable; rebuilding it", self.path)
            return {}
        if not isinstance(data, dict) or data.get("version") != INDEX_VERSION \
                or not isinstance(data.get("runs"), dict):
            return {}
        return {k: v for k, v in data["runs"].items() if isinstance(v, dict)}

    def _write(self, entries: dict[str, dict[str, Any]]) -> None:
        try:
            write_json_atomic(self.path, {"version": INDEX_VERSION, "runs": entries})
        except OSError:  # a read-only home still lists its runs, only slower
            log.warning("Cannot write the run index %s", self.path, exc_info=True)
