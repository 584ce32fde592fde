"""Navigation between pages: the sidebar menu and links that skip pages not installed."""

from __future__ import annotations

from pathlib import Path

import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

HOME = "streamlit_app.py"
DATASET = "pages/1_Dataset.py"
TRAIN = "pages/2_Train.py"
EVALUATE = "pages/3_Evaluate.py"
PREDICT = "pages/4_Predict.py"
COMPARE = "pages/5_Compare.py"
EXPORT = "pages/6_Export.py"

# (page file, label, icon, what it is for)
PAGES: tuple[tuple[str, str, str, str], ...] = (
    (HOME, "Home", ":material/home:", "What the studio does and recent runs"),
    (DATASET, "Dataset", ":material/photo_library:",
     "Upload a zip of class folders (or name a server folder), check it, split it"),
    (TRAIN, "Train", ":material/model_training:",
     "Pick a pretrained base and options, train and watch it learn"),
    (EVALUATE, "Evaluate", ":material/insights:",
     "Accuracy, per-class table, confusion matrix, mistakes; download the model"),
    (PREDICT, "Predict", ":material/image_search:", "Upload a photo or take one, get the label"),
    (COMPARE, "Compare", ":material/compare:", "All runs side by side; overlay curves; delete"),
    (EXPORT, "Export", ":material/ios_share:",
     "Every deployable format (Keras, SavedModel, TFLite), each reloaded and measured"),
)


def main_dir() -> Path:
    """Folder of the app's main script (page paths are relative to it)."""
    ctx = get_script_run_ctx()
    if ctx is not None and ctx.main_script_path:
        return Path(ctx.main_script_path).parent
    return Path.cwd()


def available(page: str) -> bool:
    """True when the page file exists next to the main script."""
    return (main_dir() / page).is_file()


def page_link(page: str, label: str, icon: str | None = None, help: str | None = None) -> bool:
    """st.page_link to a page of this app; draws nothing (returns False) when it is absent."""
    if not available(page):
        return False
    st.page_link(page, label=label, icon=icon, help=help)
    return True


def sidebar() -> None:
    """The app's menu in the sidebar, with readable page names."""
    with st.sidebar:
        st.markdown("**Transfer Learning Studio**")
        for page, label, icon, purpose in PAGES:
            page_link(page, label, icon, purpose)


def start_here() -> None:
    """Links to every page but Home, each with what it is for, in the order of use."""
    for number, (page, label, icon, purpose) in enumerate(PAGES[1:], start=1):
        page_link(page, f"{number}. {label}: {purpose}", icon)
