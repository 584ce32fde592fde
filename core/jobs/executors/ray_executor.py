"""The `ray` executor: each job runs as a Ray task on a cluster node, followed from the server.

Connects once per server process (ray.init with the configured address), ships the studio's
`core` package to the nodes (runtime_env py_modules) with the settings they need, and for each
job: writes a home check file, starts a channel actor on the server's node and the task
(a GPU requested when the cluster has one and the job can use it), relays the channel's
events to the job's on_event, turns a stop request into the channel's stop flag and, if the
task does not end within a grace period, ray.cancel. A task whose node dies is retried once by
Ray (max_retries=1); when no other node takes it, the job ends interrupted, naming the node.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

import core
from core.errors import Cancelled
from core.jobs.executors import ClusterError, JobInterrupted, home_check, ray_task
from core.runs import placement

logger = logging.getLogger(__name__)

GPU_KINDS = ("train", "audit")  # jobs whose work (extraction, fine-tuning) can use a GPU
PASSED_ENV_PREFIXES = ("TL_STUDIO_", "KERAS_", "TF_", "TFHUB_")
POLL_SECONDS = 0.25
CONNECT_TIMEOUT_SECONDS = 5.0

# Module-level state: Ray allows one cluster connection per process (ray.init); this names
# the address it was made to, so an executor for another address refuses instead of using it.
_connected: dict[str, str] = {}
_CONNECTION_LOCK = threading.Lock()


def disconnect() -> None:
    """Leaves the cluster this process is connected to (before the cluster is stopped: a Ray
    driver whose cluster has gone away ends its own process after about a minute)."""
    import ray

    with _CONNECTION_LOCK:
        if ray.is_initialized():
            ray.shutdown()
        _connected.clear()


def _reachable(address: str, timeout: float) -> str | None:
    """None when host:port accepts a TCP connection, else why not."""
    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        return "it is not of the form HOST:PORT"
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return None
    except OSError as exc:
        return str(exc) or type(exc).__name__


class RayExecutor:
    """Runs jobs as Ray tasks on the cluster at `address`.

    Attributes:
        address: The cluster's address (HOST:PORT of its head, or ray://HOST:PORT).
        home: The studio home; every node must see it at the same path.
        resources: Custom resources every task asks for (TL_STUDIO_RAY_RESOURCES).
        cancel_grace: Seconds a job asked to stop may take before its task is cancelled.
        retry_wait: Seconds to wait for another node to take a job whose node died.
    """

    name = placement.RAY

    def __init__(self, address: str, *, home: str | Path, resources: Mapping[str, float] | None = None,
                 cancel_grace: float = 20.0, retry_wait: float = 60.0) -> None:
        self.address = address
        self.home = Path(home)
        self.resources = dict(resources or {})
        self.cancel_grace = cancel_grace
        self.retry_wait = retry_wait

    def describe(self) -> str:
        """A short phrase for pages and logs."""
        return f"the Ray cluster at {self.address}"

    # ------------------------------------------------------------------ connection

    def check(self) -> None:
        """Connects to the cluster if not yet connected; ClusterError saying why it cannot.

        The head's port is tried on every call (milliseconds), so a cluster that went away
        is said before a job is queued, not when it starts.
        """
        problem = _reachable(self.address, CONNECT_TIMEOUT_SECONDS)
        if problem is not None:
            raise ClusterError(self._unreachable(problem))
        with _CONNECTION_LOCK:
            if ray.is_initialized():
                if _connected.get("address") != self.address:
                    raise ClusterError(
                        f"This process is connected to the Ray cluster at "
                        f"{_connected.get('address')!r}, not {self.address!r}; restart the "
                        "server to use another cluster.")
            else:
                try:
                    ray.init(address=self.address, namespace="tl-studio", log_to_driver=False,
                             logging_level=logging.WARNING, runtime_env=self._runtime_env())
                except Exception as exc:  # ConnectionError, RuntimeError, ValueError...
                    raise ClusterError(
                        self._unreachable(f"{type(exc).__name__}: {exc}")) from exc
                _connected["address"] = self.address
                logger.info("connected to the Ray cluster at %s", self.address)
        self._check_resources()

    def _unreachable(self, why: str) -> str:
        return (f"Cannot reach the Ray cluster at {self.address!r} ({why}). Start it "
                "(`ray start --head` on its head node) or correct the address (--ray, "
                "$TL_STUDIO_RAY_ADDRESS or [studio] ray_address); jobs do not run on this "
                "machine instead while a cluster is configured.")

    def _check_resources(self) -> None:
        offered = ray.cluster_resources()
        missing = [name for name, amount in self.resources.items()
                   if offered.get(name, 0) < amount]
        if missing:
            raise ClusterError(
                f"No node of the Ray cluster at {self.address} offers the resource(s) "
                f"{', '.join(missing)} that $TL_STUDIO_RAY_RESOURCES asks for; start a node "
                "with them (ray start --resources ...) or change the setting.")

    def _runtime_env(self) -> dict[str, Any]:
        env = {k: v for k, v in os.environ.items() if k.startswith(PASSED_ENV_PREFIXES)}
        return {"py_modules": [str(Path(core.__file__).parent)], "env_vars": env}

    def _task_options(self, kind: str) -> dict[str, Any]:
        options: dict[str, Any] = {"max_retries": 1, "retry_exceptions": False,
                                   "resources": dict(self.resources)}
        if kind in GPU_KINDS and ray.cluster_resources().get("GPU", 0) >= 1:
            options["num_gpus"] = 1
        return options

    # ------------------------------------------------------------------ one job

    def run(self, fn: Callable[..., Any], kwargs: Mapping[str, Any], *, kind: str,
            on_event: Callable[[Any], None], should_stop: Callable[[], bool]) -> Any:
        """Runs the job on the cluster and returns its result; see the module docstring."""
        self.check()
        token = home_check.write_check(self.home)
        here = ray.get_runtime_context().get_node_id()
        channel = ray_task.Channel.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=True)).remote()
        try:
            ref = ray_task.run_job.options(**self._task_options(kind)).remote(
                fn, dict(kwargs), channel, str(self.home), token, kind)
            return _Follower(self, ref, channel, on_event, should_stop).follow()
        except (ray.exceptions.RayError, ConnectionError) as exc:
            # What follow() does not map (the cluster itself stopped answering, ...).
            raise ClusterError(
                f"The Ray cluster at {self.address} stopped answering while it ran this job "
                f"({type(exc).__name__}: {exc}). Check the cluster (ray status on its head), "
                "then start the job again.") from exc
        finally:
            home_check.remove_check(self.home, token)
            try:
                ray.kill(channel, no_restart=True)
            except Exception:  # the cluster may be gone; the channel goes with it
                logger.debug("could not stop a job's progress channel", exc_info=True)


def _node_alive(node_id: str) -> bool:
    for node in ray.nodes():
        if node.get("NodeID") == node_id:
            return bool(node.get("Alive"))
    return False


def _name(facts: Mapping[str, Any] | None) -> str:
    if not facts:
        return "the node it was given to"
    return f"node {str(facts.get('node_id'))[:12]} at {facts.get('node_address')}"


class _Follower:
    """Relays one task's events and stop request until it ends; maps Ray's errors."""

    def __init__(self, executor: RayExecutor, ref: Any, channel: Any,
                 on_event: Callable[[Any], None], should_stop: Callable[[], bool]) -> None:
        self.executor, self.ref, self.channel = executor, ref, channel
        self.on_event, self.should_stop = on_event, should_stop
        self.placements: list[dict[str, Any]] = []
        self.stop_sent: float | None = None
        self.dead_since: float | None = None
        self.dead_node: dict[str, Any] | None = None
        self.alive_checked = 0.0

    def follow(self) -> Any:
        while True:
            ready, _ = ray.wait([self.ref], timeout=POLL_SECONDS)
            self._drain()
            if ready:
                break
            self._pass_stop()
            if self._node_lost():
                ray.cancel(self.ref, force=True)
                raise self._interrupted("no other node took it over")
        try:
            return ray.get(self.ref)
        except ray.exceptions.TaskCancelledError:
            raise Cancelled() from None
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, BaseException):
                raise cause from None
            raise
        except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                ray.exceptions.ObjectLostError, ray.exceptions.RaySystemError) as exc:
            raise self._interrupted(type(exc).__name__) from None

    def _drain(self) -> None:
        try:
            events, placements = ray.get(self.channel.drain.remote(), timeout=30)
        except ray.exceptions.RayError:
            logger.warning("the progress channel of a cluster job is gone", exc_info=True)
            return
        if len(placements) > len(self.placements):
            if self.placements:
                logger.warning("cluster job retried on %s after %s stopped",
                               _name(placements[-1]), _name(self.placements[-1]))
                self.dead_since = self.dead_node = None
            else:
                logger.info("cluster job runs on %s", _name(placements[-1]))
        self.placements = placements
        for event in events:
            self.on_event(event)

    def _pass_stop(self) -> None:
        if not self.should_stop():
            return
        now = time.monotonic()
        if self.stop_sent is None:
            self.stop_sent = now
            self.channel.request_stop.remote()
        elif now - self.stop_sent > self.executor.cancel_grace:
            logger.warning("cluster job did not stop within %.0f s: cancelling its task",
                           self.executor.cancel_grace)
            ray.cancel(self.ref, force=True)
            self.stop_sent = float("inf")  # cancelled once

    def _node_lost(self) -> bool:
        """True when the job's node died and no other node took the job within retry_wait."""
        now = time.monotonic()
        if not self.placements or now - self.alive_checked < 2.0:
            return False
        self.alive_checked = now
        last = self.placements[-1]
        if self.dead_since is None:
            if _node_alive(str(last.get("node_id"))):
                return False
            self.dead_since, self.dead_node = now, last
            logger.warning("the cluster's %s stopped while running a job; waiting up to %.0f s "
                           "for another node", _name(last), self.executor.retry_wait)
        return now - self.dead_since > self.executor.retry_wait

    def _interrupted(self, why: str) -> JobInterrupted:
        node = self.dead_node or (self.placements[-1] if self.placements else None)
        return JobInterrupted(
            f"The cluster's {_name(node)} stopped while running this job ({why}); what it had "
            "written is kept as an interrupted run. Start the job again.")
