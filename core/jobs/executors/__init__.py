"""Executors behind the job queue: `local` (the default) or `ray` when a cluster is configured.

The job manager keeps the queue, its order, cancel and the records that survive a restart;
an executor only runs one job's function somewhere and relays its progress and stop requests.
Ray is imported only by make_executor() when an address is configured.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from core.errors import AppError
from core.jobs.executors.local import LocalExecutor

RAY_ADDRESS_ENV_VAR = "TL_STUDIO_RAY_ADDRESS"
RAY_RESOURCES_ENV_VAR = "TL_STUDIO_RAY_RESOURCES"
SECRETS_KEY = "ray_address"  # in the [studio] table of .streamlit/secrets.toml
INSTALL_HINT = "pip install -r requirements-cluster.txt"


class ClusterError(AppError):
    """The configured cluster cannot run the job (Ray missing, unreachable, home not shared)."""


class JobInterrupted(AppError):
    """The machine running a job went away before it ended; what it wrote is kept."""


class Executor(Protocol):
    """Runs one job's function and returns what it returns."""

    name: str

    def check(self) -> None:
        """Raises ClusterError when jobs cannot run now (called before queueing one)."""

    def describe(self) -> str:
        """A short phrase naming where jobs run, for pages and logs."""

    def run(self, fn: Callable[..., Any], kwargs: Mapping[str, Any], *, kind: str,
            on_event: Callable[[Any], None], should_stop: Callable[[], bool]) -> Any:
        """Runs fn(on_event=..., should_stop=..., **kwargs) and returns its result.

        Raises what fn raises (AppError, core.errors.Cancelled...), ClusterError when the
        cluster cannot run it, JobInterrupted when its machine went away mid-job.
        """


def ray_address(secrets: Mapping[str, Any] | None = None, override: str | None = None) -> str:
    """The configured Ray address, "" for none.

    Order: the command line's --ray, then $TL_STUDIO_RAY_ADDRESS, then `[studio] ray_address`
    in the app's secrets.
    """
    for value in (override, os.environ.get(RAY_ADDRESS_ENV_VAR)):
        if value and value.strip():
            return value.strip()
    studio = (secrets or {}).get("studio") or {}
    value = studio.get(SECRETS_KEY) if isinstance(studio, Mapping) else None
    return value.strip() if isinstance(value, str) else ""


def ray_resources() -> dict[str, float]:
    """Custom resources every studio task asks for ($TL_STUDIO_RAY_RESOURCES, a JSON object).

    A cluster whose operator labels the nodes meant for the studio (`ray start --resources
    '{"studio": 1}'`) keeps its jobs there with TL_STUDIO_RAY_RESOURCES='{"studio": 1}'.
    """
    text = os.environ.get(RAY_RESOURCES_ENV_VAR, "").strip()
    if not text:
        return {}
    try:
        value = json.loads(text)
        if not isinstance(value, dict):
            raise ValueError("not an object")
        return {str(k): float(v) for k, v in value.items()}
    except (ValueError, TypeError) as exc:
        raise ClusterError(f"${RAY_RESOURCES_ENV_VAR} must be a JSON object of resource "
                           f"amounts such as '{{\"studio\": 1}}'; it is {text!r} ({exc}).") from exc


def make_executor(home: str | Path, *, address: str | None = None,
                  secrets: Mapping[str, Any] | None = None) -> Executor:
    """The executor the settings ask for: LocalExecutor unless a Ray address is configured.

    An address with Ray missing or bad settings gives an Unavailable executor whose check()
    and run() raise a ClusterError saying what to do; the local executor is never used
    instead of a configured cluster.
    """
    chosen = ray_address(secrets, address)
    if not chosen:
        return LocalExecutor()
    try:
        from core.jobs.executors.ray_executor import RayExecutor
    except ImportError as exc:
        return Unavailable(chosen, ClusterError(
            f"The studio is configured to run its jobs on the Ray cluster at {chosen!r}, but "
            f"Ray is not installed here ({exc}). Install it with `{INSTALL_HINT}`, or remove "
            f"the address (--ray, ${RAY_ADDRESS_ENV_VAR}, [studio] {SECRETS_KEY}) to run jobs "
            "on this machine."))
    try:
        return RayExecutor(chosen, home=Path(home), resources=ray_resources())
    except ClusterError as exc:
        return Unavailable(chosen, exc)


class Unavailable:
    """A configured cluster that cannot be used (Ray missing, bad settings): every job says why.

    Jobs never run on this machine instead: the local executor is only for no address.
    """

    name = "ray"

    def __init__(self, address: str, error: ClusterError) -> None:
        self.address, self.error = address, error

    def check(self) -> None:
        """Raises the reason."""
        raise self.error

    def describe(self) -> str:
        """A short phrase for pages and logs."""
        return f"the Ray cluster at {self.address} (unavailable)"

    def run(self, fn: Callable[..., Any], kwargs: Mapping[str, Any], *, kind: str,
            on_event: Callable[[Any], None], should_stop: Callable[[], bool]) -> Any:
        """Raises the reason."""
        raise self.error
