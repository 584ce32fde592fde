"""The Dataset page's parts: loading with progress, the validation report, thumbnails, the split."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import pandas as pd
import streamlit as st

from core.config import SplitConfig
from core.data import saved_parts, splits
from core.data import store as dataset_store
from core.errors import AppError
from core.progress import CHECKING, UNPACKING, ProgressEvent
from core.results import charts
from ui import resources, roles, state, uploads
from ui.errors import show_user_errors
from ui.text import md, md_list

if TYPE_CHECKING:
    from core.data.datasets import Dataset, ValidationReport
    from ui.state import CurrentDataset

PROGRESS_EVERY_SECONDS = 0.25
# Colon-separated folders; when set, "Folder on the server" reads only folders under them.
DATA_ROOTS_ENV_VAR = "TL_STUDIO_DATA_ROOTS"
THUMBNAILS_PER_CLASS = 6
CLASSES_SHOWN_AT_ONCE = 12
SPLIT_NAMES = ("train", "val", "test")
SPLIT_LABELS = {"train": "Train", "val": "Validation", "test": "Test"}


class _ProgressBar:
    """ingest's on_event(ProgressEvent) callback drawing a throttled st.progress bar."""

    STAGES = {UNPACKING: "Extracting the zip", CHECKING: "Checking photos"}

    def __init__(self, what: str) -> None:
        self._what = what
        self._bar = st.progress(0.0, text=f"Reading {md(what)}...")
        self._last = 0.0

    def __call__(self, event: ProgressEvent) -> None:
        now = time.monotonic()
        done, total = event.step, event.total_steps
        if done < total and now - self._last < PROGRESS_EVERY_SECONDS:
            return
        self._last = now
        doing = self.STAGES.get(event.phase, event.phase.capitalize())
        self._bar.progress(event.fraction, text=f"{doing}: {done:,} of {total:,} files")

    def empty(self) -> None:
        self._bar.empty()


def ingest_with_progress(source: str | Path | bytes | BinaryIO, name: str,
                         origin: str, within: list[Path] | None = None
                         ) -> state.LoadedDataset | None:
    """Ingests a zip or folder showing progress, keeps it in session state, and returns it.

    Args:
        source: What core.data.datasets.ingest accepts: a folder or zip path, zip bytes or a file.
        name: Short name for people (zip file name or folder name).
        origin: What was loaded ("upload:<file id>" or the folder path), to avoid reloading.
        within: The folders this server shares: links leading out of them are refused.

    Returns:
        The loaded dataset, or None after an error was shown with st.error.
    """
    with st.status(f"Loading {md(name)}...", expanded=True) as status:
        bar = _ProgressBar(name)
        started = time.monotonic()
        with show_user_errors() as outcome:
            roles.require("load datasets")
            dataset, _saved = dataset_store.ingest_saved(
                source, home=resources.home(), name=name, on_event=bar, within=within)
        bar.empty()
        if outcome.failed:
            status.update(label=f"Could not load {md(name)}", state="error", expanded=True)
            return None
        seconds = time.monotonic() - started
        usable = sum(dataset.report.classes.values())
        status.update(
            label=f"Loaded {md(name)}: {usable:,} usable images in {len(dataset.report.classes)} "
                  f"classes ({seconds:.1f} s)",
            state="complete" if dataset.report.usable else "error", expanded=False,
        )
    loaded = state.LoadedDataset(dataset=dataset, name=name, source=origin)
    state.set_loaded_dataset(loaded)
    return loaded


def load_upload(upload: Any) -> state.LoadedDataset | None:
    """Ingests an st.file_uploader file once; later reruns reuse the loaded dataset."""
    origin = f"upload:{upload.file_id}"
    loaded = state.loaded_dataset()
    if loaded is not None and loaded.source == origin:
        return loaded
    loaded = ingest_with_progress(upload, upload.name, origin)
    uploads.release(upload, state.UPLOAD)  # extracted to the disk: the memory copy can go
    return loaded


def data_roots() -> list[Path]:
    """The folders visitors may load from ($TL_STUDIO_DATA_ROOTS, resolved); empty: any."""
    text = os.environ.get(DATA_ROOTS_ENV_VAR, "")
    return [Path(part).expanduser().resolve() for part in text.split(os.pathsep) if part.strip()]


def within_data_roots(path: Path, roots: list[Path]) -> bool:
    """Whether a path, resolved (so `..` and symbolic links count where they lead), lies in a
    root. Without roots every path is allowed (the command line never restricts paths)."""
    if not roots:
        return True
    resolved = path.expanduser().resolve()
    return any(resolved == root or root in resolved.parents for root in roots)


def confinement(root: Path) -> list[Path] | None:
    """The shared folders a dataset root's links must stay in: none for the studio's own
    files (uploads, datasets built here), else $TL_STUDIO_DATA_ROOTS (None when unset)."""
    home, real = resources.home().resolve(), Path(root).resolve()
    if real == home or home in real.parents:
        return None
    return data_roots() or None


def folder_help() -> str:
    """What "Folder on the server" accepts here."""
    roots = data_roots()
    if not roots:
        return "A folder (or a .zip file) readable by the server process."
    return ("A folder (or a .zip file) under one of the folders this server shares: "
            + ", ".join(str(root) for root in roots) + ".")


def load_folder(text: str) -> state.LoadedDataset | None:
    """Ingests a folder (or a zip file) on the server given as typed text.

    With $TL_STUDIO_DATA_ROOTS set, only a folder under one of those roots is read.
    """
    text = (text or "").strip().strip('"').strip("'")
    if not text:
        st.error("Type the path of a folder on the server, such as /data/flowers: one "
                 "subfolder per class, photos inside.", icon=":material/error:")
        return None
    path = Path(text).expanduser()
    roots = data_roots()
    if not within_data_roots(path, roots):
        shared = md_list(roots)
        st.error(f"{md(text)} is outside the folders this server shares ({shared}). Copy the "
                 "photos into one of them, or upload a zip instead.", icon=":material/block:")
        return None
    if roots:
        path = path.resolve()  # read what was checked, not a link that may change
    return ingest_with_progress(path, path.name or str(path), str(path), within=roots or None)


def split_dataset(loaded: state.LoadedDataset, config: SplitConfig) -> pd.DataFrame | None:
    """The dataset's stratified split, or None after showing why it cannot be split."""
    with show_user_errors("Cannot split this dataset:") as outcome:
        split = splits.split(loaded.dataset.index, config)
    return None if outcome.failed else split


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
        st.error(md(error), icon=":material/error:")
    for warning in report.warnings:
        st.warning(md(warning), icon=":material/warning:")

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


def thumbnail_grid(dataset: Dataset) -> None:
    """A few small thumbnails of every class (a chosen subset when there are many classes)."""
    index = dataset.index
    classes = list(dataset.classes)
    if index.empty or not classes:
        return
    shown = classes
    if len(classes) > CLASSES_SHOWN_AT_ONCE:
        shown = st.multiselect("Classes to preview", classes,
                               default=classes[:CLASSES_SHOWN_AT_ONCE],
                               key=state.THUMBNAIL_CLASSES)
    firsts = index.sort_values("path").groupby("label", sort=False).head(THUMBNAILS_PER_CLASS)
    for label in shown:
        rows = firsts[firsts["label"] == label]
        total = int((index["label"] == label).sum())
        st.markdown(f"**{md(label)}** · {total:,} images")
        cols = st.columns(THUMBNAILS_PER_CLASS)
        for col, path in zip(cols, rows["path"], strict=False):
            with col:
                try:
                    pixels = resources.thumbnail(str(path), resources.THUMBNAIL_SIZE,
                                                 resources.file_stamp(path))
                except (AppError, OSError) as exc:
                    st.caption(f"{md(saved_parts.given_name(path))}: cannot show ({md(exc)})")
                    continue
                st.image(pixels, caption=md(saved_parts.given_name(path)), width="stretch")


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
        f"**In use for training: {md(current.name)}** · {len(classes)} classes · "
        f"{sum(counts.values()):,} images (train {counts['train']:,}, validation "
        f"{counts['val']:,}, test {counts['test']:,}; seed {current.split_config.seed})",
        icon=":material/check_circle:",
    )
