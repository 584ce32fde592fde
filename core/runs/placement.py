"""Where the current run executes: the backend, node id and node address recorded with it.

The ray executor's task sets it for the job it runs (a context variable, so it belongs to the
task's thread and the threads it copies its context to); everywhere else it reads as local.
"""

from __future__ import annotations

import contextlib
import contextvars
import socket
from collections.abc import Iterator, Mapping
from typing import Any

LOCAL = "local"
RAY = "ray"

_current: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "tl_studio_placement", default=None)


def local_facts() -> dict[str, Any]:
    """The placement of work done in this process without a cluster."""
    return {"backend": LOCAL, "node_id": None, "node_address": socket.gethostname()}


def current() -> dict[str, Any]:
    """Where the running job executes: {"backend", "node_id", "node_address", ...}."""
    facts = _current.get()
    return dict(facts) if facts is not None else local_facts()


@contextlib.contextmanager
def running_on(facts: Mapping[str, Any]) -> Iterator[None]:
    """Within the block, current() returns facts (set by the ray task around its job)."""
    token = _current.set(dict(facts))
    try:
        yield
    finally:
        _current.reset(token)
