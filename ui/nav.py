"""The app's pages: one table registers each page for st.navigation, the menu and links."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import streamlit as st

from ui import roles

if TYPE_CHECKING:
    from streamlit.navigation.page import StreamlitPage  # what st.navigation returns

APP_NAME = "Transfer Learning Studio"


@dataclass(frozen=True)
class AppPage:
    """One page of the app.

    Attributes:
        file: The page's script, relative to streamlit_app.py (also what links name).
        title: Name in the menu, in links and in the browser tab.
        icon: Material icon shown in the menu.
        purpose: What the page is for, shown on the Home page.
        url_path: The page's URL path ("" for Home, the app's root). Kept stable: bookmarks
            and the browser tests open pages by it.
        admin: The page changes the studio: when the studio has viewers (ui.roles), only an
            admin may open it.
    """

    file: str
    title: str
    icon: str
    purpose: str
    url_path: str
    admin: bool = False


HOME = "app_pages/0_Home.py"
DATASET = "app_pages/1_Dataset.py"
TRAIN = "app_pages/2_Train.py"
EVALUATE = "app_pages/3_Evaluate.py"
PREDICT = "app_pages/4_Predict.py"
COMPARE = "app_pages/5_Compare.py"
EXPORT = "app_pages/6_Export.py"

DEMO_PAGE_PATH = "Predict"  # the page with a demo view (?view=demo, ui.demo)

# The menu, in the order of use. Home comes first: it is the app's root URL.
PAGES: tuple[AppPage, ...] = (
    AppPage(HOME, "Home", ":material/home:", "What the studio does and recent runs", ""),
    AppPage(DATASET, "Dataset", ":material/photo_library:",
            "Bring photos: a zip of class folders, a folder on the server, or a new "
            "dataset built here",
            "Dataset", admin=True),
    AppPage(TRAIN, "Train", ":material/model_training:",
            "Pick a pretrained base and options, train and watch it learn", "Train",
            admin=True),
    AppPage(EVALUATE, "Evaluate", ":material/insights:",
            "Accuracy, per-class table, confusion matrix, mistakes; download the model",
            "Evaluate"),
    AppPage(PREDICT, "Predict", ":material/image_search:",
            "Upload a photo or take one, get the label", "Predict"),
    AppPage(COMPARE, "Compare", ":material/compare:",
            "All runs side by side; overlay curves; delete", "Compare"),
    AppPage(EXPORT, "Export", ":material/ios_share:",
            "Every deployable format (Keras, SavedModel, TFLite), each reloaded and measured",
            "Export", admin=True),
)


ADMIN_SECTION = "For admins (sign in)"
LOCK_ICON = ":material/lock:"


def navigation(*, admin: bool = True, hidden: bool = False) -> StreamlitPage:
    """Registers every page of PAGES with st.navigation (menu in the sidebar).

    Every page stays registered, so a link or typed address always lands; for a viewer the
    admin pages are listed apart with a lock, and stop with the sign-in form
    (streamlit_app.py).

    Args:
        admin: The visitor may change the studio (ui.roles.is_admin).
        hidden: No menu (Predict's demo view).

    Returns:
        The page this run shows; the entry script calls its run().
    """
    def page(p: AppPage) -> st.Page:
        icon = LOCK_ICON if p.admin and not admin else p.icon
        return st.Page(p.file, title=p.title, icon=icon, url_path=p.url_path or None,
                       default=not p.url_path)

    if admin:
        menu: list[st.Page] | dict[str, list[st.Page]] = [page(p) for p in PAGES]
    else:
        menu = {"": [page(p) for p in PAGES if not p.admin],
                ADMIN_SECTION: [page(p) for p in PAGES if p.admin]}
    return st.navigation(menu, position="hidden" if hidden else "sidebar")


def url_path(file: str) -> str:
    """The URL path of a page of PAGES named by its file (EVALUATE -> "Evaluate")."""
    return next(p.url_path for p in PAGES if p.file == file)


def admin_only(page: StreamlitPage) -> bool:
    """True when the page shown is one of PAGES marked admin."""
    return any(p.admin and p.url_path == page.url_path for p in PAGES)


def title_of(page: StreamlitPage) -> str:
    """The page's title in PAGES."""
    return next((p.title for p in PAGES if p.url_path == page.url_path), APP_NAME)


def browser_title(page: StreamlitPage) -> str:
    """The browser tab's title for a page: "Train · Transfer Learning Studio"."""
    return APP_NAME if page.url_path == "" else f"{page.title} · {APP_NAME}"


def page_link(page: str, label: str, icon: str | None = None, help: str | None = None) -> None:
    """st.page_link to a page of PAGES, named by its file (DATASET, TRAIN, ...)."""
    st.page_link(page, label=label, icon=icon, help=help)


def sidebar() -> None:
    """What the sidebar shows under the menu of pages."""
    with st.sidebar:
        st.caption(f"**{APP_NAME}** · transfer learning on your own photos")
    roles.sidebar_status()


def start_here() -> None:
    """Links to every page but Home, each with what it is for, in the order of use."""
    for number, page in enumerate(PAGES[1:], start=1):
        page_link(page.file, f"{number}. {page.title}: {page.purpose}", page.icon)
