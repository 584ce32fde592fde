"""The run store: the runs of one studio home, created, listed, found, loaded and deleted.

The store is the one place that knows how runs are kept on disk (core.runs.folder); callers get
Run and RunSummary objects (core.runs.record) and write through a RunWriter (core.runs.writer).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import re
import secrets
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from core.config import TrainConfig
from core.errors import JobError, RunNotFoundError
from core.files import read_json
from core.runs.folder import effective_status, load_run, looks_like_run
from core.runs.index import RunIndex, folder_stamp
from core.runs.layout import STATUS_FILE
from core.runs.record import HOW_TO_LIST, Run, RunSummary, created_from_id
from core.runs.writer import RunWriter, collect_versions, create_run, new_run_id
from core.status import BROKEN, RUNNING

__all__ = ["RUNS_DIRNAME", "Run", "RunStore", "RunSummary", "RunWriter", "is_run_id",
           "new_run_id"]

log = logging.getLogger(__name__)

RUNS_DIRNAME = "runs"

_RUN_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
_TRASH_PREFIX = ".deleting-"


def is_run_id(text: str) -> bool:
    """True when text has the shape of a run id (a folder name, never a path).

    Letters, digits, ".", "_" and "-", starting with a letter or digit, at most 200
    characters: "..", "/tmp/x" and "a/b" are not run ids. Whether such a run exists is
    RunStore.list()'s answer.
    """
    return isinstance(text, str) and _RUN_ID_RE.fullmatch(text) is not None


class RunStore:
    """The runs of one studio home: `<home>/runs/<run id>/`.

    Args:
        home: The studio home (see core.config.studio_home).
    """

    def __init__(self, home: str | Path) -> None:
        self.home = Path(home).expanduser()
        self.runs_dir = self.home / RUNS_DIRNAME
        self.index = RunIndex(self.runs_dir)

    def create(
        self,
        config: TrainConfig,
        labels: Sequence[str],
        split_df: pd.DataFrame | None,
        dataset: Mapping[str, Any] | None = None,
        *,
        input_size: int | None = None,
        device: Mapping[str, Any] | None = None,
    ) -> RunWriter:
        """Creates a run folder, status "running", with its config, labels, split and versions.

        The folder is assembled under a hidden staging name and renamed into place, so a kill
        during creation leaves no half-made run in the list.

        Args:
            config: The training options.
            labels: Class names in label_index order.
            split_df: The split table (one row per image with a "split" column).
            dataset: Facts about the dataset to keep (name, source...); counts per split and
                class are added from split_df.
            input_size: Image size the model takes; save_model() records the model's own.
            device: Device description for the versions; detected when None.

        Returns:
            The RunWriter of the new run.
        """
        return create_run(self.runs_dir, config, labels, split_df, dataset,
                          input_size=input_size, versions=collect_versions(device))

    def list(self) -> list[RunSummary]:
        """Every run, newest first; an unreadable run is listed as "broken", never raised.

        Summaries come from the run index (core.runs.index): only runs that changed since the
        last listing are read again.
        """
        if not self.runs_dir.is_dir():
            return []
        summaries = self.index.summaries(self._summary)
        oldest = dt.datetime.min.replace(tzinfo=dt.UTC)
        summaries.sort(key=lambda s: (s.created or oldest, s.run_id), reverse=True)
        return summaries

    def resolve(self, run: str | Path) -> Path:
        """The folder of a run given by id (in this home) or by folder path.

        Raises:
            RunNotFoundError: saying how to see the runs.
        """
        text = str(run).strip()
        if not text:
            raise RunNotFoundError(f"No run was given. {HOW_TO_LIST}, and pass a run id.")
        if _RUN_ID_RE.fullmatch(text) and (self.runs_dir / text).is_dir():
            return self.runs_dir / text
        path = Path(text).expanduser()
        if path.is_dir():
            if looks_like_run(path):
                return path.resolve()
            raise RunNotFoundError(
                f"{path} is a folder but not a run (it has none of a run's files). "
                f"{HOW_TO_LIST}, and pass a run id or a run folder."
            )
        raise RunNotFoundError(
            f"No run {text!r} in {self.runs_dir}. {HOW_TO_LIST}, and pass a run id or a run "
            "folder."
        )

    def load(self, run: str | Path) -> Run:
        """Reads everything stored for a run; missing or damaged files become run.problems.

        Whether the run can be used (predict, evaluate, export) is run.usable; a run whose
        writer died has its temporary files removed.

        Raises:
            RunNotFoundError: when the run does not exist.
        """
        return load_run(self.resolve(run))

    def load_usable(self, run: str | Path, action: str = "be used") -> Run:
        """Loads a run and checks that it can be used: completed, with a whole model and labels.

        Args:
            run: Run id or folder.
            action: What the caller will do with it, for the message ("predict"...).

        Raises:
            RunNotFoundError: when the run does not exist.
            RunNotUsableError: when it is not completed or is broken, saying why.
        """
        loaded = self.load(run)
        loaded.require_usable(action)
        return loaded

    def fingerprint(self, run_dir: str | Path) -> tuple[int, ...]:
        """A value that changes whenever a run folder's usability or summary may have changed.

        Cheap (a few stat calls), for caches of loaded runs and models.
        """
        return tuple(folder_stamp(Path(run_dir)))

    def delete(self, run_id: str, *, force: bool = False) -> None:
        """Deletes one run folder, and nothing outside the runs folder.

        The folder is first renamed to a hidden name, so a kill mid-delete leaves no half run.

        Args:
            run_id: Id of the run (or its folder, which must sit directly in runs/).
            force: Delete even when its training process is still running.

        Raises:
            RunNotFoundError: when there is no such run in this home.
            JobError: when the run is still training and force is False.
        """
        name = self._deletable_name(run_id)
        path = self.runs_dir / name
        if path.is_symlink():
            path.unlink()  # remove the link only, never what it points to
            self.index.forget(name)
            return
        runs_dir = self.runs_dir.resolve() if self.runs_dir.exists() else self.runs_dir
        if not path.is_dir() or path.resolve().parent != runs_dir:
            raise RunNotFoundError(f"No run {name!r} in {self.runs_dir}. {HOW_TO_LIST}.")
        if not force:
            self._refuse_if_training(path)
        trash = self.runs_dir / f"{_TRASH_PREFIX}{name}-{secrets.token_hex(3)}"
        os.rename(path, trash)
        shutil.rmtree(trash, ignore_errors=True)
        for leftover in self.runs_dir.glob(f"{_TRASH_PREFIX}*"):  # from deletes that were killed
            shutil.rmtree(leftover, ignore_errors=True)
        self.index.forget(name)
        log.info("Deleted run %s", name)

    # -- helpers ---------------------------------------------------------------------------

    def _summary(self, run_dir: Path) -> RunSummary:
        try:
            return load_run(run_dir, light=True).summary()
        except Exception as exc:  # one unreadable run must not hide the others
            log.warning("Run %s is unreadable", run_dir, exc_info=True)
            return RunSummary(
                run_id=run_dir.name, run_dir=run_dir, created=created_from_id(run_dir.name),
                status=BROKEN, error=f"The run folder cannot be read ({exc}).",
            )

    def _deletable_name(self, run_id: str) -> str:
        """The folder name of a run to delete, refusing anything outside runs/."""
        text = str(run_id).strip()
        if _RUN_ID_RE.fullmatch(text):
            return text
        runs_dir = self.runs_dir.resolve() if self.runs_dir.exists() else self.runs_dir
        candidate = Path(text).expanduser()
        if candidate.is_absolute() or os.sep in text:
            if candidate.resolve().parent != runs_dir:
                raise RunNotFoundError(
                    f"Refusing to delete {text!r}: only run folders directly inside "
                    f"{self.runs_dir} can be deleted. {HOW_TO_LIST}, and pass a run id."
                )
            text = candidate.resolve().name
        if not _RUN_ID_RE.fullmatch(text):
            raise RunNotFoundError(
                f"{text!r} is not a run id. {HOW_TO_LIST}, and pass one of their ids."
            )
        return text

    @staticmethod
    def _refuse_if_training(path: Path) -> None:
        with contextlib.suppress(OSError, ValueError):
            status = read_json(path / STATUS_FILE)
            if isinstance(status, dict) and effective_status(status)[0] == RUNNING:
                raise JobError(
                    f"Run {path.name} is still training. Cancel it first, or wait until it "
                    "ends, then delete it."
                )
