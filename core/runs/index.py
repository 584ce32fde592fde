"""An index of run summaries, so listing a thousand runs reads one small file, not every run.

`<home>/runs/.index.json` keeps, for each run folder, its summary and the stamp (modification
times and sizes) of the folder and of the files the summary is read from. Listing compares
stamps and re-reads only the runs that changed, appeared or are still running; the index is
rewritten atomically when anything changed, and rebuilt from the folders when it is missing,
damaged or of another version. It is only a cache: deleting it loses nothing.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core import schema
from core.files import read_json, write_text_atomic
from core.runs import schemas
from core.runs.layout import LABELS_FILE, METRICS_FILE, MODEL_FILE, STATUS_FILE
from core.runs.record import RunSummary
from core.status import RUNNING

log = logging.getLogger(__name__)

INDEX_FILE = ".index.json"
INDEX_VERSION = 4  # 2: summaries carry cv_accuracy (core.training.head_search); 3: dataset_root;
# 4: training_mode
# The folder's own time stamp changes with every write of the run store (each is a rename
# into the folder). These files are stamped too, so that a file changed in place by something
# else (an editor, a disk filling up mid-copy) is seen: the ones that decide whether a run is
# usable and what its summary says.
_STAMPED_FILES = (STATUS_FILE, LABELS_FILE, METRICS_FILE, MODEL_FILE)
# A file changed this recently may change again within the same clock tick of the file
# system, unseen by its time stamp: such a summary is not trusted on the next listing.
_RACY_NANOSECONDS = 2_000_000_000

Stamp = list[int]


def folder_stamp(run_dir: str | Path) -> Stamp:
    """Modification times and sizes of a run folder and of the files its summary comes from.

    Missing files count as 0, so a file appearing or vanishing changes the stamp too.
    """
    folder = os.fspath(run_dir)
    stamp: Stamp = []
    for index, path in enumerate((folder, *(os.path.join(folder, n) for n in _STAMPED_FILES))):
        try:
            info = os.stat(path)
        except OSError:
            stamp += [0, 0]
            continue
        stamp += [info.st_mtime_ns, info.st_size if index else 0]
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
        for name, folder in self._run_folders():
            stamp = folder_stamp(folder)
            entry = known.get(name)
            if entry is not None and entry.get("stamp") == stamp \
                    and entry.get("summary", {}).get("status") != RUNNING:
                summaries.append(RunSummary.from_dict({**entry["summary"], "run_dir": folder}))
                entries[name] = entry
                continue
            run_dir = Path(folder)
            summary = read_summary(run_dir)
            stamp = folder_stamp(run_dir)  # reading may tidy the folder
            trusted = max(stamp[0::2]) < racy_after
            entries[name] = {"stamp": stamp if trusted else None, "summary": summary.to_dict()}
            summaries.append(summary)
            # A running run is read on every listing anyway: its changes alone (a new epoch
            # every second) are not worth rewriting the index for.
            changed = changed or (summary.status != RUNNING and entries[name] != entry)
        if changed or entries.keys() != known.keys():
            self._write(entries)
        return summaries

    def forget(self, run_id: str) -> None:
        """Drops one run from the index (after deleting it)."""
        known = self._read()
        if known.pop(run_id, None) is not None:
            self._write(known)

    def _run_folders(self) -> list[tuple[str, str]]:
        """(name, path) of every run folder."""
        folders = []
        try:
            with os.scandir(self.runs_dir) as scan:
                for entry in scan:
                    # Hidden names: staging, trash, the index and temporary files.
                    if not entry.name.startswith(".") and entry.is_dir():
                        folders.append((entry.name, entry.path))
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
        for name, entry in data["runs"].items():
            problem = schema.valid(entry, schemas.INDEX_ENTRY, f"{INDEX_FILE} entry {name}")
            if problem is not None:  # a cache: any doubt and it is rebuilt from the folders
                log.warning("The run index %s is damaged (%s); rebuilding it", self.path,
                            problem)
                return {}
        return dict(data["runs"])

    def _write(self, entries: dict[str, dict[str, Any]]) -> None:
        try:  # compact: read on every listing
            write_text_atomic(self.path, json.dumps(
                {"version": INDEX_VERSION, "runs": entries}, separators=(",", ":"),
                ensure_ascii=False, allow_nan=False))
        except OSError:  # a read-only home still lists its runs, only slower
            log.warning("Cannot write the run index %s", self.path, exc_info=True)
