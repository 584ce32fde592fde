"""Command line: python -m core inspect|train|evaluate|predict|runs."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from core.errors import AppError

log = logging.getLogger("core")

EXIT_OK = 0
EXIT_UNUSABLE = 2  # the dataset has errors, or the input/options cannot be used

Command = Callable[[argparse.Namespace], int]


def _common_options() -> argparse.ArgumentParser:
    """Options every sub-command accepts after its name as well (python -m core X --home D)."""
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS keeps a value given before the sub-command from being reset to a default.
    common.add_argument("--home", metavar="DIR", default=argparse.SUPPRESS,
                        help="studio home folder (default: $TL_STUDIO_HOME or ~/.tl-studio)")
    common.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                        help="log more to stderr (-vv for debug)")
    return common


# ---------------------------------------------------------------------------------------
# inspect


def _print_summary(report: dict[str, Any]) -> None:
    """Readable multi-line summary of a validation report, on stdout."""
    classes: dict[str, int] = report["classes"]
    print(f"Dataset: {report['root']}")
    print(f"{len(classes)} classes, {report['images']} usable images")
    width = max((len(name) for name in classes), default=0)
    for name, count in classes.items():
        print(f"  {name:<{width}}  {count}")
    if report["rejected"]:
        print(f"\nRejected files ({len(report['rejected'])}):")
        for item in report["rejected"]:
            print(f"  {item['file']}: {item['reason']}")
    if report["duplicates"]:
        print(f"\nIdentical files ({len(report['duplicates'])} groups):")
        for group in report["duplicates"]:
            kind = "label conflict" if group["cross_class"] else "same class"
            kept = ", ".join(group["kept"]) if group["kept"] else "none (all left out)"
            print(f"  [{kind}] {', '.join(group['files'])} -> kept: {kept}")
    if report["unassigned"]:
        print(f"\nImages outside any class folder ({len(report['unassigned'])}):")
        for name in report["unassigned"]:
            print(f"  {name}")
    print(f"\nIgnored system/hidden/other files: {report['ignored']}")
    for title, key in (("Warnings", "warnings"), ("Errors", "errors")):
        if report[key]:
            print(f"\n{title}:")
            for message in report[key]:
                print(f"  - {message}")
    verdict = "usable" if report["usable"] else "NOT usable: fix the errors above"
    print(f"\nThe dataset is {verdict}.")


def cmd_inspect(args: argparse.Namespace) -> int:
    """Ingests and validates a dataset folder or zip; prints the report.

    Returns:
        0 when the dataset is usable, 2 when the report has errors.
    """
    from core import datasets  # lazy: keeps `--help` fast

    dataset = datasets.ingest(args.source, home=args.home)
    report = dataset.report.to_dict()
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
    else:
        _print_summary(report)
    return EXIT_OK if dataset.report.usable else EXIT_UNUSABLE


def _add_inspect(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "inspect", parents=[common], help="check a dataset folder or zip and report problems",
        description="Check a dataset (a folder with one sub-folder per class, or a zip of it) "
                    "and report usable images per class, rejected files, duplicates and "
                    "problems. Exit code 0: usable; 2: not usable.",
    )
    p.add_argument("source", metavar="PATH_OR_ZIP", help="dataset folder or .zip file")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.set_defaults(func=cmd_inspect)


# ---------------------------------------------------------------------------------------
# train / evaluate / predict / runs: added by the training engine (issue 3). Each command is
# a cmd_<name>(args) -> exit code plus an _add_<name>(sub, common) registering its parser;
# append the registrar to _REGISTRARS below.


_REGISTRARS: tuple[Callable[[argparse._SubParsersAction, argparse.ArgumentParser], None], ...] = (
    _add_inspect,
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command registered."""
    common = _common_options()
    parser = argparse.ArgumentParser(
        prog="python -m core",
        description="Transfer Learning Studio from the command line.",
    )
    parser.add_argument("--home", metavar="DIR", default=None,
                        help="studio home folder (default: $TL_STUDIO_HOME or ~/.tl-studio)")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log more to stderr (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in _REGISTRARS:
        register(sub, common)
    return parser


def _setup_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 \
        else logging.DEBUG
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    func: Command = args.func
    try:
        return func(args)
    except AppError as exc:
        # One line, saying what to do; no traceback for a user's mistake.
        message = " ".join(str(exc).split())
        print(f"error: {message}", file=sys.stderr)
        return EXIT_UNUSABLE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
