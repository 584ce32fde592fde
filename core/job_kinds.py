"""Kinds of background jobs that survive a server restart: their function and stored arguments.

A job of a registered kind is kept on disk while it waits, its arguments encoded as JSON, so
a restarted server can re-create and run it (core.jobs.JobManager.resume).
"""

from __future__ import annotations

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


def _encode_training(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    split_df = kwargs["split_df"]
    return to_jsonable({
        "split_df": {"columns": [str(c) for c in split_df.columns],
                     "data": split_df.astype(object).where(split_df.notna(), None)
                     .values.tolist()},
        "config": kwargs["config"].to_dict(),
        "home": str(kwargs["home"]),
        "dataset_info": kwargs.get("dataset_info"),
    })


def _decode_training(stored: Mapping[str, Any]) -> dict[str, Any]:
    from core.config import TrainConfig

    table = stored["split_df"]
    return {
        "split_df": pd.DataFrame(table["data"], columns=table["columns"]).infer_objects(),
        "config": TrainConfig.from_dict(stored["config"]),
        "home": Path(stored["home"]),
        "dataset_info": stored.get("dataset_info"),
    }


TRAIN = JobKind("train", "core.training:train", _encode_training, _decode_training)
EXPORT = JobKind("export", "core.export:export_stored_run")  # its arguments are plain strings


def resumable_kinds() -> dict[str, JobKind]:
    """The kinds the studio's job manager keeps across restarts, by name."""
    return {kind.name: kind for kind in (TRAIN, EXPORT)}
