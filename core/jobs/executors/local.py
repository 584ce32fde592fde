"""The default executor: runs a job in the calling thread of the server process."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from core.runs import placement


class LocalExecutor:
    """Today's behaviour: fn(on_event=..., should_stop=..., **kwargs) in this process."""

    name = placement.LOCAL

    def check(self) -> None:
        """Nothing to check: this machine is always there."""

    def describe(self) -> str:
        """A short phrase for pages and logs."""
        return "this server"

    def run(self, fn: Callable[..., Any], kwargs: Mapping[str, Any], *, kind: str,
            on_event: Callable[[Any], None], should_stop: Callable[[], bool]) -> Any:
        """Calls the job function here and returns what it returns."""
        return fn(on_event=on_event, should_stop=should_stop, **kwargs)
