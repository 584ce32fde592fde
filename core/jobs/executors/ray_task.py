"""What runs on a cluster node: the job's task, and the channel it reports progress into.

The channel is a small actor on the server's node: the task puts every progress event into
it and asks it whether the job should stop; the server drains it. Events keep their type
(they are pickled), so a page watching a cluster job sees what it sees for a local one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import ray

from core.files import own_process_facts
from core.jobs.executors import home_check
from core.jobs.executors.ray_node import node_facts
from core.runs import placement

STOP_POLL_SECONDS = 0.5  # should_stop() is polled per batch; the channel is asked at most this often


@ray.remote(num_cpus=0, max_restarts=0)
class Channel:
    """Events, placements and the stop flag of one job, held on the server's node."""

    def __init__(self) -> None:
        self._events: list[Any] = []
        self._placements: list[dict[str, Any]] = []
        self._stop = False

    def put(self, event: Any) -> None:
        self._events.append(event)

    def started(self, facts: dict[str, Any]) -> dict[str, Any] | None:
        """Records where an attempt runs; returns the previous attempt's placement (its node
        was lost and Ray reran the task), or None for the first attempt."""
        previous = self._placements[-1] if self._placements else None
        self._placements.append(dict(facts))
        return previous

    def drain(self) -> tuple[list[Any], list[dict[str, Any]]]:
        events, self._events = self._events, []
        return events, list(self._placements)

    def request_stop(self) -> None:
        self._stop = True

    def stopped(self) -> bool:
        return self._stop

    def flush(self) -> None:
        """A no-op: once it returns, every put() the caller sent before it has been kept."""


def run_facts(facts: Mapping[str, Any], previous: Mapping[str, Any] | None) -> dict[str, Any]:
    """What the run records as executed_on: the node, and for a rerun the node that was lost."""
    recorded = {k: v for k, v in facts.items() if k != "worker"}
    if previous:
        recorded["rerun_after_lost_node"] = {
            "node_id": previous.get("node_id"), "node_address": previous.get("node_address")}
    return recorded


def _stop_check(channel: Any) -> Callable[[], bool]:
    state = {"asked": 0.0, "stop": False}

    def should_stop() -> bool:
        now = time.monotonic()
        if not state["stop"] and now - state["asked"] >= STOP_POLL_SECONDS:
            state["asked"] = now
            state["stop"] = bool(ray.get(channel.stopped.remote()))
        return state["stop"]

    return should_stop


@ray.remote
def run_job(fn: Callable[..., Any], kwargs: Mapping[str, Any], channel: Any, home: str,
            token: str, kind: str = "") -> Any:
    """Checks the home, then runs fn(on_event=..., should_stop=..., **kwargs) on this node.

    A training of a large dataset first has its features extracted across the cluster's
    workers (ray_extraction.spread_training_extraction); it then reads them from the cache.
    """
    facts = {**node_facts(), "worker": own_process_facts()}  # worker: to close a killed run
    # The server knows the node before any work; a rerun learns which node was lost.
    previous = ray.get(channel.started.remote(facts))
    home_check.verify(home, token, facts)
    if kind == "train":
        from core.jobs.executors import ray_extraction

        ray_extraction.spread_training_extraction(dict(kwargs), token)

    def on_event(event: Any) -> None:
        channel.put.remote(event)

    try:
        with placement.running_on(run_facts(facts, previous)):
            return fn(on_event=on_event, should_stop=_stop_check(channel), **kwargs)
    finally:
        ray.get(channel.flush.remote())
