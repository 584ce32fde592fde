"""Long lists shown a page at a time: how many items are shown, and the "Show N more" button."""

from __future__ import annotations

import streamlit as st

PAGE = 24  # items added by each "Show more"


def shown_count(key: str, total: int, page: int = PAGE) -> int:
    """How many of total items to show: one page at first, a page more per press."""
    return min(total, int(st.session_state.get(key, page)))


def show_more(key: str, total: int, page: int = PAGE, noun: str = "") -> None:
    """"Showing n of total" and a button that shows the next page (nothing when all show)."""
    shown = shown_count(key, total, page)
    if shown >= total:
        return
    st.caption(f"Showing {shown} of {total}{f' {noun}' if noun else ''}.")
    st.button(f"Show {min(page, total - shown)} more", key=f"{key}.more",
              on_click=lambda: st.session_state.__setitem__(key, shown + page))
