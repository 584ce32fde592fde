"""The epoch history of a training run: one row per epoch, one shape for trainer, store and charts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

# Values of the "phase" column.
HEAD = "head"
FINE_TUNE = "fine-tune"

METRIC_COLUMNS = ("loss", "accuracy", "val_loss", "val_accuracy")
# epoch: 1-based and continuous over both phases; phase_epoch: 1-based within its phase;
# seconds: wall time of the epoch. Further columns are kept after these.
HISTORY_COLUMNS = ("epoch", "phase", "phase_epoch", *METRIC_COLUMNS, "seconds")

# Progress-event phases (core.training.pipeline's PHASES) whose epoch-end events are history rows.
_EVENT_PHASES = {"training head": HEAD, "fine-tuning": FINE_TUNE,
                 "training top blocks": FINE_TUNE}


def with_history_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """The table with HISTORY_COLUMNS first (missing ones added empty), extra columns after."""
    frame = frame.copy()
    for column in HISTORY_COLUMNS:
        if column not in frame.columns:
            frame[column] = pd.Series(dtype="object" if column == "phase" else "float64",
                                      index=frame.index)
    ordered = list(HISTORY_COLUMNS) + [c for c in frame.columns if c not in HISTORY_COLUMNS]
    return frame[ordered]


def history_frame(rows: Iterable[Mapping[str, Any]] = ()) -> pd.DataFrame:
    """A history table from per-epoch rows (dicts with some of HISTORY_COLUMNS)."""
    return with_history_columns(pd.DataFrame([dict(row) for row in rows]))


def read_history(path: str | Path) -> pd.DataFrame:
    """Reads history.csv; an empty file is an empty history.

    Raises:
        OSError, ValueError: when the file is missing or unreadable.
    """
    try:
        frame = pd.read_csv(path, dtype={"phase": str})
    except pd.errors.EmptyDataError:
        frame = pd.DataFrame()
    return with_history_columns(frame)


def history_csv(history: pd.DataFrame) -> str:
    """The CSV text of a history table, HISTORY_COLUMNS first.

    Raises:
        ValueError: when the table has no "epoch" column (a programming error).
    """
    if "epoch" not in history.columns:
        raise ValueError("history needs an 'epoch' column (1-based, continuous over phases)")
    return with_history_columns(history).to_csv(index=False)


def from_events(events: Iterable[Any]) -> pd.DataFrame:
    """The history of a run still training, from its progress events (objects or dicts).

    Only epoch-end events of the head and fine-tune phases count (fine-tuning also reports
    every few batches), from the last "preparing" event on: a job rerun on another cluster
    node after its first one was lost starts its curves again.
    """
    rows = []
    for event in events:
        get = event.get if isinstance(event, Mapping) else (
            lambda name, default=None, e=event: getattr(e, name, default))
        if get("phase") == "preparing":  # a training (re)starts: a rerun's curves start anew
            rows = []
        phase = _EVENT_PHASES.get(get("phase"))
        metrics = get("metrics") or {}
        if phase is None or not get("epoch_end") or not metrics:
            continue
        rows.append({"epoch": len(rows) + 1, "phase": phase, "phase_epoch": get("epoch"),
                     **{k: metrics.get(k) for k in METRIC_COLUMNS}})
    return history_frame(rows)


def fine_tune_start_epoch(history: pd.DataFrame) -> int | None:
    """First epoch of the fine-tune phase, or None when the run did not fine-tune."""
    if history.empty or "phase" not in history.columns:
        return None
    rows = history[history["phase"].astype(str) == FINE_TUNE]
    if rows.empty:
        return None
    epoch = pd.to_numeric(rows["epoch"], errors="coerce").min()
    return int(epoch) if pd.notna(epoch) else None


def history_facts(history: pd.DataFrame) -> dict[str, Any]:
    """epochs_run, best_epoch, best_val_accuracy and seconds_per_epoch of a history."""
    facts: dict[str, Any] = {"epochs_run": len(history), "best_epoch": None,
                             "best_val_accuracy": None, "seconds_per_epoch": None}
    if history.empty:
        return facts
    val = pd.to_numeric(history["val_accuracy"], errors="coerce").reset_index(drop=True)
    if val.notna().any():
        best = int(val.idxmax())
        facts["best_val_accuracy"] = float(val[best])
        epoch = pd.to_numeric(history["epoch"], errors="coerce").reset_index(drop=True)[best]
        facts["best_epoch"] = int(epoch) if pd.notna(epoch) else best + 1
    seconds = pd.to_numeric(history["seconds"], errors="coerce")
    if seconds.notna().any():
        facts["seconds_per_epoch"] = float(seconds.mean())
    return facts
