"""What the cluster tier sends to the nodes besides core's own jobs; pickled by value (the
nodes have the `core` package, not the tests), see register()."""

from __future__ import annotations

import sys
from typing import Any

import ray

from core.training import pipeline as training


def register() -> None:
    """Has Ray ship this module's functions and classes by value to the nodes."""
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def train_ignoring_stop(*, on_event: Any, should_stop: Any, **kwargs: Any) -> Any:
    """A real training that never asks whether to stop, as a job inside a long step that
    cannot check (a conversion, a download) would: only ending its task stops it."""
    return training.train(on_event=on_event, should_stop=lambda: False, **kwargs)


@ray.remote
class CpuHolder:
    """Holds a node's CPU while it lives (started with num_cpus=1 on a chosen node)."""

    def ready(self) -> bool:
        return True
