"""The Train page's live monitor: every training job, one job's progress, result or error."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import pandas as pd
import streamlit as st

from core.errors import JobError
from core.jobs.job import JobStatus
from core.progress import PHASES
from core.results import charts
from core.runs import history as history_table
from core.runs import interval
from core.status import CANCELLED, COMPLETED, FAILED, INTERRUPTED, QUEUED, RUNNING
from ui import nav, resources, roles, state
from ui.errors import show_user_errors
from ui.text import md

POLL_SECONDS = 1.0          # how often the live panel asks the job manager while a job runs
FINISHED_JOBS_LISTED = 5    # ended jobs kept in the jobs table under the active ones

PHASE_TEXT = {
    "preparing": "Preparing", "extracting features": "Extracting features",
    "searching head": "Searching the head's settings", "training head": "Training the head",
    "fine-tuning": "Fine-tuning", "training top blocks": "Training the top blocks",
    "evaluating": "Evaluating", "saving": "Saving",
}
STATE_TEXT = {
    QUEUED: "queued", RUNNING: "running", COMPLETED: "finished",
    CANCELLED: "cancelled", FAILED: "failed", INTERRUPTED: "interrupted",
}
METRIC_TEXT = (("loss", "Training loss"), ("accuracy", "Training accuracy"),
               ("val_loss", "Validation loss"), ("val_accuracy", "Validation accuracy"))


def history_from_events(events: Sequence[Any]) -> pd.DataFrame:
    """The live epoch history of a training job, in core.runs.history's shape."""
    return history_table.from_events(events)


def duration_text(seconds: float | None) -> str:
    """12 s, 3 min 05 s, 1 h 02 min."""
    if seconds is None:
        return "unknown"
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def _known(job_id: str | None) -> JobStatus | None:
    if not job_id:
        return None
    try:
        return resources.job_manager().status(job_id)
    except JobError:
        return None


def watched_job(all_jobs: Sequence[JobStatus]) -> JobStatus | None:
    """The job to show: the one chosen, else this session's, else a running or queued one."""
    for job_id in (st.session_state.get(state.TRAIN_WATCH), st.session_state.get(state.JOB_ID)):
        status = next((j for j in all_jobs if j.job_id == job_id), None)
        if status is not None:
            return status
    active = [j for j in all_jobs if not j.done]
    active.sort(key=lambda j: (j.state != RUNNING, j.submitted))
    return active[0] if active else None


def jobs_table(all_jobs: Sequence[JobStatus]) -> pd.DataFrame:
    """Running and queued jobs, then the last few ended ones."""
    active = [j for j in all_jobs if not j.done]
    ended = [j for j in all_jobs if j.done][-FINISHED_JOBS_LISTED:]
    rows = []
    for job in [*active, *reversed(ended)]:
        phase = job.latest_event.phase if job.latest_event else None
        rows.append({
            "Job": job.title, "State": STATE_TEXT.get(job.state, job.state),
            "Queue position": str(job.position) if job.position else "",
            "Phase": (PHASE_TEXT.get(phase, "starting") if job.state == RUNNING else ""),
            "Running for": duration_text(job.elapsed) if job.started else "",
            "Submitted": time.strftime("%H:%M:%S", time.localtime(job.submitted)),
        })
    return pd.DataFrame(rows)


def started_here() -> bool:
    """Whether this session started a training job that the server still knows."""
    return _known(st.session_state.get(state.JOB_ID)) is not None


def picker_label(job: JobStatus) -> str:
    """A job's name in the "Show job" picker: only facts that cannot go stale.

    The picker is drawn once per page run while the job goes on in the background, so a
    state word that can still change ("queued", "running") would soon be false there; an
    ended state never changes. The jobs table and the panel show the live state.
    """
    label = f"{job.title} · {time.strftime('%H:%M', time.localtime(job.submitted))}"
    return f"{label} ({STATE_TEXT.get(job.state, job.state)})" if job.done else label


def jobs_section(heading: bool = True) -> None:
    """Every training job of this server, and the live progress of the one watched.

    Jobs belong to the server process, so a refreshed browser or another session finds them
    here. The progress panel reruns on its own every POLL_SECONDS while the job is active.
    """
    all_jobs = resources.job_manager().jobs(kind="train")
    if not all_jobs:
        return
    if heading:  # none under the page's own "3. Start"
        st.header("Training jobs")
    ids = [j.job_id for j in reversed(all_jobs)]  # newest first
    started = st.session_state.pop(state.TRAIN_WATCH_NEXT, None)
    if started in ids:
        st.session_state[state.TRAIN_WATCH] = started
    watched = watched_job(all_jobs)
    if len(all_jobs) > 1:
        # Set through Session State (never only as a default), so the browser shows it too.
        if st.session_state.get(state.TRAIN_WATCH) not in ids:
            st.session_state[state.TRAIN_WATCH] = watched.job_id if watched else ids[0]
        titles = {j.job_id: picker_label(j) for j in all_jobs}
        chosen = st.selectbox("Show job", ids, format_func=titles.get, key=state.TRAIN_WATCH)
        watched = next(j for j in all_jobs if j.job_id == chosen)
    if watched is None:
        st.dataframe(jobs_table(all_jobs), hide_index=True, width="stretch")
        return
    polling = not watched.done
    st.fragment(run_every=POLL_SECONDS if polling else None)(_live_panel)(
        watched.job_id, polling)


def _live_panel(job_id: str, polling: bool) -> None:
    """The fragment: jobs table and one job's progress, result or error."""
    status = _known(job_id)
    if status is None:
        st.warning("This job is no longer known to the server (it restarted). Its run, if "
                   "any, is on the Compare page.", icon=":material/warning:")
        return
    if polling and status.done:
        st.rerun()  # the whole page: show the result and stop polling
    # The job's progress first: under the Start button it must show without scrolling.
    job_progress(status)
    all_jobs = resources.job_manager().jobs(kind="train")
    if len(all_jobs) > 1 or not status.done:
        st.dataframe(jobs_table(all_jobs), hide_index=True, width="stretch")


def cancel_button(status: JobStatus) -> None:
    """Cancel works from any session: the job manager is shared by the whole server."""
    if status.cancel_requested:
        st.caption(":material/hourglass_top: Stopping after the current batch...")
        return
    st.button("Cancel training", key=f"{state.TRAIN_CANCEL}.{status.job_id}",
              icon=":material/stop_circle:", on_click=roles.cancel_job,
              args=(status.job_id,),
              help="Stops the job; what was trained so far is kept as a cancelled run.")


def job_progress(status: JobStatus) -> None:
    """One job: queue position, or phase, progress bar with ETA, metrics and curves; or the end."""
    st.markdown(f"**{md(status.title)}**")
    if status.state == QUEUED:
        st.info(f"Waiting in the queue: position {status.position}. One training runs at a "
                "time on this machine; this one starts when those ahead of it end.",
                icon=":material/schedule:")
        cancel_button(status)
        return
    if status.state == RUNNING:
        running_view(status)
        cancel_button(status)
        return
    ended_view(status)


def phase_line(current: str | None, seen: set[str]) -> str:
    """The pipeline of phases: done ones ticked, the current one bold, skipped ones struck."""
    parts = []
    index = PHASES.index(current) if current in PHASES else -1
    for i, phase in enumerate(PHASES):
        text = PHASE_TEXT[phase]
        if i == index:
            parts.append(f"**{text}**")
        elif i < index:
            parts.append(f"~~{text}~~" if phase not in seen else f":green[{text}]")
        else:
            parts.append(f":gray[{text}]")
    return " → ".join(parts)


def running_view(status: JobStatus) -> None:
    """Phase, progress bar with ETA, latest metrics and the growing learning curves."""
    event = status.latest_event
    phase = event.phase if event else None
    seen = {(e.phase if e else None) for e in status.events}
    st.markdown(phase_line(phase, seen))
    fraction = float(getattr(event, "fraction", 0.0) or 0.0) if event is not None else 0.0
    message = (event.message if event else None) or "Starting..."
    eta = event.eta_seconds if event else None
    text = f"{PHASE_TEXT.get(phase, 'Starting')}: {md(message)}"
    if eta is not None and fraction < 1:
        text += f" · about {duration_text(eta)} left in this phase"
    st.progress(min(max(fraction, 0.0), 1.0), text=text)
    if phase == "searching head":
        search_row((event.metrics if event else None) or {})
    history = history_from_events(status.events)
    metrics_row(history)
    if not history.empty and "searching head" in seen:
        st.caption(SEARCHED_CURVES_TEXT)
    st.caption(f"Running for {duration_text(status.elapsed)}. You can switch pages or close "
               "the browser: training goes on, and this page shows it again.")
    if not history.empty:
        st.plotly_chart(charts.learning_curves(history), width="stretch")


SEARCHED_CURVES_TEXT = (
    "The head's settings were chosen by cross-validation, and the final head trains on the "
    "training and validation photos together: its validation curve is the chosen setting's "
    "accuracy on held-out folds at each epoch, averaged over the folds.")


def search_row(metrics: dict[str, Any]) -> None:
    """Settings tried so far and the best cross-validated accuracy, while the search runs."""
    if not metrics:
        return
    left, right = st.columns(2)
    left.metric("Head settings tried", f"{int(metrics.get('settings_tried', 0))}")
    best = metrics.get("best_cv_accuracy")
    if best is not None:
        right.metric("Best cross-validated accuracy so far", f"{best:.1%}")


def metrics_row(history: pd.DataFrame) -> None:
    """The last epoch's metrics, with the change since the epoch before."""
    if history.empty:
        return
    last = history.iloc[-1]
    previous = history.iloc[-2] if len(history) > 1 else None
    cols = st.columns(len(METRIC_TEXT) + 1)
    cols[0].metric("Epoch", f"{int(last['epoch'])}")
    for col, (key, label) in zip(cols[1:], METRIC_TEXT, strict=True):
        value = last.get(key)
        if value is None or pd.isna(value):
            continue
        percent = "accuracy" in key
        shown = f"{value:.1%}" if percent else f"{value:.3f}"
        delta = None
        if previous is not None and pd.notna(previous.get(key)):
            change = value - previous[key]
            delta = f"{change:+.1%}" if percent else f"{change:+.3f}"
        col.metric(label, shown, delta, delta_color="normal" if percent else "inverse")


def rerun_text(executed_on: dict[str, Any] | None) -> str | None:
    """For a training rerun after its cluster node was lost: what happened, else None."""
    lost = (executed_on or {}).get("rerun_after_lost_node")
    if not lost:
        return None
    node = str(lost.get("node_id") or "?")[:12]
    now = str((executed_on or {}).get("node_id") or "?")[:12]
    return (f"The machine first running this training (cluster node {node} at "
            f"{lost.get('node_address') or '?'}) was lost, so it ran again from the start on "
            f"node {now} at {(executed_on or {}).get('node_address') or '?'}; the run shown is "
            "that second, complete one.")


def ended_view(status: JobStatus) -> None:
    """A finished job's result with links onward, a cancelled job's note, a failed job's error."""
    result = status.result
    took = f" in {duration_text(status.elapsed)}" if status.started else ""
    if status.state in (FAILED, INTERRUPTED):
        what = "failed" if status.state == FAILED else "was interrupted"
        st.error(f"Training {what}{took}: {md(status.error)}", icon=":material/error:")
        if status.error_traceback:
            st.caption("This looks like a bug: the details are in the server log and in the "
                       "run's status.json.")
        forget_button(status)
        return
    run_dir = getattr(result, "run_dir", None)
    if status.state == CANCELLED:
        kept = ("What was trained so far is kept as a cancelled run." if run_dir
                else "It had not started yet." if status.started is None else "")
        st.warning(f"Training was cancelled{took}. {kept}".strip(),
                   icon=":material/stop_circle:")
    else:
        accuracy = getattr(result, "test_accuracy", None)
        photos = getattr(getattr(result, "evaluation", None), "num_samples", None)
        shown = interval.accuracy_text(accuracy, photos) or "unknown"
        st.success(f"Finished{took}: test accuracy **{shown}** on photos the model never "
                   f"saw while training ({getattr(result, 'epochs_run', 0)} epochs).",
                   icon=":material/check_circle:")
        tested = interval.accuracy(accuracy, photos)
        if tested is not None and tested.warning():
            st.caption(tested.warning())
        rerun_note = rerun_text(getattr(result, "executed_on", None))
        if rerun_note:
            st.info(rerun_note, icon=":material/restart_alt:")
        search = getattr(result, "head_search", None)
        if search:
            settings = "setting" if search["tried"] == 1 else "settings"
            st.caption(f"Head chosen by cross-validation among {search['tried']} {settings} "
                       f"({search['cv_accuracy']:.1%} cross-validated accuracy); the Evaluate "
                       "page shows them all.")
        st.session_state[state.LAST_RUN] = getattr(result, "run_id", None)
        nav.page_link(nav.EVALUATE, "See how it does, class by class", ":material/insights:")
        nav.page_link(nav.PREDICT, "Try it on your own photos", ":material/image_search:")
    if run_dir is not None:
        from ui import runs as ui_runs

        with show_user_errors("Cannot read the run:"):
            run = ui_runs.load(run_dir)
            if not run.history.empty:
                st.plotly_chart(charts.learning_curves(run.history, run.fine_tune_start_epoch),
                                width="stretch")
    forget_button(status)


def forget_button(status: JobStatus) -> None:
    """Hides an ended job from this session's panel (the run stays on disk)."""
    if st.session_state.get(state.JOB_ID) != status.job_id:
        return

    def forget() -> None:
        st.session_state.pop(state.JOB_ID, None)
        st.session_state.pop(state.TRAIN_WATCH, None)

    st.button("Hide this result", key=f"{state.TRAIN_FORGET}.{status.job_id}", on_click=forget,
              icon=":material/visibility_off:")

