"""Command-line flags generated from an option dataclass's field metadata, and read back."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import TypeVar

from core.config import field_help, unwrap_optional

T = TypeVar("T")

SWITCH_CHOICES = {"auto", "on", "off"}  # a text option of these is an on/off switch
NONE_WORD = "none"  # what an optional text option (--weights none) takes to mean "no value"


def flag_name(f: dataclasses.Field) -> str:
    """The flag of a field: metadata "flag" when given, else --field-name."""
    return "--" + (f.metadata.get("flag") or f.name).replace("_", "-")


def flag_names(f: dataclasses.Field) -> list[str]:
    """The flag and its older spellings (metadata "flag_aliases"), which still work."""
    return [flag_name(f), *("--" + a.replace("_", "-") for a in f.metadata.get("flag_aliases", ()))]


def flag_help(f: dataclasses.Field) -> str:
    """The option's help and bounds (as the Train page shows them) and its default."""
    default = f.default
    if isinstance(default, bool):
        shown = "on" if default else "off"
    elif isinstance(default, tuple):
        shown = " ".join(map(str, default)) or NONE_WORD
    elif default is None:
        shown = f.metadata.get("unset") or NONE_WORD
    else:
        shown = f"{default:g}" if isinstance(default, float) else str(default)
    return f"{field_help(f)} [default: {shown}]".replace("%", "%%")  # argparse formats help


def _optional_text(text: str) -> str | None:
    return None if text.strip().lower() == NONE_WORD else text


def add_config_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    """Adds one flag per field of an option dataclass, typed, with help and range from metadata.

    Rules: numbers take one value; a bool is --x / --no-x; a text with choices takes one of
    them, except a switch (choices among auto, on, off), which is --x for on and --no-x for
    off; a tuple of ints takes several values; an optional text takes "none" for no value.

    Args:
        parser: The (sub-command's) parser.
        cls: A dataclass of core.config.
    """
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint, optional = unwrap_optional(hints[f.name])
        flag, choices = flag_name(f), f.metadata.get("choices")
        names = flag_names(f)
        common = {"dest": f.name, "default": f.default, "help": flag_help(f)}
        if hint is bool:
            parser.add_argument(*names, action=argparse.BooleanOptionalAction, **common)
        elif choices and set(choices) <= SWITCH_CHOICES:
            # A switch with an automatic default: --x turns it on, --no-x off, neither: default.
            parser.add_argument(*names, action="store_const", const="on", **common)
            parser.add_argument(f"--no-{flag[2:]}", dest=f.name, action="store_const",
                                const="off", default=f.default, help="turn it off")
        elif choices:
            parser.add_argument(*names, choices=choices, **common)
        elif hint in (int, float):
            parser.add_argument(*names, type=hint,
                                metavar=flag[2:].upper().replace("-", "_"), **common)
        elif typing.get_origin(hint) is tuple:
            parser.add_argument(*names, type=int, nargs="*", metavar="N", **common)
        elif hint is str:
            parser.add_argument(*names, type=_optional_text if optional else str,
                                metavar=flag[2:].upper().replace("-", "_"), **common)
        else:
            raise TypeError(f"no command-line flag for {cls.__name__}.{f.name} of type {hint}")


def config_from_flags(cls: type[T], args: argparse.Namespace) -> T:
    """The option dataclass from parsed flags (its __post_init__ validates them)."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
              if hasattr(args, f.name)}
    for name, value in values.items():
        if isinstance(value, list):
            values[name] = tuple(value)
    return cls(**values)
