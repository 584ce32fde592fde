"""Runs for the pages: the list of runs, a run picker, and cached loading of one run."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import streamlit as st

from core.runs.store import Run, RunStore, RunSummary
from core.status import BROKEN
from ui import links, nav, resources, state
from ui.errors import show_user_errors
from ui.text import md


def store() -> RunStore:
    """The run store of the studio home."""
    return RunStore(resources.home())


def all_runs() -> list[RunSummary]:
    """Every run of the studio home, newest first (broken ones included, never raised)."""
    return store().list()


def completed_runs() -> list[RunSummary]:
    """Runs that finished training with a whole model (usable), newest first."""
    return [s for s in all_runs() if s.usable]


def warn_about_broken(summaries: Sequence[RunSummary]) -> None:
    """Names the broken runs (damaged files) and why, so they are not silently missing."""
    broken = [s for s in summaries if s.status == BROKEN]
    if broken:
        lines = "\n".join(f"- **{md(s.run_id)}**: {md(s.error)}" for s in broken)
        st.warning(f"{len(broken)} run{'s' if len(broken) != 1 else ''} cannot be used because "
                   f"files are damaged; delete them on the Compare page.\n\n{lines}",
                   icon=":material/warning:")


def completed_runs_or_stop(what: str) -> list[RunSummary]:
    """The completed runs; when listing fails or there are none, says so and stops the page.

    Args:
        what: What the page would do with a run, e.g. "evaluate" or "predict with".
    """
    with show_user_errors("Cannot list the runs:") as listing:
        summaries = all_runs()
    if listing.failed:
        st.stop()
    warn_about_broken(summaries)
    finished = [s for s in summaries if s.usable]
    if not finished:
        no_runs_yet(what)
        st.stop()
    return finished


def run_name(summary: RunSummary) -> str:
    """What tells a run from the others, for tables and legends: dataset, base, mode, date."""
    mode = "fine-tuned" if summary.fine_tuned else (
        "searched head" if summary.cv_accuracy is not None else "head only")
    when = (summary.created.astimezone().strftime("%m-%d %H:%M")
            if summary.created is not None else "")
    return " · ".join(p for p in (summary.dataset or "unknown dataset",
                                  summary.backbone or "unknown base", mode, when) if p)


def run_names(summaries: Sequence[RunSummary]) -> dict[str, str]:
    """run id -> run_name(), made unique with the id's end where two runs share a name."""
    names = {s.run_id: run_name(s) for s in summaries}
    counts: dict[str, int] = {}
    for name in names.values():
        counts[name] = counts.get(name, 0) + 1
    return {run_id: (f"{name} ({run_id[-6:]})" if counts[name] > 1 else name)
            for run_id, name in names.items()}


def run_label(summary: RunSummary) -> str:
    """One line naming a run for people: run_name(), the test accuracy with its interval, id."""
    parts = [run_name(summary)]
    if summary.test_accuracy_text is not None:
        parts.append(f"test accuracy {summary.test_accuracy_text}")
    return " · ".join(parts) + f"  ({summary.run_id})"


def run_picker(summaries: Sequence[RunSummary], *, key: str, label: str = "Run",
               demo_link: bool = False) -> RunSummary:
    """A select box of runs, following the address: ?run=<run id> chooses the run shown.

    A run named by the address comes first; else the one chosen before in this session, the
    run this session trained last, or the newest. Choosing a run puts its id in the address,
    and "Copy link" offers that address. An address naming no usable run is refused with a
    message (ui.links).

    Args:
        summaries: Runs to choose from, newest first (not empty).
        key: Widget key.
        label: Widget label.
        demo_link: Also offer the address of Predict's demo view.
    """
    ids = [s.run_id for s in summaries]
    requested = links.requested_run(summaries, all_runs()) if links.address_run() else None
    if requested is not None:
        st.session_state[key] = requested
    elif st.session_state.get(key) not in ids:
        last = st.session_state.get(state.LAST_RUN)
        st.session_state[key] = last if last in ids else ids[0]
    by_id = {s.run_id: s for s in summaries}
    picker, share = st.columns([3, 1], vertical_alignment="bottom")
    chosen = picker.selectbox(label, ids, key=key, on_change=links.follow, args=(key,),
                              format_func=lambda run_id: run_label(by_id[run_id]),
                              help="Runs that finished training, newest first.")
    summary = by_id[chosen or ids[0]]
    links.show_in_address(summary.run_id)
    with share:
        links.copy_link(summary.run_id, key, demo=demo_link)
    return summary


def no_runs_yet(what: str) -> None:
    """Says there is no finished run yet and links to where to make one."""
    st.info(f"No finished training run yet, so there is nothing to {what}. Choose a dataset, "
            "train a model, and come back.", icon=":material/info:")
    nav.page_link(nav.TRAIN, "Train a model", ":material/model_training:")
    nav.page_link(nav.DATASET, "Choose a dataset first", ":material/photo_library:")


@st.cache_data(show_spinner=False, max_entries=32)
def _load(run_dir: str, stamp: tuple[int, ...]) -> Run:
    del stamp  # only part of the cache key
    return _store_of(Path(run_dir)).load(run_dir)


def _store_of(run_dir: Path) -> RunStore:
    return RunStore(run_dir.parent.parent)


def fingerprint(run_dir: str | Path) -> tuple[int, ...]:
    """A value that changes whenever one of the run's files changes (a cache key)."""
    return _store_of(Path(run_dir)).fingerprint(run_dir)


def load(summary_or_dir: RunSummary | Path | str) -> Run:
    """Everything stored for a run, cached until one of its files changes.

    Raises:
        RunNotFoundError: when the run folder is gone.
    """
    run_dir = Path(getattr(summary_or_dir, "run_dir", summary_or_dir))
    return _load(str(run_dir), fingerprint(run_dir))
