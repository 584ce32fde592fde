"""Checks that a cluster node sees the server's studio home: a check file with a random token.

The server writes <home>/jobs/cluster-checks/<token> before it hands a job to the cluster;
the task, on its node, reads it back before the job touches anything. A node where the path
is missing cannot see the home; one where the path exists without that file sees another
folder (a local disk instead of the shared mount). Either way the job fails at once, naming
the node and the path, before anything is written.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from core.errors import AppError
from core.files import write_text_atomic

CHECKS_DIRNAME = "cluster-checks"


class HomeNotShared(AppError):
    """A cluster node does not see the server's studio home."""


def check_file(home: str | Path, token: str) -> Path:
    """Where the check file of one job lives."""
    return Path(home) / "jobs" / CHECKS_DIRNAME / token


def write_check(home: str | Path) -> str:
    """Writes a fresh check file in the home; returns its token."""
    token = secrets.token_hex(16)
    path = check_file(home, token)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, token)
    return token


def remove_check(home: str | Path, token: str) -> None:
    """Deletes a job's check file (missing is fine)."""
    check_file(home, token).unlink(missing_ok=True)


def _node_name(node: Mapping[str, Any]) -> str:
    address = node.get("node_address") or "?"
    node_id = str(node.get("node_id") or "?")
    return f"node {node_id[:12]} at {address}"


def verify(home: str | Path, token: str, node: Mapping[str, Any]) -> None:
    """Raises HomeNotShared unless this machine sees the server's home at the same path.

    Args:
        home: The server's studio home path.
        token: The token write_check() returned on the server.
        node: Placement facts of this node (node_id, node_address) for the message.
    """
    home = Path(home)
    path = check_file(home, token)
    try:
        seen = path.read_text(encoding="utf-8").strip()
    except OSError:
        seen = None
    if seen == token:
        return
    where = _node_name(node)
    if not home.is_dir():
        raise HomeNotShared(
            f"The cluster's {where} cannot see the studio home {home}: the folder does not "
            "exist there. Mount the server's home at the same path on every node (README: "
            "More than one machine), then start the job again.")
    raise HomeNotShared(
        f"The cluster's {where} sees another folder at the studio home's path {home}: the "
        f"server's check file {path.name} is not there. Mount the server's shared home at "
        "that path on every node, not a local folder, then start the job again.")
