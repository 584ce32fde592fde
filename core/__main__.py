"""Command line: python -m core inspect|train|evaluate|predict|runs|datasets|export|explain|bases|audit."""

from __future__ import annotations

import argparse
import errno
import json
import logging
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from core import text
from core.config import SplitConfig, TrainConfig, studio_home
from core.data import datasets
from core.data.store import DatasetStore, ingest_saved
from core.errors import AppError
from core.flags import add_config_flags, config_from_flags
from core.runs.store import RunStore
from core.status import COMPLETED

log = logging.getLogger("core")
shown = text.printable  # every name printed: control characters as visible escapes

EXIT_OK = 0
EXIT_UNUSABLE = 2  # the dataset has errors, or the input/options cannot be used
EXIT_FORMAT_FAILED = 3  # export: a requested format failed to convert or load
EXIT_OUTPUT = 4  # the output could not be written (a full disk, /dev/full)
EXIT_CANCELLED = 130  # training was interrupted (Ctrl-C): the run is kept, marked cancelled

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
        _print_summary(report)
    return EXIT_OK if dataset.report.usable else EXIT_UNUSABLE


def _add_inspect(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
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


# ---------------------------------------------------------------------------------------
# train / evaluate / predict / runs

def _add_train(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "train", parents=[common], help="train a classifier on a dataset (zip or class folders)",
        description="Train a new head on a pretrained base. Every option of the Train page is a "
                    "flag here, with the same help and range.",
    )
    p.add_argument("data", help="zip file or folder with one sub-folder per class, or a saved "
                                  "dataset's name (python -m core datasets)")
    add_config_flags(p, TrainConfig)
    default_split = SplitConfig()
    p.add_argument("--split", type=float, nargs=3, metavar=("TRAIN", "VAL", "TEST"),
                   default=(default_split.train_fraction, default_split.val_fraction,
                            default_split.test_fraction),
                   help="shares of each class for training, validation and test "
                        "[default: %(default)s]")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument("--ray", metavar="ADDRESS", default=None,
                   help="run the training as a task on the Ray cluster at ADDRESS (HOST:PORT "
                        "of its head) [default: $TL_STUDIO_RAY_ADDRESS, else this machine]")
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    """Ingests, splits and trains; progress on stderr, result on stdout."""
    from core.audit import choices as audit_choices
    from core.audit import findings as dataset_audit
    from core.features import backbones
    from core.jobs.executors import make_executor
    from core.runs import interval
    from core.training import pipeline as training

    config = config_from_flags(TrainConfig, args)
    split_config = SplitConfig(*args.split, seed=args.seed)
    home = studio_home(args.home)
    # An unknown base is refused before the dataset is read; training itself checks the
    # weights before it creates the run folder.
    backbones.get_spec(config.backbone, hub_handle=config.hub_handle,
                       hub_input_size=config.hub_input_size)
    executor = make_executor(home, address=args.ray)
    executor.check()  # an unreachable cluster is said before any work
    dataset, saved = ingest_saved(args.data, home=home)
    if dataset.report.errors:
        for error in dataset.report.errors:
            print(f"error: {error}", file=sys.stderr)
        return EXIT_UNUSABLE
    result_of_audit = dataset_audit.load_audit(dataset, home)
    choices = audit_choices.load_choices(dataset, home)
    split_df = audit_choices.audited_split(dataset, split_config, result_of_audit, choices)
    audit_info = audit_choices.audit_record(result_of_audit, choices)
    if audit_info["ran"]:
        print(f"Audit {audit_info['audit_id']}: its {audit_info['near_duplicate_groups']} "
              f"near-duplicate groups stay in one split; {audit_info['excluded']} photos "
              f"excluded and {audit_info['moved']} moved by the choices made on it.",
              file=sys.stderr)
    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        result = executor.run(training.train, {
            "split_df": split_df, "config": config, "home": home,
            "dataset_info": {"name": saved.name if saved else Path(args.data).name,
                             "source": str(args.data), "root": str(dataset.root),
                             "classes": dataset.report.classes, "audit": audit_info},
        }, kind="train", on_event=_print_progress, should_stop=stop.is_set)
    finally:
        signal.signal(signal.SIGINT, previous)
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        measured = result.test_interval()
        tested = (interval.Accuracy(**measured) if measured else None)
        print(f"Run {result.run_id}: {result.status}, test accuracy "
              f"{tested.text() if tested else _pct(result.test_accuracy)}, "
              f"{result.epochs_run} epochs, "
              f"{result.seconds['total']:.1f} s\nSaved in {result.run_dir}")
        if tested is not None and tested.warning():
            print(f"warning: {tested.warning()}", file=sys.stderr)
        if result.head_search:
            search = result.head_search
            print(f"Head chosen by cross-validation among {search['tried']} settings: "
                  f"{_pct(search['cv_accuracy'])} cross-validated accuracy")
    return 0 if result.status == COMPLETED else EXIT_CANCELLED


def _print_progress(event: Any) -> None:
    eta = f" (about {event.eta_seconds:.0f} s left)" if event.eta_seconds else ""
    print(f"[{event.phase}] {event.message}{eta}", file=sys.stderr, flush=True)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _add_evaluate(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("evaluate", parents=[common], help="measure a run on a folder of labelled photos")
    p.add_argument("run", help="run id or run folder")
    p.add_argument("--data", required=True, help="folder (or zip) with one folder per class")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Evaluates a saved run on every usable image of a labelled dataset."""
    from core.results.prediction import Predictor, evaluate_dataset

    home = studio_home(args.home)
    run_dir = RunStore(home).resolve(args.run)
    dataset = datasets.ingest(DatasetStore(home).resolve_source(args.data), home=home)
    if dataset.report.errors:
        for error in dataset.report.errors:
            print(f"error: {shown(error)}", file=sys.stderr)
        return EXIT_UNUSABLE
    result = evaluate_dataset(Predictor.from_run(run_dir), dataset.index)
    if args.json:
        per_class = {
            row["class"]: {k: row[k] for k in ("precision", "recall", "f1", "support")}
            for row in result.per_class.to_dict("records")
        }
        print(json.dumps({"run_dir": str(run_dir), "images": len(result.predictions),
                          "accuracy": result.accuracy, "per_class": per_class,
                          "top_k_accuracy": {str(k): v for k, v in
                                             result.top_k_accuracy.items()}}))
    else:
        print(f"Accuracy {result.accuracy:.1%} on {len(result.predictions)} images")
        print(result.per_class.assign(**{"class": result.per_class["class"].map(shown)})
              .to_string(index=False))
    return 0


def _add_predict(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("predict", parents=[common], help="top predictions of a run for photos")
    p.add_argument("run", help="run id or run folder")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_predict)


def cmd_predict(args: argparse.Namespace) -> int:
    """Predicts each image; a bad image gets an error entry, the others still run."""
    from core.results.prediction import Predictor

    run_dir = RunStore(studio_home(args.home)).resolve(args.run)
    predictor = Predictor.from_run(run_dir)
    predictions = predictor.predict(args.images, top_k=args.top_k)
    if predictor.familiarity is None:
        print(f"note: no 'none of these' here: {predictor.familiarity_problem}", file=sys.stderr)
    rows = []
    for path, pred in zip(args.images, predictions):
        # to_dict's fields ("unknown": "none of these", null when the run has no familiarity)
        row: dict[str, Any] = {**pred.to_dict(), "file": path}
        if not pred.error:
            del row["error"]
        rows.append(row)
    if args.json:
        print(json.dumps(rows))
    else:
        for row in rows:
            if "error" in row:
                print(f"{shown(row['file'])}: {shown(row['error'])}")
                continue
            best = ", ".join(f"{shown(t['label'])} {t['probability']:.1%}" for t in row["top_k"])
            note = "  (unsure)" if row["unsure"] else ""
            if row["unknown"]:
                closest = shown(row["top_k"][0]["label"])
                best, note = f"none of these (closest: {closest}; {best})", ""
            print(f"{shown(row['file'])}: {best}{note}")
    return 0 if all("error" not in r for r in rows) else EXIT_UNUSABLE


def _add_runs(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("runs", parents=[common], help="list the saved runs")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_runs)


def cmd_runs(args: argparse.Namespace) -> int:
    """Lists runs newest first."""
    summaries = RunStore(studio_home(args.home)).list()
    rows = [s.to_dict() for s in summaries]
    if args.json:
        print(json.dumps(rows))
    elif not rows:
        print("No runs yet. Train one with: python -m core train DATA")
    else:
        for r in rows:
            print(f"{shown(r['run_id'])}  {shown(r['status']):<11} {shown(r['backbone']):<18} "
                  f"test accuracy {_pct(r['test_accuracy'])}")
    return 0


def _add_datasets(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("datasets", parents=[common], help="list the saved datasets",
                       description="List the saved datasets (built on the Dataset page, or "
                                   "zips and folders read before), newest first.")
    p.add_argument("--json", action="store_true",
                   help='print [{"name", "classes", "created", "source", "runs"}]')
    p.set_defaults(func=cmd_datasets)


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
    return 0


def _add_export(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
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
    result = export.export_run(run, args.out, formats=formats, on_event=_print_progress)
    if args.json:
        print(json.dumps(result.metadata, ensure_ascii=False))
    else:
        print(f"Exported run {run.run_id} to {result.folder}")
        for name, fmt in result.formats.items():
            if fmt.status != "ok":
                print(f"  {name:<15} {fmt.status}: {fmt.error or fmt.note}")
                continue
            verdict = "recommended" if fmt.recommended else fmt.note
            print(f"  {name:<15} {fmt.size_bytes / 1e6:7.2f} MB  accuracy "
                  f"{_pct(fmt.test_accuracy)}  agreement {_pct(fmt.agreement)}  "
                  f"p50 {fmt.latency_ms_p50:.1f} ms  {verdict}")
    return EXIT_OK if not result.failed else EXIT_FORMAT_FAILED


def _add_bases(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("bases", parents=[common],
                       help="list the pretrained bases, their size and whether weights are here",
                       description="The pretrained bases `train --base` accepts, with input "
                                   "size, parameters, depth, weights file and whether that file "
                                   "is in Keras' cache folder on this machine.")
    p.add_argument("--json", action="store_true", help="print the bases as one JSON array")
    p.set_defaults(func=cmd_bases)


def cmd_bases(args: argparse.Namespace) -> int:
    """Lists the registry's bases; never downloads (weights_here: the file is in the cache)."""
    from core.features import backbones
    from core.features import weights as base_weights

    folder = base_weights.keras_models_dir()
    rows = [{
        "name": spec.name, "display_name": spec.display_name, "input_size": spec.input_size,
        "params": spec.params, "depth": spec.depth, "weights_file": spec.weights_file,
        "weights_mb": spec.weights_mb, "relative_speed": spec.relative_speed,
        "weights_here": base_weights.weights_available(spec, allow_download=False),
    } for spec in backbones.BACKBONES.values()]
    if args.json:
        print(json.dumps(rows))
        return EXIT_OK
    width = max(len(r["name"]) for r in rows)
    print(f"{'name':<{width}}  input  params  depth  weights   here")
    for r in rows:
        print(f"{r['name']:<{width}}  {r['input_size']:>5}  {r['params'] / 1e6:>5.1f}M  "
              f"{r['depth']:>5}  {r['weights_mb']:>5.0f} MB  {'yes' if r['weights_here'] else 'no'}")
    print(f"\nWeights are read from {folder} (KERAS_HOME/models); a missing file is downloaded "
          f"on first use when online. Also: --base {backbones.HUB_BACKBONE} --hub-handle H.")
    return EXIT_OK


def _add_explain(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("explain", parents=[common],
                       help="where in a photo a run's model sees a class (Grad-CAM heatmap PNG)")
    p.add_argument("run", help="run id or run folder")
    p.add_argument("photo", help="the photo to explain")
    p.add_argument("--class", dest="target", metavar="NAME", default=None,
                   help="class to explain (default: the model's answer)")
    p.add_argument("--out", required=True, metavar="FILE.png",
                   help="PNG file to write: the heatmap over the upright photo")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_explain)


def cmd_explain(args: argparse.Namespace) -> int:
    """Writes the Grad-CAM heatmap of a photo for a class over the photo, as a PNG."""
    from core.results import explain

    run = RunStore(studio_home(args.home)).load(args.run)
    heatmap = explain.write_explanation(run, args.photo, args.out, args.target)
    facts = {"file": args.photo, "out": str(args.out), "class": heatmap.label,
             "probability": heatmap.probability, "score": heatmap.score,
             "grid": list(heatmap.grid), "empty": heatmap.empty}
    if args.json:
        print(json.dumps(facts))
    else:
        note = " (nothing in the photo speaks for this class)" if heatmap.empty else ""
        print(f"{shown(args.out)}: where the model sees {shown(heatmap.label)} "
              f"({heatmap.probability:.1%}){note}")
    return 0


# ---------------------------------------------------------------------------------------
# audit


def _add_audit(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    from core.config import AuditConfig

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


def cmd_audit(args: argparse.Namespace) -> int:
    """Ingests and audits a dataset; the audit is also saved with the dataset."""
    from core.audit import findings as audit
    from core.config import AuditConfig

    home = studio_home(args.home)
    dataset, _saved = ingest_saved(args.source, home=home)
    if not dataset.report.usable:
        for error in dataset.report.errors:
            print(f"error: {error}", file=sys.stderr)
        return EXIT_UNUSABLE
    weights = None if str(args.weights).lower() == "none" else args.weights
    config = AuditConfig(backbone=args.backbone, weights=weights)
    result = audit.audit(dataset, config=config, home=home,
                         on_event=None if args.json else _print_progress)
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False))
    else:
        print(audit.describe(result))
    return EXIT_OK


_REGISTRARS: tuple[Callable[[argparse._SubParsersAction, argparse.ArgumentParser], None], ...] = (
    _add_inspect,
    _add_train,
    _add_evaluate,
    _add_predict,
    _add_runs,
    _add_datasets,
    _add_export,
    _add_bases,
    _add_explain,
    _add_audit,
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
