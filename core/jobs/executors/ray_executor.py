"""The `ray` executor: each job runs as a Ray task on a cluster node, followed from the server.

Connects once per server process (ray.init with the configured address), ships the studio's
`core` package to the nodes (runtime_env py_modules) with the settings they need, and for each
job: writes a home check file, starts a channel actor on the server's node and the task
(a GPU requested when the cluster has one and the job can use it), relays the channel's
events to the job's on_event, turns a stop request into the channel's stop flag and, if the
task does not end within a grace period (at once when no node has started it yet),
ray.cancel(force=True), which ends its worker process; the run that attempt left "running" is
then recorded as cancelled. A task whose node dies is rerun from the start by Ray on another
node (max_retries=1), and the job's events say so; when no other node takes it within
retry_wait, the job ends interrupted, naming the node. The run a lost node on another machine
was writing is recorded as failed with that message (close_lost_attempt).

A cluster that goes away entirely: a Ray driver whose cluster's head (GCS) stops answering
ends its own process after $RAY_gcs_rpc_server_reconnect_timeout_s (60 s by default), which
would end the studio's server. A watchdog thread tries the head's port every second while
connected; after WATCH_FAILURES refusals in a row it leaves the cluster (ray.shutdown), the
jobs running there fail saying the cluster went away, and new jobs are refused with the
reason (never run on this machine instead) until the head answers again, when the next job
connects anew. Ray's auto-connect is turned off so that a Ray call made after that cannot
start a local Ray instance instead.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

# A Ray API call while not connected must fail, not start a local Ray instance (which the
# studio would then silently use instead of the configured cluster): Ray reads this at import.
os.environ.setdefault("RAY_ENABLE_AUTO_CONNECT", "0")

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

try:  # ray was imported before this module: the documented variable came too late for it
    from ray._private import auto_init_hook as _auto_init_hook

    _auto_init_hook.enable_auto_connect = False
except (ImportError, AttributeError):  # pragma: no cover - another Ray layout
    pass

import core
from core import status as run_status
from core.errors import Cancelled
from core.jobs.executors import ClusterError, JobInterrupted, home_check, ray_extraction, ray_task
from core.progress import ProgressEvent
from core.runs import placement
from core.runs import writer as run_writer
from core.runs.store import RunStore

logger = logging.getLogger(__name__)

GPU_KINDS = ("train", "audit")  # jobs whose work (extraction, fine-tuning) can use a GPU
PASSED_ENV_PREFIXES = ("TL_STUDIO_", "KERAS_", "TF_", "TFHUB_")
POLL_SECONDS = 0.25
CONNECT_TIMEOUT_SECONDS = 5.0
WATCH_SECONDS = 1.0  # the watchdog tries the head's port this often
WATCH_FAILURES = 3  # refusals in a row after which the cluster counts as gone
STATE_TIMEOUT_SECONDS = 2.0  # longest wait for the GCS to say whether a node is alive

# Module-level state: Ray allows one cluster connection per process (ray.init); this names
# the address it was made to (and counts connections), so an executor for another address
# refuses instead of using it. _lost says why the last connection was left, if it was lost.
_connected: dict[str, Any] = {}
_lost: dict[str, Any] = {}
_generation = [0]
_watch_stop = threading.Event()
_CONNECTION_LOCK = threading.Lock()
# Held around the followers' calls to the GCS; the watchdog takes it before ray.shutdown()
# (a shutdown during such a call ends the process: _node_alive).
_STATE_LOCK = threading.Lock()


def disconnect() -> None:
    """Leaves the cluster this process is connected to (before the cluster is stopped: a Ray
    driver whose cluster has gone away ends its own process after about a minute)."""
    with _CONNECTION_LOCK:
        _watch_stop.set()
        with _STATE_LOCK:
            if ray.is_initialized():
                ray.shutdown()
        _connected.clear()


def lost_reason(address: str) -> str | None:
    """Why this process left the cluster at `address` on its own (it went away), or None."""
    with _CONNECTION_LOCK:
        if _lost.get("address") == address:
            return str(_lost["reason"])
    return None


def _watch(address: str, generation: int, stop: threading.Event) -> None:
    """Leaves the cluster once its head refuses WATCH_FAILURES tries in a row (module doc)."""
    failures = 0
    while not stop.wait(WATCH_SECONDS):
        problem = _reachable(address, WATCH_SECONDS)
        failures = 0 if problem is None else failures + 1
        if failures < WATCH_FAILURES:
            continue
        with _CONNECTION_LOCK:
            if stop.is_set() or _connected.get("generation") != generation:
                return
            _lost.update(address=address, generation=generation, reason=(
                f"the Ray cluster at {address} went away at {time.strftime('%H:%M:%S')} "
                f"(its head stopped answering: {problem}); this server left it so that it "
                "keeps serving pages"))
            logger.error("%s", _lost["reason"])
            held = _STATE_LOCK.acquire(timeout=4 * STATE_TIMEOUT_SECONDS)
            try:
                ray.shutdown()
            except Exception:  # leaving must not fail the watchdog; Ray's state is reset anyway
                logger.warning("ray.shutdown after losing the cluster failed", exc_info=True)
            finally:
                if held:
                    _STATE_LOCK.release()
            _connected.clear()
        return


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
            lost = lost_reason(self.address)
            raise ClusterError(self._unreachable(problem) + (
                f" Earlier, {lost}; jobs running there failed." if lost else ""))
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
                _generation[0] += 1
                _connected.update(address=self.address, generation=_generation[0])
                _lost.clear()
                global _watch_stop
                _watch_stop = threading.Event()
                threading.Thread(target=_watch, args=(self.address, _generation[0], _watch_stop),
                                 name="tl-studio-ray-watchdog", daemon=True).start()
                logger.info("connected to the Ray cluster at %s", self.address)
        self._check_resources()

    def _unreachable(self, why: str) -> str:
        return (f"Cannot reach the Ray cluster at {self.address!r} ({why}). Start it "
                "(`ray start --head` on its head node) or correct the address (--ray, "
                "$TL_STUDIO_RAY_ADDRESS or [studio] ray_address); jobs do not run on this "
                "machine instead while a cluster is configured.")

    def extract_features(self, config: Any, paths: Sequence[str | Path],
                         sha256s: Sequence[str], *, views: Sequence[int] = (0,),
                         shards: int | None = None,
                         batch_size: int = 32) -> ray_extraction.ClusterExtraction:
        """Fills the feature cache of config's base for these photos using the cluster's
        workers (core.jobs.executors.ray_extraction).

        Args:
            config: A TrainConfig naming the base and its weights.
            paths: Image files, at the same path on every node (the shared home or mount).
            sha256s: Content hash of each image (the dataset index's sha256 column).
            views: Views to extract (0: the photo itself; k > 0: augmented copy k).
            shards: Tasks to split the photos into; the cluster's CPU count when None.
            batch_size: Images per inference batch within a task.

        Raises:
            ClusterError: The cluster cannot be reached, or a node does not see the home.
        """
        self.check()
        token = home_check.write_check(self.home)
        try:
            return ray_extraction.spread_extraction(
                config, paths, sha256s, home=self.home, token=token, views=views,
                shards=shards, batch_size=batch_size)
        finally:
            home_check.remove_check(self.home, token)

    def _offered(self) -> dict[str, float]:
        """The cluster's resources, asked under _STATE_LOCK: a ray.shutdown() by the watchdog
        during the call would end the process (see _node_alive)."""
        with _STATE_LOCK:
            if not ray.is_initialized():
                lost = lost_reason(self.address)
                raise ClusterError(f"Not started: {lost}." if lost else self._unreachable(
                    "this server is no longer connected to it"))
            return dict(ray.cluster_resources())

    def _check_resources(self) -> None:
        offered = self._offered()
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
        if kind in GPU_KINDS and self._offered().get("GPU", 0) >= 1:
            options["num_gpus"] = 1
        return options

    # ------------------------------------------------------------------ one job

    def run(self, fn: Callable[..., Any], kwargs: Mapping[str, Any], *, kind: str,
            on_event: Callable[[Any], None], should_stop: Callable[[], bool]) -> Any:
        """Runs the job on the cluster and returns its result; see the module docstring."""
        self.check()
        with _CONNECTION_LOCK:
            generation = _connected.get("generation")
        token = home_check.write_check(self.home)
        here = ray.get_runtime_context().get_node_id()
        # On the server's own node, not merely preferred there: a soft preference sent it to
        # another node when this one's CPUs were all taken, and a node lost there took the
        # job's channel with it, so a job Ray could rerun failed instead.
        channel = ray_task.Channel.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False)).remote()
        try:
            ref = ray_task.run_job.options(**self._task_options(kind)).remote(
                fn, dict(kwargs), channel, str(self.home), token, kind)
            return _Follower(self, ref, channel, on_event, should_stop, generation).follow()
        except (ray.exceptions.RayError, ConnectionError) as exc:
            self._await_verdict(generation)
            # What follow() does not map (the cluster itself stopped answering, ...).
            raise ClusterError(
                f"The Ray cluster at {self.address} stopped answering while it ran this job "
                f"({type(exc).__name__}: {exc}). Check the cluster (ray status on its head), "
                "then start the job again.") from exc
        finally:
            home_check.remove_check(self.home, token)
            try:
                if ray.is_initialized():
                    ray.kill(channel, no_restart=True)
            except Exception:  # the cluster may be gone; the channel goes with it
                logger.debug("could not stop a job's progress channel", exc_info=True)

    def _await_verdict(self, generation: Any) -> None:
        """After a Ray error: while the head is unreachable, waits for the watchdog to say the
        cluster went away (seconds) and raises that; returns when the head still answers."""
        deadline = time.monotonic() + (WATCH_FAILURES + 3) * WATCH_SECONDS
        while time.monotonic() < deadline and _reachable(self.address, WATCH_SECONDS):
            self._raise_if_lost(generation)
            time.sleep(0.2)
        self._raise_if_lost(generation)

    def _raise_if_lost(self, generation: Any) -> None:
        """ClusterError when the watchdog left the cluster this job was started on."""
        with _CONNECTION_LOCK:
            lost = _lost.get("reason") if _lost.get("generation") == generation else None
        if lost:
            raise ClusterError(
                f"This job stopped because {lost}. Start it again once the cluster is back "
                "(ray status on its head); jobs do not run on this machine instead.")


def _node_alive(node_id: str) -> bool | None:
    """Whether the GCS says the node is alive; None when it does not answer within
    STATE_TIMEOUT_SECONDS (the cluster itself may be going away: the watchdog decides).

    Not ray.nodes(): that call waits for the GCS without a bound, and a ray.shutdown() made
    while it waits (the watchdog's) ends the process in a failed check inside Ray. This call
    is bounded and holds _STATE_LOCK, which the watchdog takes before leaving the cluster.
    """
    from ray._private import worker as ray_worker
    from ray.core.generated.gcs_pb2 import GcsNodeInfo
    from ray.core.generated.gcs_service_pb2 import GetAllNodeInfoRequest

    with _STATE_LOCK:
        if not ray.is_initialized():
            return None
        try:
            client = ray_worker.global_worker.gcs_client
            alive = client.get_all_node_info(
                timeout=STATE_TIMEOUT_SECONDS,
                node_selectors=[GetAllNodeInfoRequest.NodeSelector(
                    node_id=ray.NodeID.from_hex(node_id).binary())],
                state_filter=GcsNodeInfo.GcsNodeState.ALIVE)
        except Exception:  # a timeout, or the GCS is gone
            logger.debug("the cluster's GCS did not say whether a node is alive", exc_info=True)
            return None
    return bool(alive)


def close_lost_attempt(home: Path, placement_facts: Mapping[str, Any] | None,
                       message: str) -> list[str]:
    """Records as failed the run a lost node's attempt was writing, when that node is another
    machine; returns its run id. On this machine the run store sees that the writing process
    is gone and lists the run as interrupted; a process on another machine it cannot check,
    so without this the run would read "running" for ever."""
    worker = (placement_facts or {}).get("worker") or {}
    if not worker.get("pid") or worker.get("hostname") == socket.gethostname():
        return []
    closed = run_writer.close_runs_left_by(RunStore(home).runs_dir, worker, run_status.FAILED,
                                           message)
    if closed:
        logger.info("run %s of a lost node recorded as failed", ", ".join(closed))
    return closed


def _name(facts: Mapping[str, Any] | None) -> str:
    if not facts:
        return "the node it was given to"
    return f"node {str(facts.get('node_id'))[:12]} at {facts.get('node_address')}"


class _Follower:
    """Relays one task's events and stop request until it ends; maps Ray's errors."""

    def __init__(self, executor: RayExecutor, ref: Any, channel: Any,
                 on_event: Callable[[Any], None], should_stop: Callable[[], bool],
                 generation: Any = None) -> None:
        self.executor, self.ref, self.channel = executor, ref, channel
        self.on_event, self.should_stop = on_event, should_stop
        self.generation = generation
        self.placements: list[dict[str, Any]] = []
        self.stop_sent: float | None = None
        self.force_cancelled = False
        self.dead_since: float | None = None
        self.dead_node: dict[str, Any] | None = None
        self.alive_checked = 0.0

    def follow(self) -> Any:
        while True:
            self.executor._raise_if_lost(self.generation)
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
            self._close_cancelled_run()
            raise Cancelled() from None
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, BaseException):
                raise cause from None
            raise
        except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                ray.exceptions.ObjectLostError, ray.exceptions.RaySystemError) as exc:
            self.executor._await_verdict(self.generation)
            if self.force_cancelled:  # its worker was ended by ray.cancel(force=True)
                self._close_cancelled_run()
                raise Cancelled() from None
            raise self._interrupted(type(exc).__name__) from None

    def _close_cancelled_run(self) -> None:
        """The attempt's worker was ended mid-write: its run is recorded as cancelled."""
        self._drain()  # the placement of an attempt that had just started
        if not self.placements:
            return  # no node had started it: nothing was written
        closed = run_writer.close_runs_left_by(
            RunStore(self.executor.home).runs_dir, (self.placements[-1] or {}).get("worker"),
            run_status.CANCELLED,
            "Cancelled: its task was stopped on the cluster before it could stop by itself; "
            "what it had written is kept as is.")
        if closed:
            logger.info("run %s of a cancelled cluster job recorded as cancelled",
                        ", ".join(closed))

    def _drain(self) -> None:
        try:
            events, placements = ray.get(self.channel.drain.remote(), timeout=30)
        except ray.exceptions.RayError:
            logger.warning("the progress channel of a cluster job is gone", exc_info=True)
            return
        rerun = None
        if len(placements) > len(self.placements):
            if self.placements:
                lost, now = self.placements[-1], placements[-1]
                logger.warning("cluster job rerun on %s after %s stopped", _name(now),
                               _name(lost))
                self.dead_since = self.dead_node = None
                rerun = ProgressEvent(phase="preparing", message=(
                    f"The machine running this job (the cluster's {_name(lost)}) was lost; "
                    f"it starts again from the start on {_name(now)}."))
                close_lost_attempt(self.executor.home, lost, rerun.message)
            else:
                logger.info("cluster job runs on %s", _name(placements[-1]))
        self.placements = placements
        if rerun is not None:  # before the new attempt's own events
            attempt_started = next((i for i, e in enumerate(events)
                                    if getattr(e, "phase", None) == "preparing"), len(events))
            events = [*events[:attempt_started], rerun, *events[attempt_started:]]
        for event in events:
            self.on_event(event)

    def _pass_stop(self) -> None:
        if not self.should_stop():
            return
        now = time.monotonic()
        if self.stop_sent is None:
            self.stop_sent = now
            self.channel.request_stop.remote()
        # A task no node has started yet has nothing to stop cooperatively: cancel it now.
        grace = self.executor.cancel_grace if self.placements else 0.0
        if not self.force_cancelled and now - self.stop_sent >= grace:
            if self.placements:
                logger.warning("cluster job did not stop within %.0f s: ending its task",
                               grace)
            ray.cancel(self.ref, force=True)
            self.force_cancelled = True

    def _node_lost(self) -> bool:
        """True when the job's node died and no other node took the job within retry_wait."""
        now = time.monotonic()
        if not self.placements or now - self.alive_checked < 2.0:
            return False
        self.alive_checked = now
        last = self.placements[-1]
        if self.dead_since is None:
            if _node_alive(str(last.get("node_id"))) is not False:
                return False
            self.dead_since, self.dead_node = now, last
            logger.warning("the cluster's %s stopped while running a job; waiting up to %.0f s "
                           "for another node", _name(last), self.executor.retry_wait)
        return now - self.dead_since > self.executor.retry_wait

    def _interrupted(self, why: str) -> JobInterrupted:
        node = self.dead_node or (self.placements[-1] if self.placements else None)
        message = (f"The cluster's {_name(node)} stopped while running this job ({why}); what "
                   "it had written is kept as an interrupted run. Start the job again.")
        close_lost_attempt(self.executor.home, node, message)
        return JobInterrupted(message)
