"""Process-wide resources (job manager, device facts) and cached plain data for the pages."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import streamlit as st

from core.config import studio_home
from core.jobs.manager import JobManager

if TYPE_CHECKING:
    from core.device import DeviceInfo

THUMBNAIL_SIZE = 112


def home() -> Path:
    """The studio home ($TL_STUDIO_HOME or ~/.tl-studio); ConfigError when not writable."""
    return studio_home()


@st.cache_resource(show_spinner=False)
def _job_manager_for(home_path: str, ray_address: str) -> JobManager:
    from core.jobs import kinds as job_kinds
    from core.jobs.executors import make_executor

    manager = JobManager(Path(home_path), kinds=job_kinds.resumable_kinds(),
                         executor=make_executor(home_path, address=ray_address))
    manager.resume()  # the queued jobs of a server that stopped run now; running ones: interrupted
    return manager


def job_manager() -> JobManager:
    """The server's one job manager for the current studio home, shared by all sessions.

    Its jobs run on the Ray cluster configured by $TL_STUDIO_RAY_ADDRESS or `[studio]
    ray_address` in secrets.toml, else in this server process.
    """
    from core.jobs.executors import ray_address
    from ui import roles

    return _job_manager_for(str(home()), ray_address(roles.secrets()))


@st.cache_resource(show_spinner="Looking for a GPU...")
def device_info() -> DeviceInfo:
    """What TensorFlow sees on this machine, detected once per server process."""
    from core import device

    return device.detect()


@st.cache_data(show_spinner=False, max_entries=4000)
def thumbnail(path: str, size: int = THUMBNAIL_SIZE, modified_ns: int = 0) -> np.ndarray:
    """A small upright RGB copy of one image (aspect kept), as uint8 pixels.

    Decoded by core.data.images (EXIF orientation, colour modes); modified_ns is part of the cache
    key, so an edited file gets a fresh thumbnail. Raises ImageError or OSError when the file
    cannot be read.
    """
    from PIL import Image

    from core.data import images

    with Image.open(path) as stored:
        if stored.format == "JPEG":
            stored.draft("RGB", (2 * size, 2 * size))  # decode big JPEGs at a reduced scale
        picture = images.open_rgb(stored, max_pixels=None, min_side=1)
    picture.thumbnail((size, size), Image.Resampling.BILINEAR)
    return np.asarray(picture, dtype=np.uint8)


def file_stamp(path: str | Path) -> int:
    """Modification time of a file in nanoseconds, 0 when it cannot be read."""
    try:
        return Path(path).stat().st_mtime_ns
    except OSError:
        return 0
