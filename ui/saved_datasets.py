"""The Dataset page's list of saved datasets: open again, edit, rename, download, delete."""

from __future__ import annotations

import functools

import pandas as pd
import streamlit as st

from core.data.store import SavedDataset
from ui import dataset as ui_dataset
from ui import state
from ui.dataset_builder import act, edit, forget_loaded, origin, say, show_messages, store
from ui.text import md, md_list


def _rename(dataset_id: str) -> None:
    new_name = st.session_state.get(state.SAVED_RENAME, "")
    if act(store().rename, dataset_id, new_name):
        st.session_state[state.SAVED_RENAME] = ""
        st.session_state[state.SAVED_CHOICE] = store().get(dataset_id).name
        say("success", f"Renamed to '{new_name.strip()}'.")


def _ask_delete(dataset_id: str) -> None:
    st.session_state[state.SAVED_DELETE_ASK] = dataset_id


def _cancel_delete() -> None:
    st.session_state.pop(state.SAVED_DELETE_ASK, None)


def _delete(dataset_id: str, name: str) -> None:
    st.session_state.pop(state.SAVED_DELETE_ASK, None)
    if act(functools.partial(store().delete, confirm_runs=True), dataset_id):
        forget_loaded(dataset_id)
        if st.session_state.get(state.BUILD_DATASET) == dataset_id:
            st.session_state.pop(state.BUILD_DATASET, None)
        st.session_state.pop(state.SAVED_CHOICE, None)
        say("success", f"Deleted '{name}'.")


def _table(saved: list[SavedDataset]) -> pd.DataFrame:
    return pd.DataFrame([{
        "dataset": s.name,
        "classes": f"damaged: {s.damaged}" if s.damaged else
        (", ".join(f"{c} ({n})" for c, n in s.classes.items()) or "none yet")
        if s.available else ("its photos are gone: upload the zip again" if s.kind == "upload"
                             else "its folder is gone from the server"),
        "photos": s.photos, "created": s.created.replace("T", " ")[:16], "source": s.source,
        "runs": _runs_text(s.runs),
    } for s in saved])


RUNS_LISTED = 3


def _runs_text(runs: list[str]) -> str:
    """The runs trained on a dataset, newest first: a few ids, then how many more."""
    if not runs:
        return "none"
    more = len(runs) - RUNS_LISTED
    return ", ".join(runs[:RUNS_LISTED]) + (f" and {more} more" if more > 0 else "")


def saved_list() -> None:
    """Every saved dataset, and what can be done with the one chosen."""
    show_messages()
    saved = store().list()
    if not saved:
        st.info("No saved datasets yet. Upload a zip, load a folder on the server, or build "
                "one under \"New dataset\": each is kept here to open again.",
                icon=":material/inventory_2:")
        return
    st.dataframe(_table(saved), hide_index=True, width="stretch")
    names = [s.name for s in saved]
    if st.session_state.get(state.SAVED_CHOICE) not in names:
        st.session_state.pop(state.SAVED_CHOICE, None)
    choice = st.selectbox("Saved dataset", names, key=state.SAVED_CHOICE)
    chosen = next(s for s in saved if s.name == choice)
    if chosen.damaged:  # listed so that it does not vanish without a word; delete only
        st.error(md(f"This saved dataset cannot be opened: {chosen.damaged}"),
                 icon=":material/error:")
        _delete_controls(chosen)
        return
    cols = st.columns(3)
    if not chosen.available:
        again = ("Upload the same zip again to bring them back." if chosen.kind == "upload"
                 else f"Put the folder back at {md(chosen.root)} to bring them back.")
        st.warning(f"The photos of '{md(chosen.name)}' are no longer on the server (moved or "
                   f"deleted outside the studio). {again}", icon=":material/warning:")
    if cols[0].button("Open", key=state.SAVED_OPEN, type="primary", icon=":material/folder_open:",
                      disabled=not chosen.available,
                      help="Checks its photos and shows the report and split below; nothing "
                           "is uploaded again."):
        ui_dataset.ingest_with_progress(chosen.root, chosen.name, origin(chosen.id),
                                        within=ui_dataset.confinement(chosen.root))
    cols[1].button("Add photos, edit classes", key=state.SAVED_EDIT, icon=":material/edit:",
                   on_click=edit, args=(chosen.id,))
    cols[2].download_button("Download zip", key=state.SAVED_DOWNLOAD,
                            data=functools.partial(store().zip_bytes, chosen.id),
                            file_name=f"{chosen.name}.zip", mime="application/zip",
                            icon=":material/download:", on_click="ignore")
    left, right = st.columns([3, 1], vertical_alignment="bottom")
    left.text_input(f"New name for {md(chosen.name)}", key=state.SAVED_RENAME, max_chars=100)
    right.button("Rename", key=state.SAVED_RENAME_GO, on_click=_rename, args=(chosen.id,))
    _delete_controls(chosen)


def _delete_controls(chosen: SavedDataset) -> None:
    st.button("Delete", key=state.SAVED_DELETE, icon=":material/delete:",
              on_click=_ask_delete, args=(chosen.id,))
    if st.session_state.get(state.SAVED_DELETE_ASK) != chosen.id:
        return
    where = ("its photos are deleted from the server" if chosen.kind == "built" else
             "it leaves the list; the zip or folder it came from is kept")
    runs = (f" Runs trained on it: {md_list(chosen.runs)}. They keep their models, so they "
            "still load and predict; galleries that show its photos say they are gone."
            if chosen.runs else " No run was trained on it.")
    st.warning(f"Delete '{md(chosen.name)}'? {where.capitalize()}.{runs}",
               icon=":material/warning:")
    yes, no = st.columns(2)
    yes.button("Yes, delete it", key=state.SAVED_DELETE_YES, type="primary",
               on_click=_delete, args=(chosen.id, chosen.name))
    no.button("Cancel", key=state.SAVED_DELETE_NO, on_click=_cancel_delete)
