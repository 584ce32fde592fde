"""Entry point: registers the pages (ui/nav.py), sets the page config and sidebar, runs one."""

from __future__ import annotations

import streamlit as st

from ui import nav

page = nav.navigation()
st.set_page_config(page_title=nav.browser_title(page), page_icon=":material/school:",
                   layout="wide")
nav.sidebar()
page.run()
