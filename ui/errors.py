"""Shows errors meant for users with st.error; everything else propagates as a bug."""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType

import streamlit as st

from core.errors import AppError
from ui.text import md


@dataclass
class UserErrors:
    """What show_user_errors() caught: the AppError, or None when the block succeeded."""

    error: AppError | None = None

    @property
    def failed(self) -> bool:
        """True when the block raised an AppError (already shown with st.error)."""
        return self.error is not None


class show_user_errors:
    """Context manager: an AppError raised inside is shown with st.error and swallowed.

    Other exceptions (bugs) propagate, and so do Streamlit's own control-flow exceptions
    (st.stop, st.rerun). Example:

        with show_user_errors() as outcome:
            dataset = datasets.ingest(path)
        if outcome.failed:
            st.stop()
    """

    def __init__(self, prefix: str = "") -> None:
        """Args: prefix: Optional plain words put before the message ("Could not load:")."""
        self._prefix = prefix
        self._outcome = UserErrors()

    def __enter__(self) -> UserErrors:
        return self._outcome

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if exc is None or not isinstance(exc, AppError):
            return False
        self._outcome.error = exc
        message = str(exc) or type(exc).__name__
        # Core's messages are plain text that quotes names: shown as typed, never as Markdown.
        st.error(f"{md(self._prefix)} {md(message)}".strip(), icon=":material/error:")
        return True
