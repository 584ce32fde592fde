"""Names of saved datasets and their classes: valid folder names on Linux, macOS and Windows."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

from core.errors import DatasetError

MAX_NAME_CHARS = 100
MAX_NAME_BYTES = 255  # NAME_MAX of Linux file systems
# Names Windows keeps for devices, with or without an extension (CON, con.txt, COM1...).
_RESERVED = frozenset(
    {"con", "prn", "aux", "nul"}
    | {f"com{i}" for i in range(1, 10)} | {f"lpt{i}" for i in range(1, 10)}
    | {"com¹", "com²", "com³", "lpt¹", "lpt²", "lpt³"}
)
# Characters Windows refuses in file names (besides control characters).
_FORBIDDEN = frozenset('<>:"/\\|?*')


CONTROL_REASON = ("holds control or invisible characters (a newline, tab, escape sequence or "
                  "a bidi override such as U+202E)")


def has_control(name: str) -> bool:
    """Whether a name holds control or invisible formatting characters (newline, tab, ESC,
    bidi overrides, zero-width characters): they break labels.txt and CSV files and change
    what a terminal shows."""
    return any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in name)


def case_collisions(names: Iterable[str]) -> list[tuple[str, str]]:
    """Pairs of names that differ only in case (Cat, cat): one folder on macOS and Windows."""
    first: dict[str, str] = {}
    pairs = []
    for name in names:
        key = unicodedata.normalize("NFC", name).casefold()
        if key in first:
            pairs.append((first[key], name))
        else:
            first[key] = name
    return pairs


def clean_name(text: str, what: str = "class") -> str:
    """The name as stored (NFC, outer spaces trimmed), or a DatasetError saying what to change.

    A name must work as a folder name on Linux, macOS and Windows: not empty, at most
    MAX_NAME_CHARS characters, no slashes or other characters Windows refuses, no control
    characters, not "." or "..", not a reserved device name (CON, NUL, COM1...), not ending
    in a dot or a space, and not starting with a dot (hidden files are skipped).

    Args:
        text: The name typed.
        what: "class" or "dataset", for the message.

    Raises:
        DatasetError: The name cannot be used; the message says why and what to do.
    """
    name = unicodedata.normalize("NFC", str(text or "")).strip()
    fix = f"Choose another {what} name"
    if not name:
        raise DatasetError(f"The {what} name is empty. Type a name, such as 'cats'.")
    if len(name) > MAX_NAME_CHARS:
        raise DatasetError(f"The {what} name is {len(name)} characters long, over the limit "
                           f"of {MAX_NAME_CHARS}. {fix}, shorter.")
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:  # a folder name on Linux: 255 bytes
        raise DatasetError(f"The {what} name takes {len(name.encode('utf-8'))} bytes, more "
                           f"than a folder name can hold ({MAX_NAME_BYTES}; letters outside "
                           f"English take 2-4 bytes each). {fix}, shorter.")
    bad = sorted({c for c in name if c in _FORBIDDEN})
    if bad:
        raise DatasetError(f"The {what} name '{name}' contains {' '.join(bad)}, which folder "
                           f"names cannot hold on every system. {fix}, without "
                           "< > : \" / \\ | ? *.")
    if has_control(name):
        raise DatasetError(f"The {what} name contains control or invisible characters. "
                           f"{fix}, using letters, digits, spaces, - or _.")
    if name in (".", "..") or name.startswith("."):
        raise DatasetError(f"The {what} name '{name}' starts with a dot, which hides a folder "
                           f"or means a parent folder. {fix}, starting with a letter or digit.")
    if name.endswith((".", " ")):
        raise DatasetError(f"The {what} name '{name}' ends with a dot, which Windows drops "
                           f"from folder names. {fix}, without the final dot.")
    if name.split(".")[0].strip().lower() in _RESERVED:
        raise DatasetError(f"'{name}' is a name Windows keeps for a device (CON, PRN, AUX, NUL, "
                           f"COM1-9, LPT1-9). {fix}, such as '{name}_photos'.")
    return name


def same_name(a: str, b: str) -> bool:
    """Whether two names would name one folder on a case-insensitive system (macOS, Windows)."""
    return (unicodedata.normalize("NFC", a).casefold()
            == unicodedata.normalize("NFC", b).casefold())


def refuse_duplicate(name: str, existing: Iterable[str], what: str = "class") -> None:
    """Raises DatasetError when name equals one of existing, ignoring case."""
    for other in existing:
        if same_name(name, other):
            same = "already exists" if name == other else f"differs from '{other}' only in case"
            raise DatasetError(f"A {what} named '{name}' {same}; folder names that differ only "
                               f"in case are one folder on macOS and Windows. Choose another "
                               f"{what} name.")


def unique_name(base: str, existing: Iterable[str]) -> str:
    """base, or base (2), base (3)... whichever no existing name equals, ignoring case."""
    taken = {unicodedata.normalize("NFC", n).casefold() for n in existing}
    base = base[:MAX_NAME_CHARS - 6].rstrip(". ") or "dataset"
    name, n = base, 1
    while name.casefold() in taken:
        n += 1
        name = f"{base} ({n})"
    return name
