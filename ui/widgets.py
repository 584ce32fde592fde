"""Widgets built from a config dataclass's field metadata (label, help, min, max, step, choices)."""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import streamlit as st

from core import config
from ui.errors import show_user_errors
from ui.text import md

T = TypeVar("T")

# Sliders for bounded integers with at most this many values; number boxes beyond.
SLIDER_MAX_INT_VALUES = 101


@dataclass(frozen=True)
class InvalidInput:
    """A widget value that could not be read, with the sentence to show."""

    message: str


def field_label(f: dataclasses.Field) -> str:
    """The label of a field: its metadata label, else its name in words."""
    return f.metadata.get("label") or f.name.replace("_", " ").capitalize()


def _float_step(meta: dict[str, Any], default: Any) -> float:
    if meta.get("step"):
        return float(meta["step"])
    if isinstance(default, (int, float)) and default > 0:
        return 10.0 ** math.floor(math.log10(default))
    if meta.get("min", 0) > 0:
        return float(meta["min"])
    return 10.0 ** math.floor(math.log10(meta.get("max", 1.0) or 1.0)) / 100


def parse_int_tuple(text: str, label: str) -> tuple[int, ...] | InvalidInput:
    """Reads "1024, 512" as (1024, 512); "" as (); anything else as InvalidInput."""
    parts = [p.strip() for p in text.replace(";", ",").split(",") if p.strip()]
    try:
        return tuple(int(p) for p in parts)
    except ValueError:
        return InvalidInput(f"{label}: write whole numbers separated by commas, such as "
                            f"\"512, 256\"; got {text!r}.")


def field_widget(f: dataclasses.Field, hint: Any, value: Any, key: str) -> Any:
    """Draws one widget for one dataclass field and returns the value it holds.

    Args:
        f: The dataclass field; its metadata gives label, help, min, max, step, choices.
        hint: The field's resolved type.
        value: The value shown first (the default or the current configuration's).
        key: Widget key; the value persists for the whole session under it.
    """
    meta = f.metadata
    label, help_text = field_label(f), config.field_help(f) or None
    common: dict[str, Any] = {"key": key, "help": help_text, "persist_state": "session"}
    inner, optional = config.unwrap_optional(hint)

    if "choices" in meta:
        options = list(meta["choices"])
        index = options.index(value) if value in options else 0
        texts = meta.get("choice_labels") or {}
        return st.selectbox(label, options, index=index,
                            format_func=lambda option: texts.get(option, str(option)), **common)
    if inner is bool:
        return st.checkbox(label, value=bool(value), **common)
    if inner is int:
        low, high = meta.get("min"), meta.get("max")
        step = int(meta.get("step") or 1)
        if low is not None and high is not None and (high - low) / step < SLIDER_MAX_INT_VALUES:
            return st.slider(label, int(low), int(high), int(value), step, **common)
        return st.number_input(label, min_value=low, max_value=high, value=int(value),
                               step=step, **common)
    if inner is float:
        low, high = meta.get("min"), meta.get("max")
        low = float(low) if low is not None else None
        high = float(high) if high is not None else None
        if low is not None and high is not None and meta.get("step"):
            return st.slider(label, low, high, float(value), float(meta["step"]), **common)
        if optional:  # empty means "unset": the metadata's `unset` says what that means
            return st.number_input(label, min_value=low, max_value=high,
                                   value=None if value is None else float(value),
                                   step=_float_step(meta, (high or 1.0) / 1000 if value is None else value), format="%g",
                                   placeholder=meta.get("unset"), **common)
        return st.number_input(label, min_value=low, max_value=high, value=float(value),
                               step=_float_step(meta, value), format="%g", **common)
    if typing.get_origin(inner) is tuple:
        text = st.text_input(label, value=", ".join(str(v) for v in (value or ())),
                             placeholder="comma-separated whole numbers, e.g. 512, 256",
                             **common)
        return parse_int_tuple(text, label)
    text = st.text_input(label, value="" if value is None else str(value), **common)
    text = text.strip()
    return None if (optional and not text) else text


def config_inputs(
    cls: type[T],
    *,
    key_prefix: str,
    initial: T | None = None,
    fields: Sequence[str] | None = None,
    columns: int = 1,
) -> dict[str, Any]:
    """Draws one widget per field of a config dataclass and returns {field name: value}.

    Args:
        cls: A dataclass whose fields carry metadata made with core.config.option().
        key_prefix: Prefix of the widget keys ("<prefix>.<field>").
        initial: Values shown first; the dataclass defaults when None.
        fields: Only these fields, in this order; all fields when None.
        columns: Widgets are laid out in this many columns.
    """
    hints = typing.get_type_hints(cls)
    by_name = {f.name: f for f in dataclasses.fields(cls)}
    names = list(fields) if fields is not None else list(by_name)
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ValueError(f"{cls.__name__} has no fields {unknown}")
    cols = st.columns(columns) if columns > 1 else None
    values: dict[str, Any] = {}
    for i, name in enumerate(names):
        f = by_name[name]
        start = getattr(initial, name) if initial is not None else f.default
        if start is dataclasses.MISSING:
            raise ValueError(f"{cls.__name__}.{name} has no default; pass initial=")
        key = f"{key_prefix}.{name}"
        if cols is not None:
            with cols[i % columns]:
                values[name] = field_widget(f, hints[name], start, key)
        else:
            values[name] = field_widget(f, hints[name], start, key)
    return values


def build_config(cls: type[T], values: dict[str, Any], *, base: T | None = None) -> T | None:
    """Makes the dataclass from widget values; shows what is wrong with st.error, else None.

    Args:
        cls: The config dataclass.
        values: What config_inputs() returned (may hold InvalidInput entries).
        base: Fields not in values are taken from this instance; else the defaults.
    """
    invalid = [v.message for v in values.values() if isinstance(v, InvalidInput)]
    if invalid:
        for message in invalid:
            st.error(md(message), icon=":material/error:")
        return None
    with show_user_errors() as outcome:
        if base is not None:
            return dataclasses.replace(base, **values)
        return cls(**values)
    assert outcome.failed
    return None


def config_form(
    cls: type[T], *, key_prefix: str, initial: T | None = None, **layout: Any
) -> T | None:
    """config_inputs() then build_config(): the dataclass, or None after showing the error."""
    values = config_inputs(cls, key_prefix=key_prefix, initial=initial, **layout)
    return build_config(cls, values, base=initial)

