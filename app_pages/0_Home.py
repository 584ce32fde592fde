"""Home page: what the studio does, the compute device, recent runs and where to start."""

from __future__ import annotations

import streamlit as st

from ui import home, nav
from ui.errors import show_user_errors

st.title("Transfer Learning Studio")
st.markdown(
    "Teach a computer to recognise your own pictures: give it photos sorted into one folder "
    "per class, and it trains a new classifier on top of a network pretrained on ImageNet.  \n"
    "Then see how well it works, try it on new photos, and compare runs, all in the browser."
)

st.subheader("Where to start")
nav.start_here()

st.subheader("Recent runs")
with show_user_errors("Cannot list the runs:"):
    home.recent_runs()

with show_user_errors("Cannot check the compute device:"):
    home.device_banner()
