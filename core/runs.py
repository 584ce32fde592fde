"""Run store on disk: one folder per training run, atomic writes, list, load and delete."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import logging
import math
import os
import platform
import re
import secrets
import shutil
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from core.config import TrainConfig
from core.errors import AppError, Cancelled, JobError, RunNotFoundError
from core.files import (
    fsync_dir,
    own_process_facts,
    process_alive,
    read_events,
    read_json,
    to_jsonable,
    write_json_atomic,
    write_text_atomic,
)
from core.status import (
    BROKEN,
    CANCELLED,
    COMPLETED,
    FAILED,
    FINAL,
    INTERRUPTED,
    RUN_RECORDED,
    RUNNING,
)

if TYPE_CHECKING:
    from core.evaluation import EvalResult

log = logging.getLogger(__name__)

RUNS_DIRNAME = "runs"
CONFIG_FILE = "config.json"
LABELS_FILE = "labels.json"
DATASET_FILE = "dataset.json"
SPLIT_FILE = "split.csv"
HISTORY_FILE = "history.csv"
EVENTS_FILE = "events.jsonl"
METRICS_FILE = "metrics.json"
MODEL_FILE = "model.keras"
VERSIONS_FILE = "versions.json"
STATUS_FILE = "status.json"

STATUSES = RUN_RECORDED
FINAL_STATUSES = FINAL

HISTORY_COLUMNS = ["epoch", "phase", "loss", "accuracy", "val_loss", "val_accuracy", "seconds"]

_RUN_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
_STAGING_PREFIX = ".creating-"
_TRASH_PREFIX = ".deleting-"
_HOW_TO_LIST = "See the runs with `python -m core runs` or on the Compare page"


# --- small helpers -------------------------------------------------------------------------


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _now_iso() -> str:
    return _now().isoformat(timespec="microseconds")


def new_run_id(backbone: str, now: dt.datetime | None = None) -> str:
    """A sortable, file-system-safe run id: UTC time stamp, backbone, random suffix.

    Example: ``20260131-142502-mobilenet_v2-3fa9c1``.
    """
    stamp = (now or _now()).astimezone(dt.UTC).strftime("%Y%m%d-%H%M%S")
    # Only a registry-like name goes into the id, never parts of a path a user typed.
    safe = str(backbone).lower() if re.fullmatch(r"[a-z0-9_]{1,40}", str(backbone).lower()) \
        else "model"
    return f"{stamp}-{safe}-{secrets.token_hex(3)}"


def _created_from_id(run_id: str) -> dt.datetime | None:
    match = re.match(r"(\d{8}-\d{6})", run_id)
    if not match:
        return None
    try:
        stamp = dt.datetime.strptime(match.group(1), "%Y%m%d-%H%M%S")
    except ValueError:
        return None
    return stamp.replace(tzinfo=dt.UTC)


def _parse_time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        stamp = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.UTC)


def _package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def effective_status(status: Mapping[str, Any]) -> tuple[str, str | None]:
    """The status to show for a status.json: its own, or "interrupted" when its process died.

    Returns:
        (status, message): message is the run's error, or why it is interrupted or broken.
    """
    recorded = status.get("status")
    if recorded not in STATUSES:
        return BROKEN, f"status.json holds an unknown status {recorded!r}."
    if recorded == RUNNING and not process_alive(status):
        return INTERRUPTED, (
            f"The process that trained this run (pid {status.get('pid')}) ended without "
            "finishing it (killed, crashed or the machine restarted). Train again; delete this "
            "run when you no longer need it."
        )
    error = status.get("error")
    return recorded, str(error) if error else None


def _read_split(path: Path) -> pd.DataFrame:
    # keep_default_na=False: a class called "NA" or "None" must stay a string.
    frame = pd.read_csv(path, keep_default_na=False, na_values={"width": [""], "height": [""]},
                        dtype={"path": str, "label": str, "sha256": str, "split": str})
    return frame


def _empty_history() -> pd.DataFrame:
    return _with_history_columns(pd.DataFrame())


def _read_history(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, dtype={"phase": str})
    except pd.errors.EmptyDataError:
        frame = pd.DataFrame()
    return _with_history_columns(frame)


def _with_history_columns(frame: pd.DataFrame) -> pd.DataFrame:
    for column in HISTORY_COLUMNS:
        if column not in frame.columns:
            frame[column] = pd.Series(dtype="object" if column == "phase" else "float64")
    return frame


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


def _metric(metrics: Mapping[str, Any], key: str) -> float | None:
    value = metrics.get(key)
    if value is None and key == "test_accuracy":
        value = (metrics.get("test") or {}).get("accuracy")
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _history_facts(history: pd.DataFrame) -> dict[str, Any]:
    facts: dict[str, Any] = {"epochs_run": len(history), "best_epoch": None,
                             "best_val_accuracy": None, "seconds_per_epoch": None}
    if history.empty:
        return facts
    val = pd.to_numeric(history["val_accuracy"], errors="coerce")
    if val.notna().any():
        best = int(val.idxmax())
        facts["best_val_accuracy"] = float(val[best])
        epoch = pd.to_numeric(history["epoch"], errors="coerce")[best]
        facts["best_epoch"] = int(epoch) if pd.notna(epoch) else best + 1
    seconds = pd.to_numeric(history["seconds"], errors="coerce")
    if seconds.notna().any():
        facts["seconds_per_epoch"] = float(seconds.mean())
    return facts


# --- what readers get ----------------------------------------------------------------------


@dataclass
class RunSummary:
    """One row of the run list: what the Compare page and `python -m core runs` show.

    Attributes:
        run_id: Folder name of the run.
        run_dir: The run folder.
        created: When training started (UTC), or None when unknown.
        status: running, completed, cancelled, failed, interrupted (its process died while
            running) or broken (files missing or corrupt; see error).
        backbone: Registry name of the base.
        dataset: Name of the dataset, when recorded.
        num_classes: Number of classes.
        train_images: Images in the train split.
        total_params: Parameters of the exported model.
        trainable_params: Trainable parameters of the exported model while it was saved.
        depth: Depth of the base, as in the Keras applications table.
        model_size_mb: Size of model.keras in MB (10**6 bytes).
        seconds_per_epoch: Average wall time of an epoch.
        best_epoch: Epoch with the best validation accuracy.
        best_val_accuracy: Best validation accuracy.
        test_accuracy: Accuracy on the test split.
        epochs_run: Epochs trained, head and fine-tune together.
        error: The failure message, or why the run is interrupted or broken.
    """

    run_id: str
    run_dir: Path
    created: dt.datetime | None
    status: str
    backbone: str | None = None
    dataset: str | None = None
    num_classes: int | None = None
    train_images: int | None = None
    total_params: int | None = None
    trainable_params: int | None = None
    depth: int | None = None
    model_size_mb: float | None = None
    seconds_per_epoch: float | None = None
    best_epoch: int | None = None
    best_val_accuracy: float | None = None
    test_accuracy: float | None = None
    epochs_run: int = 0
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (paths and dates as strings)."""
        return to_jsonable(dataclasses.asdict(self))


@dataclass
class Run:
    """Everything stored for one run, read tolerantly (see problems).

    Attributes:
        run_id: Folder name of the run.
        run_dir: The run folder.
        config: The training options, or None when config.json is missing or invalid.
        labels: Class names in label_index order.
        input_size: Square image size the model takes.
        backbone: Registry name of the base.
        dataset: Facts about the dataset (name, split and class counts...).
        split: The split table (one row per image), or None when unreadable.
        history: One row per epoch (HISTORY_COLUMNS first); empty before the first epoch.
        events: Progress events, oldest first (torn lines skipped).
        metrics: metrics.json: evaluation under "test", "unsure_threshold", "seconds"...
        status: status.json, with "status" replaced by the effective status (see
            effective_status) and the written one kept as "recorded_status".
        versions: Python, TensorFlow, Keras, numpy versions and device summary.
        model_path: model.keras, or None when the run has no model (yet).
        problems: Files that were missing or corrupt; a run with problems may be "broken".
    """

    run_id: str
    run_dir: Path
    config: TrainConfig | None
    labels: list[str]
    input_size: int | None
    backbone: str | None
    dataset: dict[str, Any]
    split: pd.DataFrame | None
    history: pd.DataFrame
    events: list[dict[str, Any]]
    metrics: dict[str, Any]
    status: dict[str, Any]
    versions: dict[str, Any]
    model_path: Path | None
    problems: list[str] = field(default_factory=list)

    @property
    def state(self) -> str:
        """Effective status: running, completed, cancelled, failed, interrupted or broken."""
        return str(self.status.get("status", BROKEN))

    @property
    def error(self) -> str | None:
        """Failure message, or why the run is interrupted or broken."""
        return self.status.get("message")

    @property
    def created(self) -> dt.datetime | None:
        """When training started (UTC)."""
        return _parse_time(self.status.get("started")) or _created_from_id(self.run_id)

    @property
    def finished(self) -> dt.datetime | None:
        """When the run ended (UTC), None while running or when unknown."""
        return _parse_time(self.status.get("finished"))

    @property
    def test_accuracy(self) -> float | None:
        """Accuracy on the test split, when evaluated."""
        return _metric(self.metrics, "test_accuracy")

    @property
    def best_val_accuracy(self) -> float | None:
        """Best validation accuracy over all epochs."""
        best = _history_facts(self.history)["best_val_accuracy"]
        return best if best is not None else _metric(self.metrics, "best_val_accuracy")

    @property
    def unsure_threshold(self) -> float:
        """Top probability below which a prediction is flagged unsure (0.5 when not chosen)."""
        value = _metric(self.metrics, "unsure_threshold")
        return 0.5 if value is None else value

    @property
    def averaged_epochs(self) -> int:
        """Fine-tuning epochs whose weights the saved model averages; 0 or 1: no average."""
        value = _metric(self.metrics, "fine_tune_averaged_epochs")
        return int(value) if value is not None else 0

    @property
    def fine_tune_start_epoch(self) -> int | None:
        """First epoch of the fine-tune phase, or None when the run did not fine-tune."""
        rows = self.history[self.history["phase"] == "fine-tune"]
        if rows.empty:
            return None
        epoch = pd.to_numeric(rows["epoch"], errors="coerce").min()
        return int(epoch) if pd.notna(epoch) else None

    @property
    def evaluation(self) -> EvalResult | None:
        """The test-split evaluation rebuilt from metrics.json, or None when absent."""
        from core.evaluation import EvalResult  # only runs whose pages need it pay for it

        data = self.metrics.get("test")
        return EvalResult.from_dict(data) if isinstance(data, Mapping) else None

    def summary(self) -> RunSummary:
        """The run's row in the run list."""
        facts = _history_facts(self.history)
        params = self.metrics.get("params") or {}
        size = self.model_path.stat().st_size / 1e6 if self.model_path else None
        counts = self.dataset.get("split_counts") or {}
        depth = self.metrics.get("depth")
        return RunSummary(
            run_id=self.run_id, run_dir=self.run_dir, created=self.created, status=self.state,
            backbone=self.backbone, dataset=self.dataset.get("name"),
            num_classes=len(self.labels) or None, train_images=counts.get("train"),
            total_params=params.get("total"), trainable_params=params.get("trainable"),
            depth=int(depth) if isinstance(depth, (int, float)) else None,
            model_size_mb=size, seconds_per_epoch=facts["seconds_per_epoch"],
            best_epoch=facts["best_epoch"],
            best_val_accuracy=self.best_val_accuracy,
            test_accuracy=self.test_accuracy, epochs_run=facts["epochs_run"], error=self.error,
        )


# --- writing a run -------------------------------------------------------------------------


class RunWriter:
    """Writes one run's files while it trains; every write is atomic or append-only.

    Usable as a context manager: leaving it by an exception while the status is still
    "running" marks the run cancelled (for Cancelled) or failed (anything else).
    """

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
        """Appends one progress event (a dict or an object with to_dict()) to events.jsonl."""
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
        """Replaces history.csv: one row per epoch, HISTORY_COLUMNS first, extra columns kept.

        Raises:
            ValueError: when the table has no "epoch" column (a programming error).
        """
        if "epoch" not in history.columns:
            raise ValueError("history needs an 'epoch' column (1-based, continuous over phases)")
        frame = history.copy()
        for column in HISTORY_COLUMNS:
            if column not in frame.columns:
                frame[column] = np.nan
        ordered = HISTORY_COLUMNS + [c for c in frame.columns if c not in HISTORY_COLUMNS]
        write_text_atomic(self.run_dir / HISTORY_FILE, frame[ordered].to_csv(index=False))

    def write_metrics(self, metrics: Mapping[str, Any]) -> None:
        """Replaces metrics.json.

        Keys read back by the store: "test" (EvalResult.to_dict()), "test_accuracy",
        "best_val_accuracy", "unsure_threshold", "seconds", "params" ({"total",
        "trainable", "non_trainable"}) and "depth"; any other JSON-ready keys are kept.
        """
        write_json_atomic(self.run_dir / METRICS_FILE, metrics)

    def save_model(self, model: Any, frozen_base: Any | None = None) -> Path:
        """Saves a Keras model as model.keras atomically and records its input size.

        The model is written to a temporary .keras file in the run folder, synced, then renamed
        over model.keras, so a reader never sees half a model.

        Args:
            model: The Keras model.
            frozen_base: A layer of the model whose weights never change in this process;
                its saved weights are reused from an earlier save (core.model_archive).

        Returns:
            Path of model.keras.
        """
        final = self.run_dir / MODEL_FILE
        tmp = self.run_dir / f".model-{secrets.token_hex(4)}.tmp.keras"  # Keras wants .keras
        try:
            if frozen_base is None:
                model.save(tmp)
            else:
                from core import model_archive  # Keras and h5py: only for real models

                model_archive.save_model(model, tmp, frozen_base)
            with tmp.open("rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
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
            status: One of running, completed, cancelled, failed.
            error: Message for people, for a failed run.
            traceback: Full traceback of a failure, for developers.
        """
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, not {status!r}")
        with self._lock:
            self._status.update(status=status, error=error, traceback=traceback,
                                updated=_now_iso(), **own_process_facts())
            if status in FINAL_STATUSES:
                self._status["finished"] = self._status["updated"]
            write_json_atomic(self.run_dir / STATUS_FILE, self._status)

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is None or self.status != RUNNING:
            return
        if isinstance(exc, Cancelled):
            self.set_status(CANCELLED)
        else:
            import traceback as tb_module

            message = str(exc) or type(exc).__name__
            self.set_status(FAILED, message,
                            traceback="".join(tb_module.format_exception(exc_type, exc, tb)))


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
    }


# --- the store -----------------------------------------------------------------------------


class RunStore:
    """The runs of one studio home: `<home>/runs/<run id>/`.

    Args:
        home: The studio home (see core.config.studio_home).
    """

    def __init__(self, home: str | Path) -> None:
        self.home = Path(home).expanduser()
        self.runs_dir = self.home / RUNS_DIRNAME

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
            device: Device description for versions.json; detected when None.

        Returns:
            The RunWriter of the new run.
        """
        names = [str(label) for label in labels]
        if len(names) < 1 or len(set(names)) != len(names):
            raise ValueError(f"labels must be unique class names, got {names!r}")
        versions = collect_versions(device)
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        run_id = new_run_id(config.backbone)
        while (self.runs_dir / run_id).exists():
            run_id = new_run_id(config.backbone)
        staging = self.runs_dir / f"{_STAGING_PREFIX}{run_id}"
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
            write_text_atomic(staging / HISTORY_FILE, ",".join(HISTORY_COLUMNS) + "\n")
            write_json_atomic(staging / VERSIONS_FILE, versions)
            write_json_atomic(staging / STATUS_FILE, status)
            final = self.runs_dir / run_id
            os.rename(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        fsync_dir(self.runs_dir)
        log.info("Created run %s", final)
        return RunWriter(final, status)

    def list(self) -> list[RunSummary]:
        """Every run, newest first; an unreadable run is listed as "broken", never raised."""
        if not self.runs_dir.is_dir():
            return []
        summaries = []
        for entry in sorted(self.runs_dir.iterdir()):
            if entry.name.startswith(".") or not entry.is_dir():
                continue  # staging, trash and temp files
            try:
                summaries.append(self._load(entry, light=True).summary())
            except Exception as exc:  # one unreadable run must not hide the others
                log.warning("Run %s is unreadable", entry, exc_info=True)
                summaries.append(RunSummary(
                    run_id=entry.name, run_dir=entry, created=_created_from_id(entry.name),
                    status=BROKEN, error=f"The run folder cannot be read ({exc}).",
                ))
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
            raise RunNotFoundError(f"No run was given. {_HOW_TO_LIST}, and pass a run id.")
        if _RUN_ID_RE.fullmatch(text) and (self.runs_dir / text).is_dir():
            return self.runs_dir / text
        path = Path(text).expanduser()
        if path.is_dir():
            if any((path / name).exists() for name in (STATUS_FILE, CONFIG_FILE, LABELS_FILE)):
                return path.resolve()
            raise RunNotFoundError(
                f"{path} is a folder but not a run (it has no {STATUS_FILE} or {CONFIG_FILE}). "
                f"{_HOW_TO_LIST}, and pass a run id or a run folder."
            )
        raise RunNotFoundError(
            f"No run {text!r} in {self.runs_dir}. {_HOW_TO_LIST}, and pass a run id or a run "
            "folder."
        )

    def load(self, run: str | Path) -> Run:
        """Reads everything stored for a run; missing or corrupt files become run.problems.

        Raises:
            RunNotFoundError: when the run does not exist.
        """
        return self._load(self.resolve(run), light=False)

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
        text = str(run_id).strip()
        runs_dir = self.runs_dir.resolve() if self.runs_dir.exists() else self.runs_dir
        if not _RUN_ID_RE.fullmatch(text):
            candidate = Path(text).expanduser()
            if candidate.is_absolute() or os.sep in text:
                if candidate.resolve().parent != runs_dir:
                    raise RunNotFoundError(
                        f"Refusing to delete {text!r}: only run folders directly inside "
                        f"{self.runs_dir} can be deleted. {_HOW_TO_LIST}, and pass a run id."
                    )
                text = candidate.resolve().name
            if not _RUN_ID_RE.fullmatch(text):
                raise RunNotFoundError(
                    f"{text!r} is not a run id. {_HOW_TO_LIST}, and pass one of their ids."
                )
        path = self.runs_dir / text
        if path.is_symlink():
            path.unlink()  # remove the link only, never what it points to
            return
        if not path.is_dir() or path.resolve().parent != runs_dir:
            raise RunNotFoundError(f"No run {text!r} in {self.runs_dir}. {_HOW_TO_LIST}.")
        if not force:
            with contextlib.suppress(OSError, ValueError):
                status = read_json(path / STATUS_FILE)
                if isinstance(status, dict) and effective_status(status)[0] == RUNNING:
                    raise JobError(
                        f"Run {text} is still training. Cancel it first, or wait until it ends, "
                        "then delete it."
                    )
        trash = self.runs_dir / f"{_TRASH_PREFIX}{text}-{secrets.token_hex(3)}"
        os.rename(path, trash)
        shutil.rmtree(trash, ignore_errors=True)
        for leftover in self.runs_dir.glob(f"{_TRASH_PREFIX}*"):  # from deletes that were killed
            shutil.rmtree(leftover, ignore_errors=True)
        log.info("Deleted run %s", text)

    # -- reading ---------------------------------------------------------------------------

    def _load(self, run_dir: Path, *, light: bool) -> Run:
        """Reads a run; light skips the split table and events (enough for a summary)."""
        problems: list[str] = []
        broken: list[str] = []

        def json_file(name: str, required: bool) -> Any:
            path = run_dir / name
            try:
                return read_json(path)
            except FileNotFoundError:
                (broken if required else problems).append(f"{name} is missing")
            except (OSError, ValueError) as exc:
                (broken if required else problems).append(f"{name} is corrupt ({exc})")
            return None

        if not run_dir.is_dir():
            raise RunNotFoundError(f"No run folder {run_dir}. {_HOW_TO_LIST}.")
        status = json_file(STATUS_FILE, True)
        status = status if isinstance(status, dict) else {}
        config_data = json_file(CONFIG_FILE, True)
        labels_data = json_file(LABELS_FILE, True)
        dataset = json_file(DATASET_FILE, False) or {}
        versions = json_file(VERSIONS_FILE, False) or {}

        config = None
        if isinstance(config_data, dict):
            try:
                config = TrainConfig.from_dict(config_data)
            except (AppError, TypeError, ValueError) as exc:
                problems.append(f"{CONFIG_FILE} holds options this version rejects ({exc})")
        elif config_data is not None:
            broken.append(f"{CONFIG_FILE} is not a JSON object")

        labels: list[str] = []
        input_size = None
        backbone = (config_data or {}).get("backbone") if isinstance(config_data, dict) else None
        if isinstance(labels_data, dict) and isinstance(labels_data.get("labels"), list):
            labels = [str(x) for x in labels_data["labels"]]
            input_size = labels_data.get("input_size")
            backbone = labels_data.get("backbone") or backbone
        elif labels_data is not None:
            broken.append(f"{LABELS_FILE} has no list of labels")

        recorded = status.get("status")
        state, message = effective_status(status) if status else (BROKEN, None)

        model_path: Path | None = run_dir / MODEL_FILE
        if not model_path.is_file():
            model_path = None
            if recorded == COMPLETED:
                broken.append(f"{MODEL_FILE} is missing")
        metrics = json_file(METRICS_FILE, recorded == COMPLETED) or {}
        if not isinstance(metrics, dict):
            broken.append(f"{METRICS_FILE} is not a JSON object")
            metrics = {}

        try:
            history = _read_history(run_dir / HISTORY_FILE)
        except FileNotFoundError:
            problems.append(f"{HISTORY_FILE} is missing")
            history = _empty_history()
        except (OSError, ValueError) as exc:
            problems.append(f"{HISTORY_FILE} is corrupt ({exc})")
            history = _empty_history()

        split = None
        events: list[dict[str, Any]] = []
        if not light:
            events = read_events(run_dir / EVENTS_FILE)
            try:
                split = _read_split(run_dir / SPLIT_FILE)
            except FileNotFoundError:
                problems.append(f"{SPLIT_FILE} is missing")
            except (OSError, ValueError) as exc:
                problems.append(f"{SPLIT_FILE} is corrupt ({exc})")

        if broken:
            state = BROKEN
            message = ("Broken run: " + "; ".join(broken)
                       + ". It was probably stopped while being written; delete it.")
        status_view = {**status, "status": state, "recorded_status": recorded,
                       "message": message, "problems": broken + problems}
        return Run(
            run_id=run_dir.name, run_dir=run_dir, config=config, labels=labels,
            input_size=int(input_size) if isinstance(input_size, (int, float)) else None,
            backbone=backbone, dataset=dataset if isinstance(dataset, dict) else {},
            split=split, history=history, events=events, metrics=metrics, status=status_view,
            versions=versions if isinstance(versions, dict) else {}, model_path=model_path,
            problems=broken + problems,
        )


