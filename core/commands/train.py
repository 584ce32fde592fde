"""Training commands: `train` (a run from a dataset) and `bases` (what it can start from)."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

from core.commands.output import EXIT_CANCELLED, EXIT_OK, percent, print_errors, print_progress
from core.config import SplitConfig, TrainConfig, studio_home
from core.data.store import ingest_saved
from core.flags import add_config_flags, config_from_flags
from core.status import COMPLETED


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
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

    p = sub.add_parser("bases", parents=[common],
                       help="list the pretrained bases, their size and whether weights are here",
                       description="The pretrained bases `train --base` accepts, with input "
                                   "size, parameters, depth, weights file and whether that file "
                                   "is in Keras' cache folder on this machine.")
    p.add_argument("--json", action="store_true", help="print the bases as one JSON array")
    p.set_defaults(func=cmd_bases)


def cmd_train(args: argparse.Namespace) -> int:
    """Ingests, splits and trains; progress on stderr, result on stdout."""
    from core.audit import choices as audit_choices
    from core.audit import findings as dataset_audit
    from core.features import backbones
    from core.jobs.executors import make_executor
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
        return print_errors(dataset.report.errors)
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
        }, kind="train", on_event=print_progress, should_stop=stop.is_set)
    finally:
        signal.signal(signal.SIGINT, previous)
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        _print_result(result)
    return EXIT_OK if result.status == COMPLETED else EXIT_CANCELLED


def _print_result(result) -> None:
    from core.runs import interval

    measured = result.test_interval()
    tested = interval.Accuracy(**measured) if measured else None
    print(f"Run {result.run_id}: {result.status}, test accuracy "
          f"{tested.text() if tested else percent(result.test_accuracy)}, "
          f"{result.epochs_run} epochs, "
          f"{result.seconds['total']:.1f} s\nSaved in {result.run_dir}")
    if tested is not None and tested.warning():
        print(f"warning: {tested.warning()}", file=sys.stderr)
    if result.head_search:
        search = result.head_search
        print(f"Head chosen by cross-validation among {search['tried']} settings: "
              f"{percent(search['cv_accuracy'])} cross-validated accuracy")


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
