"""The layout of one run folder, and reading it into a Run: tolerant, validated, tidied.

Only the run store (core.runs.store, core.runs.writer, core.runs.index) knows these file names; every
other module asks a Run (labels, model_path, unsure_threshold, state, usable).
"""

from __future__ import annotations

import contextlib
import logging
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from core import schema
from core.config import TrainConfig
from core.errors import AppError, RunNotFoundError
from core.files import process_alive, read_events, read_json
from core.runs import history as history_table
from core.runs import schemas
from core.runs.layout import (
    CONFIG_FILE,
    DATASET_FILE,
    EVENTS_FILE,
    HISTORY_FILE,
    LABELS_FILE,
    MARKER_FILES,
    METRICS_FILE,
    MODEL_FILE,
    SPLIT_FILE,
    STATUS_FILE,
    TEMP_SUFFIXES,
    VERSIONS_FILE,
)
from core.runs.record import HOW_TO_LIST, Run
from core.status import BROKEN, COMPLETED, INTERRUPTED, RUN_RECORDED, RUNNING

log = logging.getLogger(__name__)

# Members every Keras 3 model archive holds.
_MODEL_MEMBERS = ("config.json",)
_MODEL_WEIGHTS_PREFIX = "model.weights"


def effective_status(status: Mapping[str, Any]) -> tuple[str, str | None]:
    """The status to show for a recorded status: its own, or "interrupted" when its process died.

    Returns:
        (status, message): message is the run's error, or why it is interrupted or broken.
    """
    recorded = status.get("status")
    if recorded not in RUN_RECORDED:
        return BROKEN, f"{STATUS_FILE} holds an unknown status {recorded!r}."
    if recorded == RUNNING and not process_alive(status):
        return INTERRUPTED, (
            f"The process that trained this run (pid {status.get('pid')}) ended without "
            "finishing it (killed, crashed or the machine restarted). Train again; delete this "
            "run when you no longer need it."
        )
    error = status.get("error")
    return recorded, str(error) if error else None


def looks_like_run(folder: Path) -> bool:
    """Whether a folder holds any of a run's marker files."""
    return any((folder / name).exists() for name in MARKER_FILES)


def model_problem(path: Path) -> str | None:
    """Why a model file cannot be loaded (missing, not a whole Keras archive), or None.

    Reads the zip's central directory only (at the end of the file), so a file cut short by a
    kill or a full disk is caught without loading the model.
    """
    if not path.is_file():
        return f"{path.name} is missing"
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except (OSError, zipfile.BadZipFile, ValueError) as exc:
        return f"{path.name} cannot be loaded: it is not a complete Keras archive ({exc})"
    missing = [m for m in _MODEL_MEMBERS if m not in names]
    if missing or not any(n.startswith(_MODEL_WEIGHTS_PREFIX) for n in names):
        return f"{path.name} cannot be loaded: it is not a Keras model archive"
    return None


def remove_temp_files(run_dir: Path) -> list[str]:
    """Deletes the temporary files that writes killed midway left in a run folder.

    Call only when no process writes the run any more (its status is not effectively running).

    Returns:
        Names of the files removed.
    """
    removed = []
    with contextlib.suppress(OSError):
        for entry in run_dir.iterdir():
            if entry.name.startswith(".") and entry.name.endswith(TEMP_SUFFIXES):
                with contextlib.suppress(OSError):
                    entry.unlink()
                    removed.append(entry.name)
    if removed:
        log.info("Removed temporary files of a dead writer from %s: %s", run_dir, removed)
    return removed


def read_split(path: Path) -> pd.DataFrame:
    """Reads split.csv; a class called "NA" or "None" stays a string."""
    return pd.read_csv(path, keep_default_na=False, na_values={"width": [""], "height": [""]},
                       dtype={"path": str, "label": str, "sha256": str, "split": str})


@dataclass
class _Reading:
    """What reading one run folder found so far."""

    run_dir: Path
    broken: list[str] = field(default_factory=list)    # the run cannot be used
    problems: list[str] = field(default_factory=list)  # worth saying, the run still works

    def json_file(self, name: str, *, required: bool, spec: schema.Spec | None = None) -> Any:
        """The file's content when it is there and matches spec; else None, noted as a
        reason the run is broken (required) or as a problem."""
        try:
            return schema.check(read_json(self.run_dir / name), spec or schema.anything, name)
        except FileNotFoundError:
            (self.broken if required else self.problems).append(f"{name} is missing")
        except schema.SchemaError as exc:  # valid JSON, wrong types or ranges
            (self.broken if required else self.problems).append(f"{name} is damaged: {exc}")
        except (OSError, ValueError) as exc:
            (self.broken if required else self.problems).append(f"{name} is corrupt ({exc})")
        return None

    def table(self, name: str, read: Callable[[Path], Any], empty: Callable[[], Any]) -> Any:
        try:
            return read(self.run_dir / name)
        except FileNotFoundError:
            self.problems.append(f"{name} is missing")
        except (OSError, ValueError) as exc:
            self.problems.append(f"{name} is corrupt ({exc})")
        return empty()


def _config(reading: _Reading) -> tuple[TrainConfig | None, dict[str, Any]]:
    data = reading.json_file(CONFIG_FILE, required=True)
    if data is None:
        return None, {}
    if not isinstance(data, dict):
        reading.broken.append(f"{CONFIG_FILE} is not a JSON object")
        return None, {}
    try:
        return TrainConfig.from_dict(data), data
    except (AppError, TypeError, ValueError) as exc:
        reading.problems.append(f"{CONFIG_FILE} holds options this version rejects ({exc})")
        return None, data


def _labels(reading: _Reading, config_data: dict[str, Any]) -> dict[str, Any]:
    """labels, input_size, backbone and hub_handle, validated; a bad labels file breaks the run."""
    facts = {"labels": [], "input_size": None, "backbone": config_data.get("backbone"),
             "hub_handle": config_data.get("hub_handle")}
    data = reading.json_file(LABELS_FILE, required=True)
    if data is None:
        return facts
    labels = data.get("labels") if isinstance(data, dict) else None
    if not (isinstance(labels, list) and labels and all(isinstance(x, str) for x in labels)):
        reading.broken.append(f"{LABELS_FILE} has no list of class names")
        return facts
    if len(set(labels)) != len(labels):
        reading.broken.append(f"{LABELS_FILE} names a class twice")
        return facts
    size = data.get("input_size")
    facts.update(labels=labels, input_size=int(size) if isinstance(size, (int, float))
                 and not isinstance(size, bool) and size > 0 else None)
    facts["backbone"] = data.get("backbone") or facts["backbone"]
    facts["hub_handle"] = data.get("hub_handle") or facts["hub_handle"]
    return facts


def _model_path(reading: _Reading, recorded: Any) -> Path | None:
    path = reading.run_dir / MODEL_FILE
    if recorded != COMPLETED:
        return path if path.is_file() else None
    problem = model_problem(path)
    if problem:
        reading.broken.append(problem)
    return path if path.is_file() else None


def _metrics(reading: _Reading, recorded: Any) -> dict[str, Any]:
    metrics = reading.json_file(METRICS_FILE, required=recorded == COMPLETED,
                                spec=schemas.METRICS)
    metrics = metrics or {}
    if not isinstance(metrics, dict):
        reading.broken.append(f"{METRICS_FILE} is not a JSON object")
        return {}
    return metrics


def load_run(run_dir: Path, *, light: bool = False) -> Run:
    """Reads a run folder; missing or damaged files become run.problems, never exceptions.

    The run is broken (state "broken", the reasons in its message) when a file it cannot work
    without is missing or damaged: status, config, labels (a list of distinct class names) and,
    for a completed run, the metrics and a model file that is a whole Keras archive. Temporary
    files left by a writer that died are removed.

    Args:
        run_dir: The run folder.
        light: Skip the split table and the events (enough for a summary).

    Raises:
        RunNotFoundError: when the folder does not exist.
    """
    if not run_dir.is_dir():
        raise RunNotFoundError(f"No run folder {run_dir}. {HOW_TO_LIST}.")
    reading = _Reading(run_dir)
    status = reading.json_file(STATUS_FILE, required=True, spec=schemas.STATUS)
    status = status if isinstance(status, dict) else {}
    recorded = status.get("status")
    state, message = effective_status(status) if status else (BROKEN, None)
    if state != RUNNING:
        remove_temp_files(run_dir)
    config, config_data = _config(reading)
    facts = _labels(reading, config_data)
    model_path = _model_path(reading, recorded)
    metrics = _metrics(reading, recorded)
    dataset = reading.json_file(DATASET_FILE, required=False, spec=schemas.DATASET)
    versions = reading.json_file(VERSIONS_FILE, required=False, spec=schemas.VERSIONS)
    history = reading.table(HISTORY_FILE, history_table.read_history,
                            history_table.history_frame)
    split, events = None, []
    if not light:
        events = read_events(run_dir / EVENTS_FILE)
        split = reading.table(SPLIT_FILE, read_split, lambda: None)
    if reading.broken:
        state = BROKEN
        message = ("Broken run: " + "; ".join(reading.broken)
                   + ". It was probably stopped while being written, or its files were "
                   "changed; delete it.")
    problems = reading.broken + reading.problems
    status_view = {**status, "status": state, "recorded_status": recorded,
                   "message": message, "problems": problems}
    return Run(
        run_id=run_dir.name, run_dir=run_dir, config=config, labels=facts["labels"],
        input_size=facts["input_size"], backbone=facts["backbone"],
        hub_handle=facts["hub_handle"],
        dataset=dataset if isinstance(dataset, dict) else {}, split=split, history=history,
        events=events, metrics=metrics, status=status_view,
        versions=versions if isinstance(versions, dict) else {}, model_path=model_path,
        problems=problems,
    )
