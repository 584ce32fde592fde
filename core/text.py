"""Names are data: text a user typed, made inert for terminals and spreadsheets.

Class, dataset and file names come from users (a zip, a folder, the builder). A terminal runs
escape sequences and bidi overrides inside them, and a spreadsheet runs a cell starting with
`=` as a formula. These helpers turn such text into something shown as typed.
"""

from __future__ import annotations

import unicodedata
from typing import Any

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
