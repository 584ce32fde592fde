"""What an audit's audit.json and choices.json must hold (see core.schema). A file that does
not match is set aside with a warning: the dataset is then as if never audited."""

from __future__ import annotations

from core.schema import (
    COUNT,
    SHARE,
    anything,
    boolean,
    document,
    list_of,
    mapping,
    number,
    record,
    text,
)

AUDIT = document({
    "label_issues": list_of(record({"file": text(), "given": text(), "suggested": text(),
                                    "score": number()},
                                   required=("file", "given", "suggested", "score"))),
    "near_duplicates": list_of(record({"files": list_of(text(), min_items=1),
                                       "similarity": number(), "cross_class": boolean,
                                       "spans_splits": boolean},
                                      required=("files", "similarity"))),
    "outliers": list_of(record({"file": text(), "label": text(), "score": number()},
                               required=("file", "label", "score"))),
    "summary": record({
        "dataset_key": text(), "audit_id": text(), "created": number(0), "backbone": text(),
        "images": COUNT, "classes": COUNT, "label_issues": COUNT,
        "near_duplicate_groups": COUNT, "near_duplicate_photos": COUNT,
        "cross_class_groups": COUNT, "leaking_groups": COUNT, "outliers": COUNT,
        "estimated_wrong_label_share": SHARE, "cross_validated_accuracy": SHARE,
        "per_class": mapping(mapping(anything)),
    }),
})

CHOICE = record({"action": text("keep", "exclude", "move"), "label": text()},
                required=("action",))
CHOICES = document({"updated": number(), "choices": mapping(CHOICE)})
