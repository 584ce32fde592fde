"""Entry point: registers the pages (ui/nav.py), sets the page config and sidebar, runs one."""

from __future__ import annotations

import streamlit as st

from ui import keras_state, links, nav, resources, roles, upload_store
from ui.errors import show_user_errors

upload_store.install()  # once per server: a budget per session in Streamlit's upload store
keras_state.keep_across_reruns()  # before this run ends, when Streamlit would clear it
demo = links.demo_requested()  # ?view=demo: Predict's demo view, no menu, no sidebar
admin = roles.is_admin()
page = nav.navigation(admin=admin, hidden=demo)
st.set_page_config(page_title=nav.browser_title(page), page_icon=":material/school:",
                   layout="wide", initial_sidebar_state="collapsed" if demo else "auto")
if demo and page.url_path != nav.DEMO_PAGE_PATH:
    links.leave_demo()  # only Predict has a demo view
if not demo:
    nav.sidebar()
roles.show_refusal()
with show_user_errors("The studio cannot keep its work:") as checking:
    resources.home()  # every page reads or writes the studio home
if checking.failed:
    st.stop()
if nav.admin_only(page) and not admin:
    roles.admin_page_or_stop(nav.title_of(page))  # a typed address lands here too
page.run()
