"""What each file of a run folder, and each entry of the run index, must hold.

Read by core.runs.folder (a file that does not match breaks the run, with the reason) and
core.runs.index (an entry that does not match makes the index be rebuilt). See core.schema.
"""

from __future__ import annotations

from core.schema import (
    COUNT,
    SECONDS,
    SHARE,
    TIME,
    anything,
    boolean,
    document,
    integer,
    list_of,
    mapping,
    number,
    optional,
    record,
    text,
)

STATUS = document({
    "status": text(), "error": text(), "traceback": text(), "started": TIME,
    "updated": TIME, "finished": TIME, "pid": integer(0), "hostname": text(),
    "pid_started": anything,
})

_PREDICTION = record({
    "path": text(), "true": text(), "predicted": text(), "confidence": SHARE,
    "correct": boolean, "top3": list_of(list_of(anything)),
}, required=("path", "true", "predicted", "confidence"))

EVALUATION = record({
    "labels": list_of(text(), min_items=1),
    "num_samples": COUNT,
    "accuracy": SHARE,
    "top_k_accuracy": mapping(SHARE),
    "per_class": list_of(record({
        "class": text(), "precision": SHARE, "recall": SHARE, "f1": SHARE, "support": COUNT,
    }, required=("class",))),
    "confusion": list_of(list_of(integer(0), min_items=1)),
    "predictions": list_of(_PREDICTION),
    "misclassified": list_of(record({})),
}, required=("labels", "accuracy", "per_class", "confusion", "predictions", "top_k_accuracy"))

HEAD_SEARCH = record({
    "cv_accuracy": SHARE, "cv_spread": number(0), "tried": COUNT, "folds": COUNT,
    "seconds": SECONDS, "refit_epochs": COUNT, "stopped": text(), "skipped": text(),
    "table": list_of(record({"cv_accuracy": SHARE, "cv_spread": number(0), "folds": COUNT,
                             "chosen": boolean})),
})

METRICS = document({
    "test": EVALUATION,
    "test_accuracy": SHARE,
    "best_val_accuracy": SHARE,
    "final_val_accuracy": SHARE,
    "epochs_run": COUNT,
    "unsure_threshold": SHARE,
    "seconds": mapping(SECONDS),
    "feature_backend": text(),
    "feature_cache": mapping(anything),
    "params": record({"total": COUNT, "trainable": COUNT, "non_trainable": COUNT}),
    "depth": COUNT,
    "input_size": integer(1),
    "fine_tuned": boolean,
    "fine_tune_averaged_epochs": COUNT,
    "head_search": HEAD_SEARCH,
    "device": mapping(anything),
})

DATASET = document({
    "name": text(), "root": text(), "source": text(),
    "split_counts": mapping(COUNT), "class_counts": mapping(anything),
    "audit": optional(mapping(anything)),
})

VERSIONS = document({
    # where the run executed (core.runs.placement): "local" or "ray", and which node
    "executed_on": record({"backend": text("local", "ray"), "node_id": text(),
                           "node_address": text(), "hostname": text()}),
})

SUMMARY = document({
    "run_id": text(), "run_dir": text(), "created": TIME, "status": text(),
    "backbone": text(), "dataset": text(), "num_classes": COUNT, "train_images": COUNT,
    "total_params": COUNT, "trainable_params": COUNT, "depth": COUNT,
    "model_size_mb": number(0), "seconds_per_epoch": SECONDS, "best_epoch": COUNT,
    "best_val_accuracy": SHARE, "test_accuracy": SHARE, "epochs_run": COUNT,
    "error": text(), "cv_accuracy": SHARE, "dataset_root": text(),
}, required=("run_id", "run_dir", "status"))

INDEX_ENTRY = document({"stamp": optional(list_of(integer())), "summary": SUMMARY},
                       required=("summary",))
