"""Writing one run while it trains: creating its folder, events, history, metrics, model, status."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import platform
import re
import secrets
import shutil
import threading
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from core.config import TrainConfig
from core.errors import DiskFullError
from core.files import (
    FULL_ERRNOS,
    disk_full,
    fsync_dir,
    own_process_facts,
    read_json,
    to_jsonable,
    write_json_atomic,
    write_text_atomic,
)
from core.runs import history as history_table
from core.runs import placement
from core.runs.layout import (
    CONFIG_FILE,
    DATASET_FILE,
    EVENTS_FILE,
    FAMILIARITY_FILE,
    HEAD_SEARCH_FILE,
    HISTORY_FILE,
    LABELS_FILE,
    METRICS_FILE,
    MODEL_FILE,
    SPLIT_FILE,
    STATUS_FILE,
    VERSIONS_FILE,
)
from core.status import FINAL, RUN_RECORDED, RUNNING

log = logging.getLogger(__name__)

STAGING_PREFIX = ".creating-"


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")


def new_run_id(backbone: str, now: dt.datetime | None = None) -> str:
    """A sortable, file-system-safe run id: UTC time stamp, backbone, random suffix.

    Example: ``20260131-142502-mobilenet_v2-3fa9c1``.
    """
    stamp = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).strftime("%Y%m%d-%H%M%S")
    # Only a registry-like name goes into the id, never parts of a path a user typed.
    name = str(backbone).lower()
    safe = name if re.fullmatch(r"[a-z0-9_]{1,40}", name) else "model"
    return f"{stamp}-{safe}-{secrets.token_hex(3)}"


def _package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def collect_versions(device: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Versions of Python and the libraries that matter for reproducing a run, plus the device.

    Args:
        device: A device description (DeviceInfo.to_dict()); detected with core.device when None.
    """
    if device is None:
        from core import device as device_module  # imports TensorFlow; only when creating

        info = device_module.detect()
        device = {**info.to_dict(), "summary": info.summary()}
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "tensorflow": _package_version("tensorflow"),
        "keras": _package_version("keras"),
        "numpy": _package_version("numpy"),
        "pandas": _package_version("pandas"),
        "pillow": _package_version("pillow"),
        "device": dict(device),
        "executed_on": placement.current(),  # backend, node id and address of the job
    }


def _dataset_facts(split_df: pd.DataFrame | None, dataset: Mapping[str, Any] | None) -> dict:
    facts: dict[str, Any] = dict(dataset or {})
    if split_df is not None and "split" in split_df.columns:
        facts["split_counts"] = {str(k): int(v) for k, v in
                                 split_df["split"].value_counts().sort_index().items()}
        if "label" in split_df.columns:
            table = pd.crosstab(split_df["label"], split_df["split"])
            facts["class_counts"] = {
                str(split): {str(label): int(n) for label, n in table[split].items()}
                for split in table.columns
            }
    return facts


def create_run(
    runs_dir: Path,
    config: TrainConfig,
    labels: Sequence[str],
    split_df: pd.DataFrame | None,
    dataset: Mapping[str, Any] | None,
    *,
    input_size: int | None,
    versions: Mapping[str, Any],
) -> RunWriter:
    """Creates a run folder in runs_dir, status "running"; see RunStore.create.

    The folder is assembled under a hidden staging name and renamed into place, so a kill
    during creation leaves no half-made run in the list.
    """
    names = [str(label) for label in labels]
    if len(names) < 1 or len(set(names)) != len(names):
        raise ValueError(f"labels must be unique class names, got {names!r}")
    runs_dir.mkdir(parents=True, exist_ok=True)
    run_id = new_run_id(config.backbone)
    while (runs_dir / run_id).exists():
        run_id = new_run_id(config.backbone)
    staging = runs_dir / f"{STAGING_PREFIX}{run_id}"
    staging.mkdir()
    status = {"status": RUNNING, "error": None, "traceback": None, "started": _now_iso(),
              "updated": None, "finished": None, **own_process_facts()}
    status["updated"] = status["started"]
    try:
        write_json_atomic(staging / CONFIG_FILE, config.to_dict())
        write_json_atomic(staging / LABELS_FILE, {
            "labels": names, "input_size": input_size, "backbone": config.backbone,
            "hub_handle": config.hub_handle,
        })
        write_json_atomic(staging / DATASET_FILE, _dataset_facts(split_df, dataset))
        if split_df is not None:
            write_text_atomic(staging / SPLIT_FILE, split_df.to_csv(index=False))
        write_text_atomic(staging / HISTORY_FILE, history_table.history_csv(
            history_table.history_frame()))
        write_json_atomic(staging / VERSIONS_FILE, versions)
        write_json_atomic(staging / STATUS_FILE, status)
        final = runs_dir / run_id
        os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    fsync_dir(runs_dir)
    log.info("Created run %s", final)
    return RunWriter(final, status)


class RunWriter:
    """Writes one run's files while it trains; every write is atomic or append-only."""

    def __init__(self, run_dir: Path, status: dict[str, Any]) -> None:
        self.run_dir = Path(run_dir)
        self.run_id = self.run_dir.name
        self._status = dict(status)
        self._lock = threading.Lock()
        self._events_checked = False

    @property
    def status(self) -> str:
        """The status last written."""
        return str(self._status["status"])

    def append_event(self, event: Mapping[str, Any] | Any) -> None:
        """Appends one progress event (a dict or an object with to_dict()) to the events log."""
        line = json.dumps(to_jsonable(event), ensure_ascii=False, allow_nan=False)
        data = line.encode("utf-8") + b"\n"
        path = self.run_dir / EVENTS_FILE
        with self._lock:
            if not self._events_checked:
                # A writer killed mid-append left a torn line: end it so ours stays whole.
                self._events_checked = True
                with contextlib.suppress(FileNotFoundError), path.open("rb") as fh:
                    fh.seek(0, os.SEEK_END)
                    if fh.tell() > 0:
                        fh.seek(-1, os.SEEK_END)
                        if fh.read(1) != b"\n":
                            data = b"\n" + data
            with path.open("ab") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())

    def write_history(self, history: pd.DataFrame) -> None:
        """Replaces the epoch history: one row per epoch (core.runs.history's shape).

        Raises:
            ValueError: when the table has no "epoch" column (a programming error).
        """
        write_text_atomic(self.run_dir / HISTORY_FILE, history_table.history_csv(history))

    def write_metrics(self, metrics: Mapping[str, Any]) -> None:
        """Replaces the metrics.

        Keys read back by the store: "test" (EvalResult.to_dict()), "test_accuracy",
        "best_val_accuracy", "unsure_threshold", "seconds", "params" ({"total",
        "trainable", "non_trainable"}) and "depth"; any other JSON-ready keys are kept.
        """
        write_json_atomic(self.run_dir / METRICS_FILE, metrics)

    def write_head_search(self, search: Mapping[str, Any]) -> None:
        """Replaces the head search's record (head_search.SearchResult.to_dict()).

        Written as soon as the search ends, so a run cancelled afterwards keeps the
        settings tried and the best so far; a completed run also has it in its metrics.
        """
        write_json_atomic(self.run_dir / HEAD_SEARCH_FILE, search)

    def save_familiarity(self, familiarity: Any) -> Path:
        """Writes the run's 'none of these' reference and threshold (a Familiarity)."""
        return familiarity.save(self.run_dir / FAMILIARITY_FILE)

    def save_model(self, model: Any, frozen_base: Any | None = None) -> Path:
        """Saves a Keras model atomically and records its input size.

        The model is written to a temporary .keras file in the run folder, synced, then renamed
        over the model file, so a reader never sees half a model.

        Args:
            model: The Keras model.
            frozen_base: A layer of the model whose weights never change in this process;
                its saved weights are reused from an earlier save (core.runs.model_archive).

        Returns:
            Path of the saved model.
        """
        final = self.run_dir / MODEL_FILE
        tmp = self.run_dir / f".model-{secrets.token_hex(4)}.tmp.keras"  # Keras wants .keras
        try:
            if frozen_base is None:
                model.save(tmp)
            else:
                from core.runs import model_archive  # Keras and h5py: only for real models

                model_archive.save_model(model, tmp, frozen_base)
            with tmp.open("rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        except BaseException as exc:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            if isinstance(exc, OSError) and not isinstance(exc, DiskFullError) \
                    and exc.errno in FULL_ERRNOS:
                params = getattr(model, "count_params", lambda: 0)()
                raise disk_full(final, int(params * 4 * 1.1) or None) from exc
            raise
        fsync_dir(self.run_dir)
        self._record_input_size(model)
        return final

    def _record_input_size(self, model: Any) -> None:
        shape = getattr(model, "input_shape", None)
        if not (isinstance(shape, tuple) and len(shape) == 4 and shape[1] and shape[1] == shape[2]):
            return
        path = self.run_dir / LABELS_FILE
        labels = read_json(path)
        if labels.get("input_size") != int(shape[1]):
            labels["input_size"] = int(shape[1])
            write_json_atomic(path, labels)

    def set_status(self, status: str, error: str | None = None, *,
                   traceback: str | None = None) -> None:
        """Records the run's status; a final status also records when the run finished.

        Args:
            status: One of running, completed, cancelled, failed (core.status).
            error: Message for people, for a failed run.
            traceback: Full traceback of a failure, for developers.
        """
        if status not in RUN_RECORDED:
            raise ValueError(f"status must be one of {RUN_RECORDED}, not {status!r}")
        with self._lock:
            self._status.update(status=status, error=error, traceback=traceback,
                                updated=_now_iso(), **own_process_facts())
            if status in FINAL:
                self._status["finished"] = self._status["updated"]
            write_json_atomic(self.run_dir / STATUS_FILE, self._status)


def close_runs_left_by(runs_dir: str | Path, worker: Mapping[str, Any] | None, status: str,
                       message: str) -> list[str]:
    """Records `status` for the runs a killed process left "running"; returns their ids.

    A process ended from outside (a cluster task stopped by force) cannot record its own end.
    The runs it was writing are the ones whose status.json it wrote itself (own_process_facts:
    pid, hostname, pid_started, `worker` here) and that still read "running"; their other
    files stay as they are.
    """
    if status not in FINAL:
        raise ValueError(f"status must be one of {FINAL}, not {status!r}")
    if not (worker or {}).get("pid"):
        return []
    closed = []
    for path in sorted(Path(runs_dir).glob(f"*/{STATUS_FILE}")):
        try:
            recorded = read_json(path)
        except (OSError, ValueError):
            continue  # a damaged status is the run store's to report, not to rewrite here
        if not isinstance(recorded, dict) or recorded.get("status") != RUNNING or any(
                recorded.get(k) != worker.get(k) for k in ("pid", "hostname", "pid_started")):
            continue
        now = _now_iso()
        recorded.update(status=status, error=message, updated=now, finished=now)
        try:
            write_json_atomic(path, recorded)
            closed.append(path.parent.name)
        except OSError:
            log.warning("could not record the end of run %s", path.parent, exc_info=True)
    return closed
