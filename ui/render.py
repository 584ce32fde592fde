"""Renders core results on a page: validation report, thumbnails, splits, device, runs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import streamlit as st

from core import charts
from core.errors import AppError
from ui import resources

if TYPE_CHECKING:
    from core.datasets import Dataset, ValidationReport
    from ui.state import CurrentDataset


THUMBNAILS_PER_CLASS = 6
CLASSES_SHOWN_AT_ONCE = 12
SPLIT_NAMES = ("train", "val", "test")
SPLIT_LABELS = {"train": "Train", "val": "Validation", "test": "Test"}


# ----------------------------------------------------------------------------- device


def device_banner() -> None:
    """One line about the compute device: GPU name and memory, or CPU only and why."""
    info = resources.device_info()
    text = info.summary()
    tf_version = getattr(info, "tensorflow_version", None)
    if tf_version and tf_version not in text:
        text += f" · TensorFlow {tf_version}"
    if getattr(info, "kind", "cpu") == "gpu":
        st.success(text, icon=":material/memory:")
    else:
        st.info(text, icon=":material/computer:")


# ----------------------------------------------------------------------------- reports


def _short(file: str, root: str) -> str:
    """A file name relative to the dataset root when it lies inside it."""
    try:
        return Path(file).relative_to(root).as_posix()
    except ValueError:
        return str(file)


def validation_report(report: ValidationReport) -> None:
    """Everything ingestion found: counts, chart, errors, warnings, rejected, duplicates."""
    usable = sum(report.classes.values())
    cols = st.columns(5)
    cols[0].metric("Classes", len(report.classes))
    cols[1].metric("Usable images", f"{usable:,}")
    cols[2].metric("Rejected files", f"{len(report.rejected):,}")
    cols[3].metric("Duplicate groups", f"{len(report.duplicates):,}")
    cols[4].metric("Ignored files", f"{report.ignored:,}",
                   help="System and hidden files (__MACOSX, .DS_Store, Thumbs.db, ...).")

    for error in report.errors:
        st.error(error, icon=":material/error:")
    for warning in report.warnings:
        st.warning(warning, icon=":material/warning:")

    if report.classes:
        st.plotly_chart(charts.class_distribution(report.classes), width="stretch")

    if report.rejected:
        with st.expander(f"Rejected files ({len(report.rejected):,}): not used, with the reason",
                         expanded=len(report.rejected) <= 20):
            frame = pd.DataFrame(
                [{"file": _short(r["file"], report.root), "reason": r["reason"]}
                 for r in report.rejected]
            )
            st.dataframe(frame, hide_index=True, width="stretch",
                         column_config={"file": "File", "reason": "Why it was rejected"})
    if report.duplicates:
        cross = sum(bool(d.get("cross_class")) for d in report.duplicates)
        groups = len(report.duplicates)
        title = f"Duplicates ({groups:,} {'group' if groups == 1 else 'groups'} of identical photos"
        title += f", {cross} across classes)" if cross else ")"
        with st.expander(title, expanded=cross > 0):
            st.caption("Identical photos within a class are kept once. Identical photos under "
                       "two classes are label conflicts and are left out.")
            rows = [{
                "files": "\n".join(_short(f, report.root) for f in d.get("files", [])),
                "across classes": "yes" if d.get("cross_class") else "no",
                "kept": _kept_text(d.get("kept"), report.root),
            } for d in report.duplicates]
            st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    if report.unassigned:
        with st.expander(f"Files outside any class folder ({len(report.unassigned):,}): "
                         "not used", expanded=True):
            st.caption("Move each into the folder of its class (one subfolder per class).")
            st.dataframe(pd.DataFrame({"file": [_short(f, report.root)
                                                for f in report.unassigned]}),
                         hide_index=True, width="stretch")


def _kept_text(kept: Any, root: str) -> str:
    if kept is None or kept is False:
        return "none (left out)"
    if kept is True:
        return "one copy"
    if isinstance(kept, (list, tuple)):
        return "\n".join(_short(k, root) for k in kept) or "none (left out)"
    return _short(str(kept), root)


def thumbnail_grid(dataset: Dataset, *, per_class: int = THUMBNAILS_PER_CLASS,
                   key: str = "tl_thumbnail_classes") -> None:
    """A few small thumbnails of every class (a chosen subset when there are many classes)."""
    index = dataset.index
    classes = list(dataset.classes)
    if index.empty or not classes:
        return
    shown = classes
    if len(classes) > CLASSES_SHOWN_AT_ONCE:
        shown = st.multiselect("Classes to preview", classes,
                               default=classes[:CLASSES_SHOWN_AT_ONCE], key=key)
    firsts = index.sort_values("path").groupby("label", sort=False).head(per_class)
    for label in shown:
        rows = firsts[firsts["label"] == label]
        total = int((index["label"] == label).sum())
        st.markdown(f"**{label}** · {total:,} images")
        cols = st.columns(per_class)
        for col, path in zip(cols, rows["path"], strict=False):
            with col:
                try:
                    pixels = resources.thumbnail(str(path), resources.THUMBNAIL_SIZE,
                                                 resources.file_stamp(path))
                except (AppError, OSError) as exc:
                    st.caption(f"{Path(path).name}: cannot show ({exc})")
                    continue
                st.image(pixels, caption=Path(path).name, width="stretch")


# ----------------------------------------------------------------------------- splits


def split_counts(split_df: pd.DataFrame) -> pd.DataFrame:
    """Images per class (rows) and split (columns), with totals."""
    table = pd.crosstab(split_df["label"], split_df["split"])
    table = table.reindex(columns=list(SPLIT_NAMES), fill_value=0)
    table["total"] = table.sum(axis=1)
    table.loc["all classes"] = table.sum(axis=0)
    table.index.name = "class"
    return table.rename(columns=SPLIT_LABELS | {"total": "Total"})


def split_summary(split_df: pd.DataFrame) -> None:
    """The split as a table of images per class and split, and as stacked bars."""
    table, chart = st.columns([2, 3])
    table.dataframe(split_counts(split_df), width="stretch")
    counts = split_df["label"].value_counts().sort_index()
    by_split = pd.crosstab(split_df["label"], split_df["split"])
    chart.plotly_chart(charts.class_distribution(counts, by_split), width="stretch")


def current_dataset_banner(current: CurrentDataset) -> None:
    """Which dataset the next pages will use, with its split sizes."""
    counts = current.split_counts()
    classes = current.loaded.dataset.classes
    st.success(
        f"**In use for training: {current.name}** · {len(classes)} classes · "
        f"{sum(counts.values()):,} images (train {counts['train']:,}, validation "
        f"{counts['val']:,}, test {counts['test']:,}; seed {current.split_config.seed})",
        icon=":material/check_circle:",
    )


# ----------------------------------------------------------------------------- runs


RUN_COLUMNS = {
    "run_id": "Run", "created": "Created", "status": "Status", "dataset": "Dataset",
    "backbone": "Base",
    "epochs_run": "Epochs", "best_val_accuracy": "Best val. accuracy",
    "test_accuracy": "Test accuracy",
}


def runs_table(summaries: Sequence[Any]) -> pd.DataFrame:
    """A table of run summaries with the columns people compare first."""
    rows = [{name: getattr(s, name, None) for name in RUN_COLUMNS} for s in summaries]
    return pd.DataFrame(rows, columns=list(RUN_COLUMNS)).rename(columns=RUN_COLUMNS)


def recent_runs(limit: int = 5) -> list[Any]:
    """Shows the newest runs of the studio home; returns their summaries (maybe empty)."""
    from core.runs import RunStore

    summaries = RunStore(resources.home()).list()[:limit]
    if not summaries:
        st.caption("No runs yet: train a model and it will be listed here.")
        return []
    st.dataframe(runs_table(summaries), hide_index=True, width="stretch",
                 column_config={
                     "Created": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm"),
                     "Best val. accuracy": st.column_config.NumberColumn(format="percent"),
                     "Test accuracy": st.column_config.NumberColumn(format="percent"),
                 })
    return list(summaries)
