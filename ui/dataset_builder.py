"""The Dataset page's builder: name a dataset, add classes, add photos from files or the camera."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import streamlit as st

from core.config import MIN_IMAGES_PER_CLASS, SplitConfig, TrainConfig
from core.data.saved_parts import RECOMMENDED_PER_CLASS, SavedDataset
from core.data.store import DatasetStore
from core.errors import AppError, DatasetError
from ui import dataset as ui_dataset
from ui import nav, paging, resources, roles, state
from ui import uploads as ui_uploads
from ui.errors import show_user_errors
from ui.text import md

THUMBNAILS_SHOWN = paging.PAGE
THUMBNAIL_COLUMNS = 6
ACTION = "change datasets"


def store() -> DatasetStore:
    """The saved datasets of this server's studio home."""
    return DatasetStore(resources.home())


def origin(dataset_id: str) -> str:
    """LoadedDataset.source of a saved dataset opened on this page."""
    return f"saved:{dataset_id}"


def say(kind: str, text: str) -> None:
    """Keeps a message from a callback for the next run ("success", "warning", "error").

    text is plain text (names as typed); show_messages() escapes it.
    """
    st.session_state.setdefault(state.SAVED_MESSAGES, []).append((kind, text))


def show_messages() -> None:
    """Shows (once) the messages callbacks kept."""
    icons = {"success": ":material/check_circle:", "warning": ":material/warning:",
             "error": ":material/error:"}
    for kind, text in st.session_state.pop(state.SAVED_MESSAGES, []):
        getattr(st, kind)(md(text), icon=icons.get(kind))


def act(fn: Callable[..., Any], *args: Any) -> bool:
    """Runs a change for an admin; a refusal or AppError becomes a message. True: done."""
    try:
        roles.require(ACTION)
        fn(*args)
    except AppError as exc:
        say("error", str(exc))
        return False
    return True


def forget_loaded(dataset_id: str) -> None:
    """Drops this session's loaded copy of a dataset that just changed (it is read again)."""
    loaded = state.loaded_dataset()
    if loaded is not None and loaded.source == origin(dataset_id):
        st.session_state.pop(state.LOADED, None)


def edit(dataset_id: str) -> None:
    """on_click: opens a saved dataset in the builder."""
    st.session_state[state.BUILD_DATASET] = dataset_id
    st.session_state[state.SOURCE_KIND] = state.SOURCE_BUILD


# ----------------------------------------------------------------------------- callbacks


def _create() -> None:
    name = st.session_state.get(state.BUILD_NAME, "")
    saved: list[SavedDataset] = []
    if act(lambda: saved.append(store().create(name))):
        st.session_state[state.BUILD_DATASET] = saved[0].id
        say("success", f"Dataset '{saved[0].name}' saved. Add a class for each kind of photo.")


def _close() -> None:
    st.session_state.pop(state.BUILD_DATASET, None)


def _add_class(dataset_id: str) -> None:
    name = st.session_state.get(state.BUILD_NEW_CLASS, "")
    if act(store().add_class, dataset_id, name):
        st.session_state[state.BUILD_NEW_CLASS] = ""
        forget_loaded(dataset_id)


def _rename_class(dataset_id: str, cls: str, key: str) -> None:
    if act(store().rename_class, dataset_id, cls, st.session_state.get(key, "")):
        st.session_state[key] = ""
        forget_loaded(dataset_id)


def _remove_photo(dataset_id: str, cls: str, file_name: str) -> None:
    if act(store().remove_photo, dataset_id, cls, file_name):
        forget_loaded(dataset_id)


def _remove_class(dataset_id: str, cls: str) -> None:
    st.session_state.pop(state.BUILD_REMOVE_CLASS_ASK, None)
    if act(store().remove_class, dataset_id, cls):
        say("success", f"Class '{cls}' and its photos were removed.")
        forget_loaded(dataset_id)


def _ask_remove_class(dataset_id: str, cls: str) -> None:
    st.session_state[state.BUILD_REMOVE_CLASS_ASK] = (dataset_id, cls)


def _cancel_remove_class() -> None:
    st.session_state.pop(state.BUILD_REMOVE_CLASS_ASK, None)


# ----------------------------------------------------------------------------- the page part


def builder() -> None:
    """The "New dataset" choice: create a dataset, or edit the one opened in the builder."""
    show_messages()
    dataset_id = st.session_state.get(state.BUILD_DATASET)
    saved = None
    if dataset_id:
        try:
            saved = store().get(dataset_id)
        except DatasetError:
            st.session_state.pop(state.BUILD_DATASET, None)  # deleted meanwhile
    if saved is None:
        st.subheader("New dataset")
        st.caption("No zip? Build the dataset here: name it, add a class for each kind of "
                   "photo, then add photos to each class from files or the camera. Every "
                   "photo is saved on the server the moment it is added.")
        st.text_input("Dataset name", key=state.BUILD_NAME, placeholder="my-pets",
                      max_chars=100)
        st.button("Create dataset", key=state.BUILD_CREATE, icon=":material/add:",
                  on_click=_create, type="primary")
        return
    _editor(saved)


def _editor(saved: SavedDataset) -> None:
    head, close = st.columns([5, 1])
    head.subheader(f"Dataset: {md(saved.name)}")
    close.button("Close", key=state.BUILD_CLOSE, on_click=_close, icon=":material/close:")
    st.caption(f"Each class needs at least {MIN_IMAGES_PER_CLASS} photos "
               f"({RECOMMENDED_PER_CLASS} or more recommended); a classifier needs 2 classes "
               "or more. Photos are checked as they are added: damaged, tiny, gigantic and "
               "duplicate photos are refused with the reason.")
    # A form: Enter in the name field presses "Add class".
    with st.form(key=f"{state.BUILD_NEW_CLASS}.form", border=False):
        left, right = st.columns([3, 1], vertical_alignment="bottom")
        left.text_input("New class", key=state.BUILD_NEW_CLASS, placeholder="cats",
                        max_chars=100, help="Type a name and press Enter.")
        right.form_submit_button("Add class", key=state.BUILD_ADD_CLASS, icon=":material/add:",
                                 on_click=_add_class, args=(saved.id,))
    for cls in saved.classes:
        _class_section(saved.id, cls)
    _footer(store().get(saved.id))


def uploader_key(dataset_id: str, cls: str) -> str:
    """The class's file uploader key: a new one (an empty uploader) once its photos are added."""
    key = f"{dataset_id}.{cls}"
    generation = st.session_state.get(state.BUILD_UPLOADER_GENERATION, {}).get(key, 0)
    return state.BUILD_FILES + key + (f".{generation}" if generation else "")


def _add_files(dataset_id: str, cls: str, photos: list[Any]) -> bool:
    """Adds the photos not added before in this session (a rerun re-sends the same files).

    Returns:
        Whether new files were handled (their outcome is kept as messages for the next run).
    """
    seen: set[str] = st.session_state.setdefault(state.BUILD_SEEN, set())
    key = uploader_key(dataset_id, cls)
    new = [f for f in ui_uploads.within_limit(photos, key=key)
           if f"{dataset_id}.{cls}.{f.file_id}" not in seen]
    if not new:
        return False
    with show_user_errors(f"Cannot add photos to {cls}:") as outcome:
        roles.require(ACTION)
        result = store().add_photos(dataset_id, cls, [(f.name, f.getvalue()) for f in new])
    if outcome.failed:
        return False
    seen.update(f"{dataset_id}.{cls}.{f.file_id}" for f in new)
    for f in new:  # saved on the disk (or refused): the server's copy is not needed any more
        ui_uploads.release(f, key)
    forget_loaded(dataset_id)
    if result.added:
        say("success", f"Added {len(result.added)} photo{'s' * (len(result.added) != 1)} to "
                       f"{md(cls)}.")
    for item in result.duplicates:
        say("warning", f"{md(item['file'])}: a duplicate, {md(item['reason'])}; not added again.")
    if result.problem:
        say("error", md(result.problem))
    for item in result.refused:
        say("error", f"{md(item['file'])}: refused, {md(item['reason'])}.")
    return True


def _class_section(dataset_id: str, cls: str) -> None:
    key = f"{dataset_id}.{cls}"
    with st.container(border=True):
        head = st.empty()
        files = st.file_uploader(f"Add photos to {md(cls)}", accept_multiple_files=True,
                                 max_upload_size=ui_uploads.PHOTO_MB,
                                 key=uploader_key(dataset_id, cls))
        shot = None
        if st.toggle("Use the camera", key=state.BUILD_CAMERA_ON + key):
            shot = st.camera_input(f"Take a photo of {md(cls)}", key=state.BUILD_CAMERA + key)
        if _add_files(dataset_id, cls, [*(files or []), shot]) and files:
            # The thumbnails below are the truth: the uploader starts empty again (a chip
            # left in it, and its X, would look like a photo one can still remove there).
            generations = st.session_state.setdefault(state.BUILD_UPLOADER_GENERATION, {})
            generations[key] = generations.get(key, 0) + 1
            st.rerun()
        photos = store().photos(dataset_id, cls)
        short = max(0, MIN_IMAGES_PER_CLASS - len(photos))
        need = f" · add {short} more" if short else ""
        head.markdown(f"#### {md(cls)} · {len(photos)} photo{'s' * (len(photos) != 1)}{need}")
        _thumbnails(dataset_id, cls, photos)
        _class_actions(dataset_id, cls, key, len(photos))


def _thumbnails(dataset_id: str, cls: str, photos: list[Path]) -> None:
    """The newest photos first shown, each with its Remove button; "Show more" for the rest."""
    key = f"{state.BUILD_SHOWN}{dataset_id}.{cls}"
    count = paging.shown_count(key, len(photos), THUMBNAILS_SHOWN)
    shown = photos[-count:]
    for start in range(0, len(shown), THUMBNAIL_COLUMNS):
        cols = st.columns(THUMBNAIL_COLUMNS)
        for col, path in zip(cols, shown[start:start + THUMBNAIL_COLUMNS], strict=False):
            with col:
                try:
                    st.image(resources.thumbnail(str(path), resources.THUMBNAIL_SIZE,
                                                 resources.file_stamp(path)), width="stretch")
                except (AppError, OSError) as exc:
                    st.caption(f"cannot show ({md(exc)})")
                st.button("Remove", key=f"{state.BUILD_REMOVE_PHOTO}{dataset_id}.{cls}."
                                        f"{path.name}", icon=":material/delete:",
                          on_click=_remove_photo, args=(dataset_id, cls, path.name))
    paging.show_more(key, len(photos), THUMBNAILS_SHOWN, noun="photos")


def _class_actions(dataset_id: str, cls: str, key: str, count: int) -> None:
    left, middle, right = st.columns([3, 1, 1], vertical_alignment="bottom")
    left.text_input(f"Rename {md(cls)}", key=state.BUILD_RENAME + key, placeholder="new name",
                    max_chars=100)
    middle.button("Rename", key=state.BUILD_RENAME_GO + key, on_click=_rename_class,
                  args=(dataset_id, cls, state.BUILD_RENAME + key))
    right.button("Remove class", key=state.BUILD_REMOVE_CLASS + key,
                 on_click=_ask_remove_class, args=(dataset_id, cls))
    if st.session_state.get(state.BUILD_REMOVE_CLASS_ASK) == (dataset_id, cls):
        st.warning(f"Remove class '{md(cls)}' and its {count} photos? This cannot be undone.",
                   icon=":material/warning:")
        yes, no = st.columns(2)
        yes.button("Yes, remove it", key=state.BUILD_REMOVE_CLASS_YES, type="primary",
                   on_click=_remove_class, args=(dataset_id, cls))
        no.button("Cancel", key=state.BUILD_REMOVE_CLASS_NO, on_click=_cancel_remove_class)


def _footer(saved: SavedDataset) -> None:
    """What is missing, then "Use this dataset" and "Train now with the defaults"."""
    if len(saved.classes) < 2:
        st.info("Add at least two classes.", icon=":material/info:")
    for cls in saved.short_classes():
        st.info(f"Class '{md(cls)}' needs {MIN_IMAGES_PER_CLASS - saved.classes[cls]} more "
                f"photo(s).", icon=":material/info:")
    ready = saved.ready()
    if ready and min(saved.classes.values()) < RECOMMENDED_PER_CLASS:
        st.caption(f"Ready. {RECOMMENDED_PER_CLASS} or more photos per class give a more "
                   "reliable model.")
    loaded = state.loaded_dataset()
    in_view = loaded is not None and loaded.source == origin(saved.id)
    use, now = st.columns(2)
    if use.button("Check the photos and split", key=state.BUILD_USE,
                  disabled=not ready or in_view, type="primary", icon=":material/fact_check:",
                  help="Checks every photo, then shows the report, the audit and the split "
                       "below, with the Use this dataset button."):
        ui_dataset.ingest_with_progress(saved.root, saved.name, origin(saved.id),
                                        within=ui_dataset.confinement(saved.root))
    elif in_view:
        st.caption("Its report and split are below.")
    if now.button("Train now with the defaults", key=state.BUILD_TRAIN_NOW, disabled=not ready,
                  icon=":material/rocket_launch:",
                  help="Default split and training options; the run appears on the Train page."):
        train_now(saved)


def train_now(saved: SavedDataset) -> str | None:
    """Loads, splits (default split, with the audit's choices as the Dataset page shows
    them) and starts training with the default options."""
    from ui import audit as ui_audit
    from ui import train_form

    loaded = ui_dataset.ingest_with_progress(saved.root, saved.name, origin(saved.id),
                                             within=ui_dataset.confinement(saved.root))
    if loaded is None:
        return None
    if not loaded.dataset.report.usable:
        st.error("This dataset cannot be used yet: " + md(" ".join(loaded.dataset.report.errors)),
                 icon=":material/block:")
        return None
    current = ui_audit.use_audited(loaded, SplitConfig())
    if current is None:
        return None
    job_id = train_form.start(current, TrainConfig())
    if job_id is not None:
        st.success(f"Training on {md(saved.name)} started.", icon=":material/rocket_launch:")
        nav.page_link(nav.TRAIN, "Watch it on the Train page", ":material/arrow_forward:")
    return job_id
