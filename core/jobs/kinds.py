"""Kinds of background jobs that survive a server restart: their function and stored arguments.

A job of a registered kind is kept on disk while it waits, its arguments encoded as JSON, so
a restarted server can re-create and run it (core.jobs.manager.JobManager.resume).
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from core.files import to_jsonable


def _plain(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    return to_jsonable(dict(kwargs))


@dataclass(frozen=True)
class JobKind:
    """A job function that can be re-created from its kind and stored arguments.

    Attributes:
        name: The kind given to JobManager.submit ("train"...).
        function: Import path of the job function, "package.module:function"; it is imported
            only when a stored job runs, so registering a kind imports nothing heavy.
        encode: Keyword arguments -> JSON-ready dict (raises TypeError or ValueError when they
            cannot be stored; such a job still runs, but not after a restart).
        decode: The stored dict -> keyword arguments.
    """

    name: str
    function: str
    encode: Callable[[Mapping[str, Any]], dict[str, Any]] = _plain
    decode: Callable[[Mapping[str, Any]], dict[str, Any]] = dict

    def resolve(self) -> Callable[..., Any]:
        """The job function itself."""
        module, _, name = self.function.partition(":")
        return getattr(importlib.import_module(module), name)

    def made_by(self, fn: Callable[..., Any]) -> bool:
        """Whether fn is this kind's function (checked by name, without importing it)."""
        module = getattr(fn, "__module__", None)
        return f"{module}:{getattr(fn, '__qualname__', None)}" == self.function


def _encode_table(table: pd.DataFrame) -> dict[str, Any]:
    return {"columns": [str(c) for c in table.columns],
            "data": table.astype(object).where(table.notna(), None).values.tolist()}


def _decode_table(stored: Mapping[str, Any]) -> pd.DataFrame:
    return pd.DataFrame(stored["data"], columns=stored["columns"]).infer_objects()


def _encode_training(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    return to_jsonable({
        "split_df": _encode_table(kwargs["split_df"]),
        "config": kwargs["config"].to_dict(),
        "home": str(kwargs["home"]),
        "dataset_info": kwargs.get("dataset_info"),
    })


def _decode_training(stored: Mapping[str, Any]) -> dict[str, Any]:
    from core.config import TrainConfig

    return {
        "split_df": _decode_table(stored["split_df"]),
        "config": TrainConfig.from_dict(stored["config"]),
        "home": Path(stored["home"]),
        "dataset_info": stored.get("dataset_info"),
    }


TRAIN = JobKind("train", "core.training.pipeline:train", _encode_training, _decode_training)
EXPORT = JobKind("export", "core.export.exporter:export_stored_run")  # its arguments are plain strings


@dataclass(frozen=True)
class StoredDataset:
    """What an audit needs of a dataset, re-created from a stored job: its index and folder."""

    index: pd.DataFrame
    root: Path


def _encode_audit(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    from core.audit.findings import dataset_root, index_of

    dataset = kwargs["dataset_or_index"]
    return to_jsonable({
        "index": _encode_table(index_of(dataset)), "root": str(dataset_root(dataset)),
        "home": str(kwargs["home"]), "config": dataclasses.asdict(kwargs["config"]),
    })


def _decode_audit(stored: Mapping[str, Any]) -> dict[str, Any]:
    from core.config import AuditConfig

    return {
        "dataset_or_index": StoredDataset(_decode_table(stored["index"]), Path(stored["root"])),
        "home": Path(stored["home"]), "config": AuditConfig(**stored["config"]),
    }


AUDIT = JobKind("audit", "core.audit.findings:audit", _encode_audit, _decode_audit)


def resumable_kinds() -> dict[str, JobKind]:
    """The kinds the studio's job manager keeps across restarts, by name."""
    return {kind.name: kind for kind in (TRAIN, EXPORT, AUDIT)}
