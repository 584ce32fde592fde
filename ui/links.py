"""Links to a run: `?run=<run id>` in the address selects it, `&view=demo` opens Predict's demo.

The address is read and written here only. A value from the address is only ever compared
with the ids of the store's runs (core.runs.store.is_run_id first): it is never used as a path.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import streamlit as st

from core.runs.store import RunSummary, is_run_id
from core.status import BROKEN
from ui import nav
from ui.text import md

RUN = "run"
VIEW = "view"
DEMO = "demo"
LIVE = "live"  # &live=1: the demo view opens on the live camera (ui.live_camera)
COPY_PREFIX = "tl_link_copy"  # + ".<picker key>": the "Copy link" popover


def address_run() -> str | None:
    """The raw ?run= value of the address, None when absent (first one when repeated)."""
    values = st.query_params.get_all(RUN)
    return values[0] if values else None


def refusal(value: str, usable: Sequence[RunSummary],
            known: Sequence[RunSummary]) -> str | None:
    """Why the address's run cannot be shown, None when it names a usable run.

    The message never repeats a value that is not a run id (it could be a path).

    Args:
        value: The ?run= value.
        usable: The runs this page can show.
        known: Every run of the store (to tell "unfinished" from "unknown").
    """
    if not is_run_id(value):
        return ("The link does not name a run: a run id has only letters, digits, '.', '_' "
                "and '-' (like 20261203-101500-ab12cd). Pick a run below.")
    if any(s.run_id == value for s in usable):
        return None
    summary = next((s for s in known if s.run_id == value), None)
    if summary is None:
        return (f"There is no run {value} in this studio: it was deleted, or the link comes "
                "from another studio. Pick a run below.")
    why = ("its files are damaged" if summary.status == BROKEN
           else f"it is {summary.status}, not completed")
    return f"Run {value} cannot be opened here: {why}. Pick a completed run below."


def requested_run(usable: Sequence[RunSummary], known: Sequence[RunSummary]) -> str | None:
    """The run the address asks for, when it is one of usable; else None (refusal shown).

    Args:
        usable: The runs this page can show.
        known: Every run of the store.
    """
    value = address_run()
    if value is None:
        return None
    problem = refusal(value, usable, known)
    if problem is not None:
        st.error(md(problem), icon=":material/link_off:")
        return None
    return value


def follow(key: str) -> None:
    """on_change of a run picker: the address names the run just chosen."""
    chosen = st.session_state.get(key)
    if chosen:
        st.query_params[RUN] = chosen


def show_in_address(run_id: str) -> None:
    """Puts ?run=<run id> in the address (other parameters kept), when it is not there."""
    if address_run() != run_id:
        st.query_params[RUN] = run_id


def demo_requested() -> bool:
    """True when the address has view=demo."""
    return st.query_params.get(VIEW) == DEMO


OPEN_COLUMN = "Open"


def evaluate_link(summary: RunSummary) -> str | None:
    """A relative address of the Evaluate page on a usable run (for a table's link column)."""
    if not summary.usable:
        return None
    return f"{nav.url_path(nav.EVALUATE)}?{RUN}={quote(summary.run_id, safe='')}"


def open_column() -> Any:
    """The column config of OPEN_COLUMN: each usable run's link to its evaluation."""
    return st.column_config.LinkColumn(
        OPEN_COLUMN, display_text="Evaluate",
        help="Opens the run on the Evaluate page; the address can be shared.")


def leave_demo() -> None:
    """Drops view=demo from the address and reruns (pages other than Predict have no demo)."""
    del st.query_params[VIEW]
    st.rerun()


def link(run_id: str, *, demo: bool = False, live: bool = False) -> str:
    """The address of this page showing a run: absolute when the browser told its URL.

    Args:
        run_id: The run.
        demo: Predict's demo view.
        live: The demo view opened on the live camera (live=1).
    """
    query = (f"?{RUN}={quote(run_id, safe='')}" + (f"&{VIEW}={DEMO}" if demo else "")
             + (f"&{LIVE}=1" if demo and live else ""))
    base = st.context.url
    return f"{base}{query}" if base else query


def _shared(address: str, caption: str) -> None:
    """An address another device can open, as text to copy and as a QR code."""
    from ui import share

    reachable = share.share_address(address) if "://" in address else address
    st.caption(caption)
    st.code(reachable, language=None, wrap_lines=True)
    if "://" in reachable:
        st.image(share.qr_png(reachable), width=220, caption="Scan with a phone's camera")


def copy_link(run_id: str, key: str, *, demo: bool = False) -> None:
    """A "Copy link" popover with the run's address (and Predict's live demo address).

    Streamlit has no clipboard API: the address is shown in a code block, whose copy button
    copies it, and as a QR code a phone can scan off a projector. The address is one another
    device can open (ui.share: this machine's network address in place of localhost, or the
    configured public address).

    Args:
        run_id: The run shown.
        key: Unique on the page (the picker's key).
        demo: Also offer the demo view's address, opening on the live camera.
    """
    from ui import share

    with st.popover("Copy link", icon=":material/link:", key=f"{COPY_PREFIX}.{key}",
                    help="An address that opens this page on this run."):
        _shared(link(run_id), "This page on this run:")
        if demo:
            _shared(link(run_id, demo=True, live=True),
                    "Demo view on the live camera (for a projector or a phone; the model "
                    "runs on the phone):")
        listening = share.listen_address()
        local_only = (share.listens_on_loopback_only(listening)
                      and not os.environ.get(share.PUBLIC_URL_ENV))
        if local_only:
            st.warning(
                f"**Only this computer can open these links.** The studio listens on "
                f"{md(listening)} (server.address), which is this computer alone, so a phone or "
                "another computer that opens the link or scans the code gets no answer. Stop "
                "the studio and start it again with `--server.address 0.0.0.0`, e.g. "
                "`streamlit run streamlit_app.py --server.address 0.0.0.0`, and for the "
                "camera on phones serve it over https too (README, \"Showing a run to "
                "others\").", icon=":material/wifi_off:")
        if share.camera_needs_https(share.share_address(link(run_id))):
            st.warning("Phones allow the camera only on https addresses: start the studio "
                       "with a certificate (README, \"Showing a run to others\"). Photo "
                       "uploads work either way.", icon=":material/lock:")
        st.caption(("" if local_only else
                    "Others on your network open it when the studio listens on the network "
                    "(start it with --server.address 0.0.0.0). ")
                   + "When the studio has an admin password, they are viewers: they can "
                   "look, not change.")
