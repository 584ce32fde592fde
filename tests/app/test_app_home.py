"""The Home page and moving between pages, driven by Streamlit's AppTest."""

from __future__ import annotations

from pathlib import Path

from conftest import zip_folder
from run_helpers import make_run, tiny_classifier
from streamlit.testing.v1 import AppTest

from core.config import TrainConfig
from core.runs import interval
from core.runs.store import RunStore
from ui import nav, state

REPO = Path(__file__).resolve().parents[2]
HOME_PAGE = str(REPO / "streamlit_app.py")
TIMEOUT = 180  # the first run imports TensorFlow to detect the device


def home() -> AppTest:
    return AppTest.from_file(HOME_PAGE, default_timeout=TIMEOUT).run()


def test_home_explains_the_app_shows_the_device_and_where_to_start(studio_home: Path) -> None:
    at = home()
    assert not at.exception, at.exception
    assert at.title[0].value == "Transfer Learning Studio"
    assert "recognise your own pictures" in at.markdown[0].value
    banner = [*at.info, *at.success]
    assert any(("CPU only" in b.value or "GPU:" in b.value) and "TensorFlow" in b.value
               for b in banner), [b.value for b in banner]
    links = {link.proto.label: link.proto.page for link in at.get("page_link")}
    start = [label for label in links if label.startswith("1. Dataset")]
    assert start and links[start[0]] == "Dataset", links
    assert [page for page in links.values()] == [p.url_path for p in nav.PAGES[1:]]
    assert any("No runs yet" in c.value for c in at.caption)


def test_no_pages_folder_next_to_the_entry_script() -> None:
    """Streamlit runs a file of a folder named pages/ next to the entry script directly for a
    URL naming it, without the entry (menu, page config, home check), until a session has
    run st.navigation; AppTest does so on every run. Page files live in app_pages/."""
    assert not (REPO / "pages").exists()


def test_every_page_file_is_registered_once_with_a_stable_url() -> None:
    files = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "app_pages").glob("*.py"))
    assert sorted(p.file for p in nav.PAGES) == files
    # URL paths are what bookmarks and the browser tests open: Home is the root.
    assert [p.url_path for p in nav.PAGES] == ["", "Dataset", "Train", "Evaluate", "Predict",
                                               "Compare", "Export"]


def test_every_page_runs_under_the_entry_script_with_its_title(studio_home: Path) -> None:
    at = home()
    for page in nav.PAGES:
        at.switch_page(page.file).run()
        assert not at.exception, (page.file, at.exception)
        sidebar = [getattr(e, "value", "") for e in at.sidebar]
        assert any(nav.APP_NAME in str(v) for v in sidebar), (page.file, sidebar)
        title = "Compare runs" if page.title == "Compare" else page.title
        expected = "Transfer Learning Studio" if page.url_path == "" else title
        assert at.title[0].value == expected, page.file


def test_home_lists_recent_runs(studio_home: Path) -> None:
    store = RunStore(studio_home)
    writer = store.create(TrainConfig(weights=None), ["cats", "dogs"], None,
                          {"name": "pets.zip"}, device={"kind": "cpu"})
    writer.set_status("failed", "Out of memory; lower the batch size.")
    at = home()
    assert not at.exception, at.exception
    table = at.dataframe[0].value
    # Runs are named by what tells them apart, not by id; an empty cell is empty, not "None".
    assert table["Run"].tolist()[0].startswith("pets.zip · mobilenet_v2 · ")
    assert table["Status"].tolist() == ["failed"]
    assert table["Test accuracy (95% interval)"].tolist() == [""]
    # No "validation" figure: with the head search it came from photos the head trained on.
    assert not any("val." in c.lower() or "validation" in c.lower() for c in table.columns)


def test_home_shows_test_accuracy_with_its_interval_and_where_to_start(
        studio_home: Path, small_dataset: Path) -> None:
    run = make_run(studio_home, small_dataset, tiny_classifier(3))
    at = home()
    assert not at.exception, at.exception
    table = at.dataframe[0].value
    photos = run.evaluation.num_samples
    assert table["Test accuracy (95% interval)"].tolist() == [
        interval.accuracy_text(run.test_accuracy, photos)]
    assert f"({photos} photos: " in table["Test accuracy (95% interval)"][0]
    # Every way to bring photos is named; the compute device is an admin's detail, folded.
    links = " ".join(link.proto.label for link in at.get("page_link"))
    for way in ("zip", "folder on the server", "new dataset built here"):
        assert way in links, links
    assert [e.label for e in at.expander] == ["Compute device (for admins)"]


def test_dataset_choice_survives_switching_pages(
    studio_home: Path, small_dataset: Path, tmp_path: Path
) -> None:
    at = home()
    at.switch_page("app_pages/1_Dataset.py").run()
    zip_path = zip_folder(small_dataset, tmp_path / "small.zip")
    at.file_uploader(key=state.UPLOAD).upload(zip_path.name, zip_path.read_bytes(),
                                               "application/zip")
    at.run()
    at.number_input(key=f"{state.SPLIT_PREFIX}.seed").set_value(11).run()
    at.button(key=state.USE_DATASET).click().run()
    assert not at.exception, at.exception

    at.switch_page(nav.HOME).run()
    assert not at.exception
    at.switch_page("app_pages/1_Dataset.py").run()
    assert not at.exception, at.exception
    texts = [s.value for s in at.success]
    assert any("In use for training: small.zip" in t for t in texts), texts
    assert any("Report: small.zip" in h.value for h in at.header)
    # split settings are remembered for the whole session
    assert at.number_input(key=f"{state.SPLIT_PREFIX}.seed").value == 11
    assert at.session_state[state.CURRENT].split_config.seed == 11


def test_an_unwritable_home_is_explained_on_every_page(monkeypatch) -> None:
    if not Path("/sys/kernel").is_dir():
        import pytest

        pytest.skip("needs Linux's /sys/kernel as a folder nobody can write to")
    monkeypatch.setenv("TL_STUDIO_HOME", "/sys/kernel")
    at = AppTest.from_file(HOME_PAGE, default_timeout=TIMEOUT).run()
    for page in nav.PAGES:
        at.switch_page(page.file).run()
        assert not at.exception, (page.file, at.exception)
        errors = [e.value for e in at.error]
        assert any("/sys/kernel" in e and "TL_STUDIO_HOME" in e for e in errors), errors


def test_a_page_rerun_leaves_keras_state_of_running_trainings_alone(studio_home: Path) -> None:
    """Streamlit clears Keras' session after every script run; in Keras 3 that resets the
    global state of every thread, a training's included (ui/keras_state.py)."""
    import threading

    import keras
    from keras.src.backend.common import global_state

    policy_seen: list[str] = []
    set_up, rerun_done = threading.Event(), threading.Event()

    def training_thread() -> None:  # as a fine-tuning job on a GPU sets its policy
        keras.mixed_precision.set_global_policy("mixed_float16")
        set_up.set()
        rerun_done.wait(300)
        policy_seen.append(keras.mixed_precision.global_policy().name)
        keras.mixed_precision.set_global_policy("float32")

    global_state.set_global_attribute("tl_studio_probe", "kept")
    job = threading.Thread(target=training_thread)
    job.start()
    set_up.wait(60)
    try:
        at = home()
        at.run()
        assert not at.exception, at.exception
    finally:
        rerun_done.set()
        job.join(60)
    assert policy_seen == ["mixed_float16"]
    assert global_state.get_global_attribute("tl_studio_probe") == "kept"
