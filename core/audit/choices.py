"""People's choices on an audit (keep, exclude, move), the corrected index and split groups."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd

from core import schema
from core.audit import schemas as audit_schemas
from core.audit.findings import (
    AuditResult,
    audit_dir,
    dataset_key,
    dataset_root,
    index_of,
    relative_names,
)
from core.errors import DatasetError

log = logging.getLogger(__name__)

KEEP, EXCLUDE, MOVE = "keep", "exclude", "move"
ACTIONS = (KEEP, EXCLUDE, MOVE)


def _path(home: str | Path | None, dataset: Any) -> Path:
    return audit_dir(home, dataset_key(dataset)) / "choices.json"


def load_choices(dataset: Any, home: str | Path | None = None) -> dict[str, dict[str, str]]:
    """The saved choices for this dataset: {file: {"action": "exclude"|"move", "label"}}.

    "keep" is the default and is not stored. An unreadable file counts as no choices.
    """
    from core.files import read_json

    path = _path(home, dataset)
    if not path.is_file():
        return {}
    try:
        data = read_json(path)
    except OSError as exc:
        log.warning("Ignoring the unreadable audit choices %s: %s", path, exc)
        return {}
    except ValueError as exc:
        schema.set_aside(path, f"not JSON ({exc})")
        return {}
    problem = schema.valid(data, audit_schemas.CHOICES, "choices.json")
    if problem is None and any(v["action"] == MOVE and not v.get("label")
                               for v in (data.get("choices") or {}).values()):
        problem = "choices.json moves a photo without naming the class"
    if problem is not None:
        schema.set_aside(path, problem)
        return {}
    return {str(k): dict(v) for k, v in (data.get("choices") or {}).items()
            if v.get("action") in (EXCLUDE, MOVE)}


def save_choices(dataset: Any, choices: dict[str, dict[str, str]],
                 home: str | Path | None = None) -> Path:
    """Writes the choices atomically next to the dataset's audit."""
    from core.files import write_json_atomic

    path = _path(home, dataset)
    path.parent.mkdir(parents=True, exist_ok=True)
    kept = {k: v for k, v in choices.items() if v.get("action") in (EXCLUDE, MOVE)}
    write_json_atomic(path, {"updated": time.time(), "choices": kept})
    return path


def set_choice(dataset: Any, file: str, action: str, label: str | None = None,
               home: str | Path | None = None) -> dict[str, dict[str, str]]:
    """Records one photo's choice (saved at once) and returns all choices.

    Args:
        dataset: The Dataset (or index) the audit was made on.
        file: The photo's name relative to the dataset root, as the audit lists it.
        action: "keep", "exclude" or "move".
        label: The class to move the photo to (action "move").

    Raises:
        DatasetError: An unknown action, or "move" without a class of the dataset.
    """
    if action not in ACTIONS:
        raise DatasetError(f"Choose one of {', '.join(ACTIONS)} for {file}; got {action!r}.")
    choices = load_choices(dataset, home)
    if action == KEEP:
        choices.pop(file, None)
    elif action == EXCLUDE:
        choices[file] = {"action": EXCLUDE}
    else:
        index = index_of(dataset)
        if label not in set(index["label"]):
            raise DatasetError(f"Cannot move {file} to {label!r}: not a class of this dataset.")
        choices[file] = {"action": MOVE, "label": str(label)}
    save_choices(dataset, choices, home)
    return choices


def corrected_index(dataset: Any, choices: dict[str, dict[str, str]]) -> pd.DataFrame:
    """The dataset's index with the choices applied: excluded photos left out, moved ones
    relabelled (label_index recomputed). The files themselves are never touched."""
    index = index_of(dataset).reset_index(drop=True)
    if not choices:
        return index.copy()
    names = relative_names(index, dataset_root(dataset))
    out = index.copy()
    drop = []
    for row, name in enumerate(names):
        choice = choices.get(name)
        if choice is None:
            continue
        if choice["action"] == EXCLUDE:
            drop.append(row)
        elif choice["action"] == MOVE:
            out.at[row, "label"] = choice["label"]
    out = out.drop(index=drop).reset_index(drop=True)
    if "label_index" in out.columns:
        labels = sorted(out["label"].unique().tolist())
        out["label_index"] = [labels.index(v) for v in out["label"]]
    return out


def split_groups(dataset: Any, result: AuditResult | None) -> dict[str, str]:
    """{absolute path: group name} for every photo in a near-duplicate group of the audit:
    splits.split(groups=...) keeps each group in one split."""
    if result is None:
        return {}
    root = dataset_root(dataset)
    groups = {}
    for number, group in enumerate(result.near_duplicates):
        for name in group["files"]:
            groups[str(root / name)] = f"{result.audit_id}/{number}"
    return groups


def audited_split(dataset: Any, config: Any, result: AuditResult | None,
                  choices: dict[str, dict[str, str]]) -> pd.DataFrame:
    """The split of the dataset as the choices corrected it, each near-duplicate group of the
    audit kept in one split: what the Dataset page and `python -m core train` both train on.

    Raises:
        DatasetError: The corrected dataset cannot be split (a class left too small).
    """
    from core.data import splits

    return splits.split(corrected_index(dataset, choices), config,
                        groups=split_groups(dataset, result))


def audit_record(result: AuditResult | None, choices: dict[str, dict[str, str]]
                 ) -> dict[str, Any]:
    """What a run stores about the audit its split respected (dataset_info["audit"])."""
    if result is None:
        return {"ran": False}
    return {
        "ran": True,
        "audit_id": result.audit_id,
        "created": result.summary.get("created"),
        "backbone": result.summary.get("backbone"),
        "near_duplicate_groups": len(result.near_duplicates),
        "label_issues": len(result.label_issues),
        "outliers": len(result.outliers),
        "excluded": sum(1 for c in choices.values() if c["action"] == EXCLUDE),
        "moved": sum(1 for c in choices.values() if c["action"] == MOVE),
        "split_respects_groups": True,
    }


def audit_text(dataset_info: dict[str, Any] | None) -> str:
    """One sentence for people on the audit a run's split respected (from its dataset.json)."""
    record = (dataset_info or {}).get("audit") or {}
    if not record.get("ran"):
        return "Not audited: only identical photos were kept in one split."
    return (f"Audited ({record.get('audit_id', '?')}): the split kept its "
            f"{record.get('near_duplicate_groups', 0)} near-duplicate groups together; "
            f"{record.get('excluded', 0)} photos excluded, {record.get('moved', 0)} moved "
            "to another class.")
