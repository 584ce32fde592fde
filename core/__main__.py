"""Command line: python -m core inspect|train|evaluate|predict|runs|datasets|export|explain|bases|audit.

The sub-commands live in core/commands/ by subject; this file builds the parser and turns
errors into one line and an exit code.
"""

from __future__ import annotations

import argparse
import errno
import logging
import sys
from collections.abc import Sequence

from core import text
from core.commands import dataset, export, run, train
from core.commands.output import EXIT_OK, EXIT_OUTPUT, EXIT_UNUSABLE, Command, Registrar, shown
from core.errors import AppError

log = logging.getLogger("core")

# The order of `python -m core --help`: a dataset is checked, trained on, used, exported.
_REGISTRARS: tuple[Registrar, ...] = (dataset.register, train.register, run.register,
                                      export.register)


def _common_options() -> argparse.ArgumentParser:
    """Options every sub-command accepts after its name as well (python -m core X --home D)."""
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS keeps a value given before the sub-command from being reset to a default.
    common.add_argument("--home", metavar="DIR", default=argparse.SUPPRESS,
                        help="studio home folder (default: $TL_STUDIO_HOME or ~/.tl-studio)")
    common.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                        help="log more to stderr (-vv for debug)")
    return common


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
    func: Command = args.func
    try:
        with text.safe_streams():
            _setup_logging(args.verbose)  # log lines quote names too
            code = func(args)
            sys.stdout.flush()  # here, so that a full output is this error, not a traceback
        return code
    except AppError as exc:
        # One line, saying what to do; no traceback for a user's mistake.
        message = " ".join(shown(exc).split())
        print(f"error: {message}", file=sys.stderr)
        return EXIT_UNUSABLE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Output piped into `head` and the like: stop quietly, as Unix tools do.
        text.silence_stdout()
        return EXIT_OK
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EIO, errno.EBADF, errno.EDQUOT):
            raise
        # `core runs > /dev/full` and a full disk under a redirected output: one line.
        text.silence_stdout()
        print(text.output_error(exc), file=sys.stderr)
        return EXIT_OUTPUT


if __name__ == "__main__":
    sys.exit(main())
