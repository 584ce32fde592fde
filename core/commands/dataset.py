"""Dataset commands: `inspect` (check photos), `datasets` (the saved ones), `audit`."""

from __future__ import annotations

import argparse
import json
from typing import Any

from core.commands.output import EXIT_OK, EXIT_UNUSABLE, print_errors, print_progress, shown
from core.config import AuditConfig, studio_home
from core.data.store import DatasetStore, ingest_saved


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "inspect", parents=[common], help="check a dataset folder or zip and report problems",
        description="Check a dataset (a folder with one sub-folder per class, or a zip of it) "
                    "and report usable images per class, rejected files, duplicates and "
                    "problems. Exit code 0: usable; 2: not usable.",
    )
    p.add_argument("source", metavar="PATH_OR_NAME",
                   help="dataset folder, .zip file, or a saved dataset's name")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("datasets", parents=[common], help="list the saved datasets",
                       description="List the saved datasets (built on the Dataset page, or "
                                   "zips and folders read before), newest first.")
    p.add_argument("--json", action="store_true",
                   help='print [{"name", "classes", "created", "source", "runs"}]')
    p.set_defaults(func=cmd_datasets)

    p = sub.add_parser(
        "audit", parents=[common], help="find likely label errors, near-duplicates, outliers",
        description="Audit a dataset from its photos' features: likely wrong labels (with a "
                    "suggested class), near-duplicate groups (label conflicts, leaks between "
                    "splits) and outliers, most suspicious first. Exit code 0: the audit ran; "
                    "2: the dataset is not usable.",
    )
    p.add_argument("source", metavar="PATH_OR_NAME",
                   help="dataset folder, .zip file, or a saved dataset's name")
    p.add_argument("--base", "--backbone", dest="backbone", default=AuditConfig.backbone,
                   help="pretrained base whose features are compared")
    p.add_argument("--weights", default=AuditConfig.weights,
                   help="'imagenet' (Keras cache), a weights file, or 'none' for random")
    p.add_argument("--json", action="store_true", help="print the audit as one JSON object")
    p.set_defaults(func=cmd_audit)


def cmd_inspect(args: argparse.Namespace) -> int:
    """Ingests and validates a dataset folder or zip; prints the report.

    Returns:
        0 when the dataset is usable, 2 when the report has errors.
    """
    dataset, _saved = ingest_saved(args.source, home=args.home)
    report = dataset.report.to_dict()
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
    else:
        print_summary(report)
    return EXIT_OK if dataset.report.usable else EXIT_UNUSABLE


def print_summary(report: dict[str, Any]) -> None:
    """Readable multi-line summary of a validation report, on stdout."""
    classes: dict[str, int] = report["classes"]
    print(f"Dataset: {shown(report['root'])}")
    print(f"{len(classes)} classes, {report['images']} usable images")
    names = {shown(name): count for name, count in classes.items()}
    width = max((len(name) for name in names), default=0)
    for name, count in names.items():
        print(f"  {name:<{width}}  {count}")
    if report["rejected"]:
        print(f"\nRejected files ({len(report['rejected'])}):")
        for item in report["rejected"]:
            print(f"  {shown(item['file'])}: {shown(item['reason'])}")
    if report["duplicates"]:
        print(f"\nIdentical files ({len(report['duplicates'])} groups):")
        for group in report["duplicates"]:
            kind = "label conflict" if group["cross_class"] else "same class"
            kept = ", ".join(map(shown, group["kept"])) if group["kept"] else "none (all left out)"
            print(f"  [{kind}] {', '.join(map(shown, group['files']))} -> kept: {kept}")
    if report["unassigned"]:
        print(f"\nImages outside any class folder ({len(report['unassigned'])}):")
        for name in report["unassigned"]:
            print(f"  {shown(name)}")
    print(f"\nIgnored system/hidden/other files: {report['ignored']}")
    for title, key in (("Warnings", "warnings"), ("Errors", "errors")):
        if report[key]:
            print(f"\n{title}:")
            for message in report[key]:
                print(f"  - {shown(message)}")
    verdict = "usable" if report["usable"] else "NOT usable: fix the errors above"
    print(f"\nThe dataset is {verdict}.")


def cmd_datasets(args: argparse.Namespace) -> int:
    """Lists the saved datasets with their classes, photo counts and runs."""
    saved = DatasetStore(studio_home(args.home)).list()
    if args.json:
        print(json.dumps([s.to_dict() for s in saved], ensure_ascii=False))
    elif not saved:
        print("No saved datasets yet. Build one on the Dataset page, or read a zip or folder "
              "with: python -m core inspect PATH")
    else:
        for s in saved:
            if s.damaged:
                print(f"{shown(s.name)}  (damaged: {shown(s.damaged)})")
                continue
            classes = ", ".join(f"{shown(c)} {n}" for c, n in s.classes.items()) or "no classes"
            runs = f", {len(s.runs)} runs" if s.runs else ""
            print(f"{shown(s.name)}  ({classes}; from {shown(s.source)}, {s.created}{runs})")
    return EXIT_OK


def cmd_audit(args: argparse.Namespace) -> int:
    """Ingests and audits a dataset; the audit is also saved with the dataset."""
    from core.audit import findings as audit

    home = studio_home(args.home)
    dataset, _saved = ingest_saved(args.source, home=home)
    if not dataset.report.usable:
        return print_errors(dataset.report.errors)
    weights = None if str(args.weights).lower() == "none" else args.weights
    config = AuditConfig(backbone=args.backbone, weights=weights)
    result = audit.audit(dataset, config=config, home=home,
                         on_event=None if args.json else print_progress)
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False))
    else:
        print(audit.describe(result))
    return EXIT_OK
