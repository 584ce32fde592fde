"""The Dataset page's audit: a background job, then galleries of what it found, with choices."""

from __future__ import annotations

import hashlib
from typing import Any

import pandas as pd
import streamlit as st

from core.audit import choices as audit_choices
from core.audit import findings as audit
from core.config import AuditConfig, SplitConfig
from core.errors import JobError
from core.jobs import kinds as job_kinds
from core.jobs import manager as jobs
from ui import paging, resources, roles, state
from ui.errors import show_user_errors
from ui.text import md

START = "tl_audit_start"
CANCEL = "tl_audit_cancel"
JOBS = "tl_audit_jobs"            # {dataset key: job id} of audits started in this session
SHOW_PREFIX = "tl_audit_show"     # how many items of a section are shown
CHOICE_PREFIX = "tl_audit_choice"  # one radio per photo and section
THUMB = 160
KIND = job_kinds.AUDIT.name  # a queued audit survives a server restart

ACTION_TEXT = {audit_choices.KEEP: "Keep", audit_choices.EXCLUDE: "Exclude",
               audit_choices.MOVE: "Move to suggested"}


def choice_key(*parts: Any) -> str:
    """The session-state key of one photo's choice in one section (unique across loops)."""
    digest = hashlib.sha1("|".join(str(p) for p in parts).encode("utf-8")).hexdigest()[:12]
    return f"{CHOICE_PREFIX}.{parts[0]}.{digest}"


def _job_id(key: str) -> str | None:
    """This session's audit of the dataset, else one another session started or a restarted
    server queued again (so nobody starts it twice); the job's subject is the dataset key."""
    known = st.session_state.setdefault(JOBS, {}).get(key)
    if known:
        return known
    active = resources.job_manager().jobs(kind=KIND, subject=key, active_only=True)
    return active[-1].job_id if active else None


def _status(job_id: str | None) -> jobs.JobStatus | None:
    if job_id is None:
        return None
    try:
        return resources.job_manager().status(job_id)
    except JobError:  # a job forgotten after a server restart
        return None


def _start(loaded: state.LoadedDataset, key: str) -> None:
    with show_user_errors("Cannot start the audit:"):
        roles.require("audit datasets")
        job_id = resources.job_manager().submit(
            audit.audit, title=f"Audit of {loaded.name}", kind=KIND, subject=key,
            dataset_or_index=loaded.dataset, home=resources.home(), config=AuditConfig(),
        )
        st.session_state.setdefault(JOBS, {})[key] = job_id


@st.fragment(run_every=1.0)
def _progress(job_id: str) -> None:
    status = _status(job_id)
    if status is None or status.done:
        st.rerun()
    event = status.latest_event
    fraction = float(getattr(event, "fraction", 0.0) or 0.0) if event is not None else 0.0
    message = (event.message if event else None) or (
        f"Waiting in the queue (position {status.position})" if status.position else "Starting")
    st.progress(min(max(fraction, 0.0), 1.0), text=f"Auditing: {md(message)}")
    st.button("Cancel the audit", key=f"{CANCEL}.{job_id}", icon=":material/stop_circle:",
              on_click=roles.cancel_job, args=(job_id,))


def audit_section(loaded: state.LoadedDataset) -> tuple[audit.AuditResult | None,
                                                          dict[str, dict[str, str]]]:
    """Runs or shows the dataset's audit; returns it (None before one ran) and the choices."""
    dataset, home = loaded.dataset, resources.home()
    key = audit.dataset_key(dataset)
    st.header("Audit")
    st.caption("Looks for photos whose label is probably wrong, near-duplicates (the same "
               "photo resized, recompressed, cropped or flipped) and photos unlike the rest of "
               "their class, from the base's features. Near-duplicates then stay in one split. "
               "Your choices below never change the files: they make a corrected copy of the "
               "dataset for the split.")
    status = _status(_job_id(key))
    running = status is not None and not status.done
    if running:
        _progress(status.job_id)
    else:
        if status is not None and status.state == jobs.FAILED:
            st.error(f"The audit failed: {md(status.error)}", icon=":material/error:")
        st.button("Audit this dataset", key=START, icon=":material/troubleshoot:",
                  on_click=_start, args=(loaded, key),
                  help="Runs in the background: switching pages does not stop it.")
    result = audit.load_audit(dataset, home)
    choices = audit_choices.load_choices(dataset, home)
    damaged = audit.set_aside_files(dataset, home)
    if damaged:
        st.warning(f"A damaged audit file of this dataset was set aside ({md(damaged[-1])}); "
                   "its findings or choices are not used. Audit again if you need them.",
                   icon=":material/warning:")
    if result is None:
        return None, choices
    show_result(loaded, result, choices)
    return result, choices


def show_result(loaded: state.LoadedDataset, result: audit.AuditResult,
                choices: dict[str, dict[str, str]]) -> None:
    """Summary, then one tab per kind of problem, each a gallery with choices."""
    s = result.summary
    # One count of likely wrong labels: a second estimate (a share) disagreed with it.
    cols = st.columns(3)
    cols[0].metric("Likely wrong labels", len(result.label_issues),
                   help="Photos a model trained without them finds unlike their label.")
    cols[1].metric("Near-duplicate groups", len(result.near_duplicates),
                   help=f"{s.get('cross_class_groups', 0)} span classes, "
                        f"{s.get('leaking_groups', 0)} would span splits")
    cols[2].metric("Outliers", len(result.outliers),
                   help="Photos unlike the rest of their class.")
    moved = sum(c["action"] == audit_choices.MOVE for c in choices.values())
    excluded = sum(c["action"] == audit_choices.EXCLUDE for c in choices.values())
    st.caption(f"Audit {md(result.audit_id)} with {md(s.get('backbone'))} features · your choices: "
               f"{excluded} excluded, {moved} moved.")
    tabs = st.tabs([f"Label issues ({len(result.label_issues)})",
                    f"Near-duplicates ({len(result.near_duplicates)})",
                    f"Outliers ({len(result.outliers)})"])
    root = loaded.dataset.root
    with tabs[0]:
        items = [(i["file"], label_issue_text(i), i["suggested"])
                 for i in result.label_issues]
        _gallery("label", items, loaded, choices, root)
    with tabs[1]:
        _groups(result, loaded, choices, root)
    with tabs[2]:
        items = [(o["file"], outlier_text(o), None) for o in result.outliers]
        _gallery("outlier", items, loaded, choices, root)


def label_issue_text(issue: dict[str, Any]) -> str:
    """'Labelled **daisy**, looks like **roses**: only 3% like daisy' (score = 1 - that)."""
    like_given = max(0.0, 1.0 - float(issue["score"]))
    given, suggested = md(issue["given"]), md(issue["suggested"])
    return (f"Labelled **{given}**, looks like **{suggested}**: only "
            f"{like_given:.0%} like {given} to a model that never saw it")


def outlier_text(outlier: dict[str, Any]) -> str:
    """'**daisy** · 2.3 times farther from its class than its photos usually are'."""
    return (f"**{md(outlier['label'])}** · {float(outlier['score']):.1f} times farther from the "
            "other photos of its class than they usually are")


def _show_key(section: str) -> str:
    return f"{SHOW_PREFIX}.{section}"


def _gallery(section: str, items: list[tuple[str, str, str | None]],
             loaded: state.LoadedDataset, choices: dict[str, dict[str, str]],
             root: Any) -> None:
    if not items:
        st.success("Nothing found here.", icon=":material/check_circle:")
        return
    shown = paging.shown_count(_show_key(section), len(items))
    cols = st.columns(4)
    for n, (name, caption, suggested) in enumerate(items[:shown]):
        with cols[n % 4]:
            _photo(root / name, f"{md(name)}  \n{caption}")
            _choice(section, name, suggested, loaded, choices)
    paging.show_more(_show_key(section), len(items))


def _groups(result: audit.AuditResult, loaded: state.LoadedDataset,
            choices: dict[str, dict[str, str]], root: Any) -> None:
    groups = result.near_duplicates
    if not groups:
        st.success("No near-duplicates.", icon=":material/check_circle:")
        return
    labels = dict(zip(audit.relative_names(loaded.dataset.index, root),
                      loaded.dataset.index["label"]))
    for g, group in enumerate(groups[:paging.shown_count(_show_key("groups"), len(groups))]):
        tags = [t for t, on in (("label conflict", group["cross_class"]),
                                ("would leak between splits", group["spans_splits"])) if on]
        st.markdown(f"**Group {g + 1}** · {group['similarity']:.0%} alike"
                    + (f" · :orange[{', '.join(tags)}]" if tags else ""))
        cols = st.columns(max(4, min(len(group["files"]), 6)))
        for n, name in enumerate(group["files"]):
            with cols[n % len(cols)]:
                _photo(root / name, f"{md(name)}  \n**{md(labels.get(name, '?'))}**")
                _choice(f"group{g}", name, None, loaded, choices)
    paging.show_more(_show_key("groups"), len(groups), noun="groups")


def _photo(path: Any, caption: str) -> None:
    try:
        st.image(resources.thumbnail(str(path), THUMB, resources.file_stamp(path)),
                 width=THUMB)
    except Exception:
        st.caption(":material/broken_image: cannot show this photo")
    st.markdown(caption)


def _choice(section: str, name: str, suggested: str | None, loaded: state.LoadedDataset,
            choices: dict[str, dict[str, str]]) -> None:
    options = [audit_choices.KEEP, audit_choices.EXCLUDE]
    if suggested is not None:
        options.append(audit_choices.MOVE)
    current = choices.get(name, {}).get("action", audit_choices.KEEP)
    if current not in options:
        current = audit_choices.KEEP
    key = choice_key(section, name)
    st.radio("Choice", options, index=options.index(current), key=key, horizontal=True,
             format_func=ACTION_TEXT.get, label_visibility="collapsed",
             on_change=_save_choice, args=(loaded, name, key, suggested))


def _save_choice(loaded: state.LoadedDataset, name: str, key: str,
                 suggested: str | None) -> None:
    action = st.session_state[key]
    with show_user_errors("Cannot save this choice:"):
        audit_choices.set_choice(loaded.dataset, name, action,
                                 suggested if action == audit_choices.MOVE else None,
                                 home=resources.home())


def split_with_audit(loaded: state.LoadedDataset, config: SplitConfig,
                     result: audit.AuditResult | None,
                     choices: dict[str, dict[str, str]]) -> pd.DataFrame | None:
    """The split of the corrected dataset keeping near-duplicate groups together (None after
    showing why it cannot be split)."""
    with show_user_errors("Cannot split this dataset:") as outcome:
        split = audit_choices.audited_split(loaded.dataset, config, result, choices)
    return None if outcome.failed else split


def use_audited(loaded: state.LoadedDataset, config: SplitConfig) -> state.CurrentDataset | None:
    """Chooses the dataset for training as the Dataset page shows it: the audit's choices
    applied and its near-duplicate groups kept together (None after showing why not)."""
    home = resources.home()
    result = audit.load_audit(loaded.dataset, home)
    choices = audit_choices.load_choices(loaded.dataset, home)
    split = split_with_audit(loaded, config, result, choices)
    if split is None:
        return None
    return state.use_dataset(loaded, split, config, audit_choices.audit_record(result, choices))
