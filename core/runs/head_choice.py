"""How a run's head was chosen, for people: the head search's record as text and a table."""

from __future__ import annotations

from typing import Any

import pandas as pd

# Where the head search pays (docs/benchmarks.md, issue 17): on 1,500 clean flower photos it
# tied the usual head; its 5-fold estimate is steadier than a small validation split, and it
# picks stronger regularisation where many labels are wrong.
SMALL_DATASET_PHOTOS = 150  # training + validation photos
NOISY_LABEL_SHARE = 0.05  # likely wrong labels the audit found, of all photos


def search_advice(photos: int, label_issues: int | None = None) -> str | None:
    """Why searching the head's settings would pay for this dataset, or None when it would not.

    Args:
        photos: Training + validation photos.
        label_issues: Likely wrong labels an audit of the dataset found (None: not audited).
    """
    if label_issues and photos and label_issues / photos >= NOISY_LABEL_SHARE:
        return (f"The audit found {label_issues} likely wrong labels among {photos} photos: "
                "searching the head's settings picks a head that copes with them better.")
    if 0 < photos < SMALL_DATASET_PHOTOS:
        return (f"With only {photos} photos to learn from, searching the head's settings "
                "judges each one on all the photos in turn (cross-validation) rather than on "
                "a few validation photos, which is steadier here.")
    return None


def record_text(record: dict[str, Any] | None) -> str:
    """One paragraph for people on how a run's head was chosen (its metrics "head_search")."""
    if not record:
        return ("Set by hand (manual head): the settings of the run's options, with the "
                "validation photos held out to stop training and to set the unsure threshold.")
    if record.get("skipped"):
        return str(record["skipped"])
    chosen = record.get("table") and next((r for r in record["table"] if r.get("chosen")), None)
    spread = f" ± {record['cv_spread']:.1%}" if record.get("cv_spread") is not None else ""
    how = {"finished": "", "budget": " The time budget ended the search early.",
           "cancelled": " The search was cancelled: this is the best so far."}
    text = (f"Chosen by {record.get('folds', '?')}-fold cross-validation on the training and "
            f"validation photos together, among {record.get('tried', '?')} settings tried in "
            f"{record.get('seconds', 0):.0f} s: {record['cv_accuracy']:.1%}{spread} accuracy on "
            "held-out folds. The chosen head was then trained on all those photos for "
            f"{record.get('refit_epochs', '?')} epochs; the test photos were used only at the "
            "end, and the unsure threshold comes from the held-out folds' predictions.")
    if chosen and chosen.get("folds", 0) < record.get("folds", 0):
        text += " The chosen setting was measured on fewer folds than planned."
    return text + how.get(record.get("stopped"), "")


_WORDS = {"l2": "L2", "dropout": "dropout", "learning_rate": "learning rate",
          "label_smoothing": "label smoothing", "hidden_units": "hidden layer",
          "views": "augmented views"}


def _shown(name: str, value: Any) -> str:
    if name == "hidden_units":
        return "-".join(map(str, value or [])) or "none"
    if name == "views":
        return "on" if value else "off"
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)


def plain_text(record: dict[str, Any] | None, usual: dict[str, Any] | None) -> str:
    """The head's choice in a teacher's words, before any table.

    Args:
        record: The run's metrics "head_search".
        usual: The settings a manual run would use ({l2, dropout, learning_rate,
            label_smoothing, hidden_units, views}): the search tries them first.
    """
    if not record or record.get("skipped") or not record.get("table"):
        return record_text(record)
    rows = record["table"]
    chosen = next((r for r in rows if r.get("chosen")), rows[0])
    usual = usual or {}
    same = lambda row: all(  # noqa: E731
        _shown(k, row.get(k)) == _shown(k, usual.get(k)) for k in _WORDS if k in usual)
    count = record.get("tried", len(rows))
    tried = f"Tried {count} setting{'' if count == 1 else 's'} of the head"
    if usual and same(chosen):
        return (f"{tried} and kept the usual one: none was clearly better. It named "
                f"{chosen['cv_accuracy']:.0%} of the photos held out in each try correctly.")
    changes = ", ".join(f"{_WORDS[k]} {_shown(k, chosen.get(k))} (usual "
                        f"{_shown(k, usual.get(k))})" for k in _WORDS
                        if k in usual and _shown(k, chosen.get(k)) != _shown(k, usual.get(k)))
    text = (f"{tried} and kept the one that named the most photos held out in each try "
            f"correctly: {chosen['cv_accuracy']:.0%}")
    baseline = next((r for r in rows if same(r)), None) if usual else None
    if baseline is not None:
        text += f", against {baseline['cv_accuracy']:.0%} for the usual settings"
    return text + (f". It differs from the usual in {changes}." if changes else ".")


def record_table(record: dict[str, Any] | None) -> pd.DataFrame:
    """The settings a search tried, best first, as a table for people (empty when none)."""
    rows = (record or {}).get("table") or []
    return pd.DataFrame([{
        "Chosen": "✓" if row.get("chosen") else "",
        "CV accuracy": row.get("cv_accuracy"),
        "Spread (±)": row.get("cv_spread"),
        "Folds": row.get("folds"),
        "L2": row.get("l2"),
        "Dropout": row.get("dropout"),
        "Learning rate": row.get("learning_rate"),
        "Label smoothing": row.get("label_smoothing"),
        "Hidden layer": "-".join(map(str, row.get("hidden_units") or [])) or "none",
        "Augmented views": "on" if row.get("views") else "off",
        "Epochs": row.get("epochs"),
    } for row in rows])
