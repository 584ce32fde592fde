"""What every command shares: exit codes, names made printable, progress lines on stderr."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from core import text

shown = text.printable  # every name printed: control characters as visible escapes

EXIT_OK = 0
EXIT_UNUSABLE = 2  # the dataset has errors, or the input/options cannot be used
EXIT_FORMAT_FAILED = 3  # export: a requested format failed to convert or load
EXIT_OUTPUT = 4  # the output could not be written (a full disk, /dev/full)
EXIT_CANCELLED = 130  # training was interrupted (Ctrl-C): the run is kept, marked cancelled

Command = Callable[[argparse.Namespace], int]
Registrar = Callable[[argparse._SubParsersAction, argparse.ArgumentParser], None]


def print_progress(event: Any) -> None:
    """One ProgressEvent as a line on stderr, with its time estimate when it has one."""
    eta = f" (about {event.eta_seconds:.0f} s left)" if event.eta_seconds else ""
    print(f"[{event.phase}] {event.message}{eta}", file=sys.stderr, flush=True)


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def print_errors(errors: list[str]) -> int:
    """A dataset's errors on stderr; the exit code that says it cannot be used."""
    for error in errors:
        print(f"error: {shown(error)}", file=sys.stderr)
    return EXIT_UNUSABLE
