"""Uploads take the server's memory: each uploader is limited to what it needs, and an upload
is released as soon as it is read.

Streamlit keeps every uploaded file in the server's memory until its session ends (minutes
after the tab closed). Photo uploaders are limited to PHOTO_MB per file (the browser refuses
more; the server checks again, as a visitor's own client could send more up to
server.maxUploadSize). A dataset zip, the one large upload, is released once it was extracted
to the disk, and so are the builder's photos once saved.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import streamlit as st

from ui.text import md

log = logging.getLogger(__name__)

PHOTO_MB = 20  # a phone photo is 2-8 MB; a 50-megapixel JPEG stays under 20 MB
PHOTOS_AT_ONCE = 20  # Predict: more at once would only queue behind each other


def within_limit(files: Iterable[Any], limit_mb: int = PHOTO_MB,
                 at_most: int | None = None) -> list[Any]:
    """The files at most limit_mb each (and the first at_most); each other one is refused
    with a message and released."""
    kept = []
    for upload in files:
        if upload is None:
            continue
        size = int(getattr(upload, "size", 0) or 0)
        if size > limit_mb * 2**20:
            st.error(f"{md(upload.name)}: {size / 2**20:.0f} MB, over the limit of {limit_mb} "
                     "MB per photo; use a smaller copy.", icon=":material/block:")
            release(upload)
        elif at_most is not None and len(kept) >= at_most:
            st.error(f"{md(upload.name)}: not read, over {at_most} photos at once; "
                     "predict the others next.", icon=":material/block:")
        else:
            kept.append(upload)
    return kept


def release(upload: Any) -> None:
    """Drops an uploaded file from the server's memory (Streamlit's upload store); the
    widget then reads as empty on the next run. Never raises."""
    file_id = getattr(upload, "file_id", None)
    if not file_id:
        return
    try:
        from streamlit.runtime import Runtime
        from streamlit.runtime.scriptrunner import get_script_run_ctx

        ctx = get_script_run_ctx()
        if ctx is None or not Runtime.exists():
            return
        Runtime.instance().uploaded_file_mgr.remove_file(ctx.session_id, file_id)
    except Exception:
        log.debug("Could not release upload %s", file_id, exc_info=True)
