"""A real two-node Ray cluster on this machine for the cluster tier, stopped by its own processes.

The head and a second node are started with `ray start` (both given --node-ip-address
127.0.0.1), each in a new session, so the test stops exactly the processes it started (their
process groups) and never another cluster on the machine, as `ray stop` would.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

WORKER_RESOURCE = "worker2"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RayCluster:
    """A started cluster: its address, node ids and the process groups to stop."""

    address: str
    temp_dir: Path
    groups: list[int] = field(default_factory=list)
    head_node_id: str = ""
    worker_node_id: str = ""

    def group_pids(self, group: int) -> list[int]:
        """Live processes of one process group (read from /proc)."""
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == group and fields[0] not in ("Z", "X"):
                pids.append(int(entry.name))
        return pids

    def worker_raylet_pid(self) -> int:
        """The pid of the second node's raylet (the newest one started)."""
        for pid in self.group_pids(self.groups[-1]):
            with contextlib.suppress(OSError):
                if "raylet/raylet" in Path(f"/proc/{pid}/cmdline").read_text():
                    return pid
        raise AssertionError("the second node's raylet is not running")

    def replace_worker(self) -> None:
        """Starts a new second node (after a test killed the first) with the same resource."""
        lost = self.worker_node_id
        self.groups.append(_ray_start(
            ["--address", self.address, "--resources", json.dumps({WORKER_RESOURCE: 1})],
            self.temp_dir))
        for _ in range(60):
            ids = _node_ids(self.address)
            if ids["worker"] != lost:
                self.worker_node_id = ids["worker"]
                return
            time.sleep(1)
        raise RuntimeError("the new second node did not join the cluster")

    def started_pids(self) -> set[int]:
        """The cluster's processes: its process groups and their descendants (Ray's workers
        start sessions of their own under the raylet)."""
        pids = {pid for group in self.groups for pid in self.group_pids(group)}
        parents = _parents()
        grew = True
        while grew:
            children = {pid for pid, parent in parents.items() if parent in pids} - pids
            grew = bool(children)
            pids |= children
        return pids

    def stop(self) -> None:
        """Stops every process the cluster's `ray start` commands started."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = self.started_pids()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.started_pids():
                time.sleep(0.2)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _parents() -> dict[int, int]:
    """Parent pid of every live process (from /proc)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if fields[0] not in ("Z", "X"):
                    parents[int(entry.name)] = int(fields[1])
    return parents


def _ray_start(args: list[str], temp_dir: Path) -> int:
    """Runs one `ray start` in a new session; returns its process group id."""
    ray = Path(sys.executable).with_name("ray")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "TF_CPP_MIN_LOG_LEVEL": "2",
           # a node's health is checked every second; 5 misses: dead (defaults take ~30 s)
           "RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "5"}
    started = subprocess.Popen(
        [str(ray), "start", *args, "--node-ip-address", "127.0.0.1", "--num-cpus", "1",
         "--temp-dir", str(temp_dir), "--disable-usage-stats"],
        start_new_session=True, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    output, _ = started.communicate(timeout=180)
    if started.returncode != 0:
        raise RuntimeError(f"ray start {' '.join(args)} failed:\n{output}")
    return started.pid  # the session's (and process group's) id


def _node_ids(address: str) -> dict[str, str]:
    """Node id by role ("head", "worker") read by a short-lived driver."""
    code = (
        "import json, ray\n"
        f"ray.init(address={address!r}, logging_level='ERROR', log_to_driver=False)\n"
        "nodes = [n for n in ray.nodes() if n['Alive']]\n"
        f"print(json.dumps({{('worker' if {WORKER_RESOURCE!r} in n['Resources'] else 'head'):"
        " n['NodeID'] for n in nodes}))\n"
    )
    for _ in range(30):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                              timeout=120)
        if done.returncode == 0:
            ids = json.loads(done.stdout.strip().splitlines()[-1])
            if {"head", "worker"} <= set(ids):
                return ids
        time.sleep(1)
    raise RuntimeError(f"the cluster did not show two nodes:\n{done.stdout}\n{done.stderr}")


@contextlib.contextmanager
def two_node_cluster() -> Iterator[RayCluster]:
    """A head (1 CPU) and a second node (1 CPU, resource worker2) on 127.0.0.1."""
    # Ray's socket paths must stay short: a temp dir of its own directly under /tmp.
    temp_dir = Path(tempfile.mkdtemp(prefix="tlray-", dir="/tmp"))
    port = free_port()
    cluster = RayCluster(address=f"127.0.0.1:{port}", temp_dir=temp_dir)
    try:
        cluster.groups.append(_ray_start(
            ["--head", "--port", str(port), "--include-dashboard", "false",
             "--ray-client-server-port", str(free_port())], temp_dir))
        cluster.groups.append(_ray_start(
            ["--address", cluster.address, "--resources", json.dumps({WORKER_RESOURCE: 1})],
            temp_dir))
        ids = _node_ids(cluster.address)
        cluster.head_node_id, cluster.worker_node_id = ids["head"], ids["worker"]
        yield cluster
    finally:
        cluster.stop()
