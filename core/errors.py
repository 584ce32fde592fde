"""Errors meant for users: each message says what went wrong and what to do."""

from __future__ import annotations


class AppError(Exception):
    """Base of every error a user can fix; pages show these with st.error."""


class ConfigError(AppError):
    """An option is out of range or inconsistent with another option."""


class DatasetError(AppError):
    """The dataset as a whole cannot be used (bad zip, too few classes or images...)."""


class ImageError(AppError):
    """One image cannot be decoded or is unsuitable (too small, too large, not an image)."""


class WeightsUnavailableError(AppError):
    """Pretrained weights are neither cached nor downloadable, or the given file is unusable."""


class RunNotFoundError(AppError):
    """No run with that id or folder exists in the studio home."""


class JobError(AppError):
    """A background job cannot be started or controlled as asked."""


class Cancelled(Exception):
    """Raised inside long work when should_stop() asked for a cooperative cancel.

    Not an AppError: it is control flow, caught by training, which marks the run cancelled.
    """


class RunNotUsableError(RunNotFoundError):
    """The run exists but cannot be used as asked: not completed, or broken (damaged files)."""


class DiskFullError(AppError, OSError):
    """The disk a file was being written to is full (ENOSPC) or over its quota; the message
    says which disk, how much is free and about how much was needed. Also an OSError, so
    code that handles write failures keeps handling it."""
