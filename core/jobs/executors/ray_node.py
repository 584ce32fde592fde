"""Which node of the Ray cluster this code runs on: the placement facts a job records."""

from __future__ import annotations

import socket
from typing import Any

import ray

from core.runs import placement


def node_facts() -> dict[str, Any]:
    """Placement facts of the node this task runs on."""
    context = ray.get_runtime_context()
    return {
        "backend": placement.RAY,
        "node_id": context.get_node_id(),
        "node_address": ray.util.get_node_ip_address(),
        "hostname": socket.gethostname(),
    }
