"""The command line's output: names never reach a terminal raw, and a full or closed output
is one line of error instead of a traceback.

Class, dataset and file names come from users; an escape sequence or a bidi override inside
one would recolour, move or reorder what a terminal shows. Every write of the command line
goes through SafeText, which writes such characters as visible escapes (\\e, \\u202e; inside
JSON strings, \\u202e is the same character). Newlines and tabs the program itself writes are
kept; names carrying them are escaped where they are printed (core.text.printable).
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import unicodedata
from collections.abc import Iterator
from typing import Any, TextIO

_KEPT = frozenset("\n\t")


def clean(text: str) -> str:
    """text with control and invisible formatting characters other than newline and tab
    written as visible escapes."""
    if not any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") and c not in _KEPT
               for c in text):
        return text
    out = []
    for char in text:
        if char in _KEPT or unicodedata.category(char) not in ("Cc", "Cf", "Zl", "Zp"):
            out.append(char)
        elif char == "\x1b":
            out.append("\\e")
        else:
            out.append(f"\\u{ord(char):04x}")
    return "".join(out)


class SafeText:
    """A text stream that writes clean(text) to the stream it wraps."""

    def __init__(self, raw: TextIO) -> None:
        self._raw = raw

    def write(self, text: str) -> int:
        self._raw.write(clean(text))
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


def output_error(exc: OSError) -> str:
    """One line saying why the output could not be written."""
    if exc.errno == errno.ENOSPC:
        return "error: cannot write the output: the device or disk is full (No space left)."
    return f"error: cannot write the output: {exc.strerror or exc}."


@contextlib.contextmanager
def safe_streams() -> Iterator[None]:
    """sys.stdout and sys.stderr wrapped in SafeText for the block."""
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = SafeText(out), SafeText(err)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = out, err


def silence_stdout() -> None:
    """Points standard output at /dev/null, so that the interpreter's last flush of what could
    not be written does not print a second error at exit."""
    with contextlib.suppress(OSError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
