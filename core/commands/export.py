"""`export`: a run's model in every deployable format, each reloaded and measured."""

from __future__ import annotations

import argparse
import json

from core.commands.output import EXIT_FORMAT_FAILED, EXIT_OK, percent, print_progress
from core.config import studio_home
from core.runs.store import RunStore


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    from core.export.formats import FORMATS

    p = sub.add_parser(
        "export", parents=[common],
        help="write a run's model in every deployable format, each reloaded and measured",
        description=f"Write DIR/<run id>/: {', '.join(fmt.file for fmt in FORMATS)}, "
                    "labels.txt, metadata.json, "
                    "predict.py, report.html and per_class.csv. Each format is loaded in a "
                    "clean process and scored on the run's test photos. Exit code 0: every "
                    "requested format exported and verified; 2: the run cannot be exported; "
                    "3: a format failed (named in the JSON with its error).",
    )
    p.add_argument("run", help="run id or run folder")
    p.add_argument("--out", default=".", metavar="DIR",
                   help="folder to write DIR/<run id>/ in (default: the current folder)")
    p.add_argument("--formats", default=None, metavar="LIST",
                   help="comma-separated formats (default: all): "
                        f"{','.join(fmt.name for fmt in FORMATS)}")
    p.add_argument("--json", action="store_true", help="print metadata.json's content")
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    """Exports and verifies a run's formats; progress on stderr, the result on stdout."""
    from core.export import exporter as export

    formats = export.parse_formats(args.formats)
    run = RunStore(studio_home(args.home)).load(args.run)
    result = export.export_run(run, args.out, formats=formats, on_event=print_progress)
    if args.json:
        print(json.dumps(result.metadata, ensure_ascii=False))
        return EXIT_OK if not result.failed else EXIT_FORMAT_FAILED
    print(f"Exported run {run.run_id} to {result.folder}")
    for name, fmt in result.formats.items():
        if fmt.status != "ok":
            print(f"  {name:<15} {fmt.status}: {fmt.error or fmt.note}")
            continue
        verdict = "recommended" if fmt.recommended else fmt.note
        print(f"  {name:<15} {fmt.size_bytes / 1e6:7.2f} MB  accuracy "
              f"{percent(fmt.test_accuracy)}  agreement {percent(fmt.agreement)}  "
              f"p50 {fmt.latency_ms_p50:.1f} ms  {verdict}")
    return EXIT_OK if not result.failed else EXIT_FORMAT_FAILED
