"""Names are data: text a user typed, made inert for terminals and spreadsheets, and the
command line's output through it.

Class, dataset and file names come from users (a zip, a folder, the builder). A terminal runs
escape sequences and bidi overrides inside them, and a spreadsheet runs a cell starting with
`=` as a formula. These helpers turn such text into something shown as typed. Every write of
the command line goes through `out`/`err` here, and a full or closed output is one line of
error instead of a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import unicodedata
from collections.abc import Iterator
from typing import Any, TextIO

# OWASP CSV injection: a cell starting with one of these is a formula in Excel, LibreOffice
# and Google Sheets (tab and carriage return also start one after some importers trim).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_SHOWN = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\x1b": "\\e"}


def printable(text: Any) -> str:
    """text with control and invisible formatting characters written as visible escapes.

    Newline, tab and escape show as \\n, \\t, \\e; others (bidi overrides such as U+202E,
    zero-width characters, C1 controls) as \\uXXXX. For terminals and logs, which would
    otherwise run them.
    """
    out = []
    for char in str(text):
        if char in _SHOWN:
            out.append(_SHOWN[char])
        elif unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp"):
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return "".join(out)


def csv_cell(value: Any) -> Any:
    """value made inert for a spreadsheet: text starting like a formula gets a leading quote.

    Numbers stay numbers (a negative number is not a formula); only strings are changed, as
    OWASP's CSV-injection guidance says.
    """
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


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
