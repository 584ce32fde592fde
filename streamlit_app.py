"""Entry point: registers the pages (ui/nav.py), sets the page config and sidebar, runs one."""

from __future__ import annotations

import streamlit as st

from ui import nav, resources
from ui.errors import show_user_errors

page = nav.navigation()
st.set_page_config(page_title=nav.browser_title(page), page_icon=":material/school:",
                   layout="wide")
nav.sidebar()
with show_user_errors("The studio cannot keep its work:") as checking:
    resources.home()  # every page reads or writes the studio home
if checking.failed:
    st.stop()
page.run()
