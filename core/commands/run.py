"""Commands on saved runs: `runs` (the list), `evaluate`, `predict` and `explain`."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from core.commands.output import EXIT_OK, EXIT_UNUSABLE, percent, print_errors, shown
from core.config import studio_home
from core.data import datasets
from core.data.store import DatasetStore
from core.runs.store import RunStore


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("evaluate", parents=[common],
                       help="measure a run on a folder of labelled photos")
    p.add_argument("run", help="run id or run folder")
    p.add_argument("--data", required=True, help="folder (or zip) with one folder per class")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", parents=[common], help="top predictions of a run for photos")
    p.add_argument("run", help="run id or run folder")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("runs", parents=[common], help="list the saved runs")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_runs)

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


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Evaluates a saved run on every usable image of a labelled dataset."""
    from core.results.prediction import Predictor, evaluate_dataset

    home = studio_home(args.home)
    run_dir = RunStore(home).resolve(args.run)
    dataset = datasets.ingest(DatasetStore(home).resolve_source(args.data), home=home)
    if dataset.report.errors:
        return print_errors(dataset.report.errors)
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
    return EXIT_OK


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
            print(_prediction_line(row))
    return EXIT_OK if all("error" not in r for r in rows) else EXIT_UNUSABLE


def _prediction_line(row: dict[str, Any]) -> str:
    if "error" in row:
        return f"{shown(row['file'])}: {shown(row['error'])}"
    best = ", ".join(f"{shown(t['label'])} {t['probability']:.1%}" for t in row["top_k"])
    note = "  (unsure)" if row["unsure"] else ""
    if row["unknown"]:
        closest = shown(row["top_k"][0]["label"])
        best, note = f"none of these (closest: {closest}; {best})", ""
    return f"{shown(row['file'])}: {best}{note}"


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
                  f"test accuracy {percent(r['test_accuracy'])}")
    return EXIT_OK


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
    return EXIT_OK
