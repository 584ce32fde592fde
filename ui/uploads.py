"""Uploads take the server's memory: each uploader is limited to what it needs, and an upload
is released as soon as it is read.

Streamlit keeps every uploaded file in the server's memory until its session ends (minutes
after the tab closed). Photo uploaders are limited to PHOTO_MB per file (the browser refuses
more; the server checks again, as a visitor's own client could send more up to
server.maxUploadSize). A dataset zip, the one large upload, is released once it was extracted
to the disk, and so are the builder's photos once saved. Predict, its demo view and
Evaluate's "photos of other things" read each photo once (read_once): they keep what they show
(the answer, a small copy of the photo) in the session and release the upload. What one session
may hold at all is bounded by the upload store (ui.upload_store).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import streamlit as st

from ui.text import md

log = logging.getLogger(__name__)

PHOTO_MB = 20  # a phone photo is 2-8 MB; a 50-megapixel JPEG stays under 20 MB
PHOTOS_AT_ONCE = 20  # Predict: more at once would only queue behind each other
KEPT = "tl_kept_uploads"  # {uploader key: {file id: what the page kept of the photo}}


def within_limit(files: Iterable[Any], limit_mb: int = PHOTO_MB,
                 at_most: int | None = None, key: str | None = None) -> list[Any]:
    """The files at most limit_mb each (and the first at_most); each other one is refused
    with a message and released (from the uploader `key`: see release)."""
    kept = []
    for upload in files:
        if upload is None:
            continue
        size = int(getattr(upload, "size", 0) or 0)
        if size > limit_mb * 2**20:
            st.error(f"{md(upload.name)}: {size / 2**20:.0f} MB, over the limit of {limit_mb} "
                     "MB per photo; use a smaller copy.", icon=":material/block:")
            release(upload, key)
        elif at_most is not None and len(kept) >= at_most:
            st.error(f"{md(upload.name)}: not read, over {at_most} photos at once; remove "
                     "some and add it again.", icon=":material/block:")
            release(upload, key)
        else:
            kept.append(upload)
    return kept


def _empty(upload: Any) -> None:
    try:
        upload.seek(0)
        upload.truncate(0)
    except (AttributeError, OSError, ValueError, BufferError):
        log.debug("Could not empty upload %s", getattr(upload, "file_id", "?"), exc_info=True)


def _kept_by_streamlit(key: str | None, file_id: str) -> list[Any]:
    """The session's own UploadedFile of a file (the widget returns a deep copy of it)."""
    if not key:
        return []
    try:
        value = st.session_state[key]
    except Exception:  # noqa: BLE001 - no such widget (any more): nothing is kept
        return []
    files = value if isinstance(value, list) else [value]
    return [f for f in files if getattr(f, "file_id", None) == file_id]


def release(upload: Any, key: str | None = None) -> None:
    """Drops an uploaded file from the server's memory once the page has read it: from
    Streamlit's upload store (the widget then reads as empty on the next run), and the content
    of the UploadedFile the page got and of the one Streamlit keeps in the session's widget
    state until the next run (the widget `key`). Never raises."""
    file_id = getattr(upload, "file_id", None)
    if not file_id:
        return
    for copy in [upload, *_kept_by_streamlit(key, file_id)]:
        _empty(copy)
    try:
        from streamlit.runtime.scriptrunner import get_script_run_ctx

        ctx = get_script_run_ctx()
        if ctx is None:
            return
        # The session's own store: the server's (Runtime.uploaded_file_mgr), or AppTest's.
        ctx.uploaded_file_mgr.remove_file(ctx.session_id, file_id)
    except Exception:
        log.debug("Could not release upload %s", file_id, exc_info=True)


def listed(key: str) -> list[str]:
    """The file ids the uploader or camera `key` lists in the browser, in its order: read
    ones (released) too, which the widget itself no longer returns."""
    try:
        value = st.session_state[key]
    except KeyError:
        return []
    files = value if isinstance(value, list) else [value]
    return [str(f.file_id) for f in files if getattr(f, "file_id", None)]


def read_once(key: str, files: Iterable[Any], read: Callable[[list[Any]], list[Any] | None],
              refresh: Callable[[list[Any]], list[Any]] | None = None) -> list[Any]:
    """What the page kept of each photo the widget `key` lists, in the widget's order.

    Each new upload among `files` is read once: read(new files) returns one small thing to
    keep per file (an answer, a thumbnail), or None when reading failed (nothing is kept,
    nothing released: the next run tries again). The uploads are then released from the
    server's memory; the kept things stay in the session for as long as the browser lists
    the photo (at most what the widget lists), so reruns keep showing them. refresh(kept
    things), when given, brings them up to date (another model answers) and is kept.
    """
    files = [f for f in files if f is not None and getattr(f, "file_id", None)]
    kept: dict[str, Any] = dict(st.session_state.get(KEPT, {}).get(key, {}))
    new = [f for f in files if f.file_id not in kept]
    if new:
        results = read(new)
        if results is None:
            return [kept[i] for i in [f.file_id for f in files] if i in kept]
        kept.update({f.file_id: result for f, result in zip(new, results, strict=True)})
    for upload in files:
        release(upload, key)
    shown = listed(key) or [f.file_id for f in files]
    kept = {i: kept[i] for i in shown if i in kept}  # photos removed in the browser go
    if refresh is not None and kept:
        kept = dict(zip(kept, refresh(list(kept.values())), strict=True))
    st.session_state.setdefault(KEPT, {})[key] = kept
    return list(kept.values())


def has_kept(key: str) -> bool:
    """True when the page keeps something of widget `key`'s photos."""
    return bool(st.session_state.get(KEPT, {}).get(key))


def forget(key: str) -> None:
    """Drops what the page kept of widget `key`'s photos (its uploader is gone or new)."""
    st.session_state.get(KEPT, {}).pop(key, None)
