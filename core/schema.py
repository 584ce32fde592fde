"""Validating schemas for the studio's state files: types and ranges, not only JSON syntax.

Any file under the studio home can be damaged by a crash, a full disk or a person. Each reader
checks what it read against a schema built from the specs below before using it, and turns a
SchemaError into what its concept does with a bad file: a run listed as broken, an index
rebuilt, an audit set aside, a job record dropped, a saved dataset listed as damaged.

A spec is a callable (value, where) that raises SchemaError naming the field and what it must
hold. Example:

    METRICS = record({"test_accuracy": number(0, 1), "params": record({"total": integer(0)})})
    check(data, METRICS, "metrics.json")
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from core.errors import AppError

Spec = Callable[[Any, str], None]
log = logging.getLogger(__name__)


class SchemaError(AppError, ValueError):
    """A state file holds a value of the wrong type or out of range; the message says where."""


def _fail(where: str, wanted: str, value: Any) -> None:
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    raise SchemaError(f"{where} must be {wanted}, not {shown}")


def check(data: Any, spec: Spec, where: str) -> Any:
    """Returns data when it matches spec; raises SchemaError naming the first bad field."""
    spec(data, where)
    return data


def valid(data: Any, spec: Spec, where: str = "value") -> str | None:
    """None when data matches spec, else why not."""
    try:
        spec(data, where)
    except SchemaError as exc:
        return str(exc)
    return None


def anything(value: Any, where: str) -> None:
    """Any JSON value."""


def optional(spec: Spec) -> Spec:
    """spec, or null."""
    def check_optional(value: Any, where: str) -> None:
        if value is not None:
            spec(value, where)
    return check_optional


def number(low: float | None = None, high: float | None = None) -> Spec:
    """A finite number (not a boolean) within [low, high]; null allowed."""
    wanted = "a number" + (f" from {low:g}" if low is not None else "") + (
        f" to {high:g}" if high is not None else "")

    def check_number(value: Any, where: str) -> None:
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value) \
                or (low is not None and value < low) or (high is not None and value > high):
            _fail(where, wanted, value)
    return check_number


def integer(low: int | None = None, high: int | None = None) -> Spec:
    """A whole number (an int, or a float with no fraction) within [low, high]; null allowed."""
    within = number(low, high)

    def check_integer(value: Any, where: str) -> None:
        within(value, where)
        if isinstance(value, float) and not value.is_integer():
            _fail(where, "a whole number", value)
    return check_integer


def text(*choices: str) -> Spec:
    """A string (one of choices when given); null allowed."""
    def check_text(value: Any, where: str) -> None:
        if value is None:
            return
        if not isinstance(value, str):
            _fail(where, "text", value)
        if choices and value not in choices:
            _fail(where, "one of " + ", ".join(choices), value)
    return check_text


def boolean(value: Any, where: str) -> None:
    """true, false or null."""
    if value is not None and not isinstance(value, bool):
        _fail(where, "true or false", value)


def list_of(item: Spec, *, min_items: int = 0) -> Spec:
    """A list whose every item matches item; null allowed."""
    def check_list(value: Any, where: str) -> None:
        if value is None:
            return
        if not isinstance(value, list) or len(value) < min_items:
            _fail(where, "a list" + (f" of {min_items} or more" if min_items else ""), value)
        for n, element in enumerate(value):
            item(element, f"{where}[{n}]")
    return check_list


def mapping(values: Spec) -> Spec:
    """An object whose every value matches values (any keys); null allowed."""
    def check_mapping(value: Any, where: str) -> None:
        if value is None:
            return
        if not isinstance(value, Mapping):
            _fail(where, "an object", value)
        for key, element in value.items():
            values(element, f"{where}.{key}")
    return check_mapping


def record(fields: Mapping[str, Spec], *, required: tuple[str, ...] = ()) -> Spec:
    """An object whose listed fields match their specs (others are kept unchecked); null
    allowed unless this is the whole file (check() refuses a non-object there)."""
    def check_record(value: Any, where: str) -> None:
        if value is None:
            return
        if not isinstance(value, Mapping):
            _fail(where, "an object", value)
        for key in required:
            if value.get(key) is None:
                raise SchemaError(f"{where} lacks {key}")
        for key, spec in fields.items():
            if key in value:
                spec(value[key], f"{where}.{key}")
    return check_record


def document(fields: Mapping[str, Spec], *, required: tuple[str, ...] = ()) -> Spec:
    """A whole file: a JSON object matching record(fields, required=required)."""
    inner = record(fields, required=required)

    def check_document(value: Any, where: str) -> None:
        if not isinstance(value, Mapping):
            _fail(where, "a JSON object", value)
        inner(value, where)
    return check_document


TIME = text()  # ISO 8601 text; readers parse it tolerantly
SHARE = number(0, 1)
COUNT = integer(0)
SECONDS = number(0)


def set_aside(path: str | Path, reason: str) -> Path | None:
    """Renames a damaged state file to <name>.damaged-<UTC time> beside it (kept for a person
    to look at, out of the readers' way) and logs a warning; returns the new path, or None
    when it could not be moved (then it is only ignored)."""
    path = Path(path)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    target = path.with_name(f"{path.name}.damaged-{stamp}")
    try:
        os.replace(path, target)
    except OSError:
        log.warning("Ignoring the damaged %s (%s); it could not be set aside", path, reason)
        return None
    log.warning("Set aside the damaged %s as %s: %s", path, target.name, reason)
    return target
