"""Links to a run (?run=<id>) on Evaluate, Predict and Export, and Predict's demo view."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from app_helpers import all_text, page, png_bytes, texts, train_small_run
from streamlit.testing.v1 import AppTest

from core.config import TrainConfig
from core.runs.store import RunStore
from core.training.result import TrainResult
from ui import demo, links, live_camera, share, state
from ui import export as ui_export

LABELS = ["cats", "dogs", "fish"]
OLDER = "20200101-000000-mobilenet_v2-older"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    return train_small_run(tmp_path_factory, LABELS)


@pytest.fixture
def home(trained: TrainResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The trained run, an older copy of it, and a failed run."""
    home = tmp_path / "home"
    shutil.copytree(trained.run_dir.parent, home / "runs")
    shutil.copytree(trained.run_dir, home / "runs" / OLDER)
    failed = RunStore(home).create(TrainConfig(weights=None), LABELS, None,
                                   {"name": "pets.zip"}, device={"kind": "cpu"})
    failed.set_status("failed", "Out of memory.")
    monkeypatch.setenv("TL_STUDIO_HOME", str(home))
    return home


def with_run(name: str, value: str | None, **params: str) -> AppTest:
    at = page(name)
    if value is not None:
        at.query_params[links.RUN] = value
    at.query_params.update(params)
    return at.run()


@pytest.mark.parametrize("name,key", [("3_Evaluate", state.EVAL_RUN),
                                      ("4_Predict", state.PREDICT_RUN),
                                      ("6_Export", ui_export.RUN_KEY)])
def test_the_address_selects_the_run_and_the_picker_writes_it(
    home: Path, trained: TrainResult, name: str, key: str
) -> None:
    at = with_run(name, None)
    assert not at.exception, at.exception
    assert at.selectbox(key=key).value == trained.run_id  # the newest, put in the address
    assert at.query_params[links.RUN] == trained.run_id

    at = with_run(name, OLDER)
    assert not at.exception, at.exception
    assert at.selectbox(key=key).value == OLDER
    assert not at.error
    assert any(OLDER in c.value for c in at.code)  # "Copy link" shows the address

    at.selectbox(key=key).set_value(trained.run_id).run()
    assert not at.exception, at.exception
    assert at.query_params[links.RUN] == trained.run_id
    assert at.selectbox(key=key).value == trained.run_id


def test_the_link_is_the_browsers_address_with_the_run(home: Path) -> None:
    at = page("4_Predict")
    at.context["url"] = "http://192.168.1.20:8501/Predict"
    at.query_params[links.RUN] = OLDER
    at.run()
    shown = [c.value for c in at.code]
    assert f"http://192.168.1.20:8501/Predict?run={OLDER}" in shown
    assert f"http://192.168.1.20:8501/Predict?run={OLDER}&view=demo&live=1" in shown
    assert len(at.get("image")) == 2  # each address also as a QR code


def test_the_shared_link_names_this_machine_not_localhost(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(share, "lan_address", lambda: "192.168.1.7")
    at = page("4_Predict")
    at.context["url"] = "http://localhost:8501/Predict"
    at.query_params[links.RUN] = OLDER
    at.run()
    shown = [c.value for c in at.code]
    assert f"http://192.168.1.7:8501/Predict?run={OLDER}&view=demo&live=1" in shown
    assert not any("localhost" in c for c in shown)
    assert any("only on https" in w for w in texts(at.warning))

    monkeypatch.setenv(share.PUBLIC_URL_ENV, "https://studio.school.example:8443/")
    at.run()
    shown = [c.value for c in at.code]
    assert f"https://studio.school.example:8443/Predict?run={OLDER}" in shown
    assert not any("only on https" in w for w in texts(at.warning))


def test_a_qr_code_holds_the_address() -> None:
    import segno

    png = share.qr_png.__wrapped__("https://192.168.1.7:8501/Predict?run=x&view=demo&live=1")
    assert png.startswith(b"\x89PNG")
    assert segno.make("https://192.168.1.7:8501/Predict?run=x&view=demo&live=1",
                      error="m").version <= 10  # small enough to scan off a projector


@pytest.mark.parametrize("value", ["../etc", "/tmp/x", "..", "a/../../b", "run id with spaces"])
def test_anything_but_a_run_id_is_refused_without_echoing_it(
    home: Path, trained: TrainResult, value: str
) -> None:
    at = with_run("3_Evaluate", value)
    assert not at.exception, at.exception
    errors = texts(at.error)
    assert len(errors) == 1 and "The link does not name a run" in errors[0]
    assert value not in errors[0] and str(home) not in errors[0]
    assert at.selectbox(key=state.EVAL_RUN).value == trained.run_id  # a run is still shown


def test_an_unknown_or_unfinished_run_is_refused_by_name(home: Path) -> None:
    at = with_run("4_Predict", "20991231-000000-nope")
    assert not at.exception, at.exception
    assert any("There is no run 20991231-000000-nope in this studio" in e for e in
               texts(at.error))
    assert not any(str(home) in e for e in texts(at.error))
    failed = next(s.run_id for s in RunStore(home).list() if s.status == "failed")
    at = with_run("3_Evaluate", failed)
    assert any(f"Run {failed} cannot be opened here: it is failed" in e for e in
               texts(at.error))


def test_demo_view_shows_only_the_photo_the_answer_and_its_heatmap(
    home: Path, trained: TrainResult
) -> None:
    at = with_run("4_Predict", OLDER, view=links.DEMO)
    assert not at.exception, at.exception
    assert not at.title and not at.selectbox and not at.slider
    assert [t.label for t in at.toggle] == [live_camera.LABEL]
    assert not at.toggle[0].value  # the live camera only when asked for (live=1 or the switch)
    assert not at.sidebar.children  # no menu, no sidebar content
    assert [c.key for c in at.camera_input] == [demo.CAMERA]
    assert [u.key for u in at.file_uploader] == [demo.UPLOAD]

    at.file_uploader(key=demo.UPLOAD).upload("dog.png", png_bytes(1, 500), "image/png")
    at.run()
    assert not at.exception, at.exception
    big = next(m.value for m in at.markdown if "classes it knows</div>" in m.value)
    assert " sure" not in big  # a high probability is the closest class, not certainty
    assert any(f">{label}</div>" in big for label in LABELS)
    assert "font-size" in big
    (heatmap,) = at.get("image")  # the heatmap over the photo
    assert heatmap.captions[0].startswith("Where the model saw")
    assert "Red: where the model found most evidence" in all_text(at)
    assert not at.selectbox and not at.get("plotly_chart")


def test_demo_view_refuses_a_bad_run_and_other_pages_drop_it(home: Path) -> None:
    at = with_run("4_Predict", "/etc/passwd", view=links.DEMO)
    assert not at.exception, at.exception
    assert any("does not name a run" in e for e in texts(at.error))
    assert not at.camera_input
    # Not a dead end: the newest model's demo and the Predict page's picker (issue 27).
    ways = {link.proto.label: link.proto for link in at.get("page_link")}
    newest = next(label for label in ways if label.startswith("Open the demo of the newest"))
    assert "Choose a model on the Predict page" in ways
    assert ways[newest].page == "Predict"
    at = with_run("3_Evaluate", OLDER, view=links.DEMO)
    assert not at.exception, at.exception
    assert links.VIEW not in at.query_params
    assert at.selectbox(key=state.EVAL_RUN).value == OLDER


def test_compare_and_home_link_each_finished_run_to_its_evaluation(
    home: Path, trained: TrainResult
) -> None:
    for name in ("5_Compare", "0_Home"):
        at = page(name).run()
        assert not at.exception, at.exception
        table = at.dataframe[0].value
        opened = set(table[links.OPEN_COLUMN].dropna())
        assert {f"Evaluate?run={OLDER}", f"Evaluate?run={trained.run_id}"} <= opened
        failed = table[table["Status"] == "failed"]
        assert len(failed) and failed[links.OPEN_COLUMN].isna().all()


@pytest.fixture
def server_address() -> Iterator[Callable[[str | None], None]]:
    """Sets Streamlit's server.address for the test (as --server.address would); restored."""
    from streamlit import config

    before = config.get_option("server.address")

    def set_to(value: str | None) -> None:
        config.set_option("server.address", value)

    yield set_to
    config.set_option("server.address", before)


@pytest.mark.parametrize("address", ["127.0.0.1", "localhost", "::1"])
def test_copy_link_says_a_studio_on_loopback_cannot_be_reached(
    home: Path, monkeypatch: pytest.MonkeyPatch, server_address: Any, address: str
) -> None:
    monkeypatch.setattr(share, "lan_address", lambda: "192.168.1.7")
    monkeypatch.delenv(share.PUBLIC_URL_ENV, raising=False)
    server_address(address)
    at = page("4_Predict")
    at.context["url"] = "http://localhost:8501/Predict"
    at.query_params[links.RUN] = OLDER
    at.run()
    assert not at.exception, at.exception
    (said,) = [w for w in texts(at.warning) if "Only this computer" in w]
    said = said.replace("\\", "")  # markdown escapes, not shown
    assert address in said and "--server.address 0.0.0.0" in said and "https" in said


@pytest.mark.parametrize("address", [None, "0.0.0.0", "192.168.1.7"])
def test_copy_link_is_quiet_when_the_studio_listens_on_the_network(
    home: Path, monkeypatch: pytest.MonkeyPatch, server_address: Any, address: str | None
) -> None:
    monkeypatch.setattr(share, "lan_address", lambda: "192.168.1.7")
    monkeypatch.delenv(share.PUBLIC_URL_ENV, raising=False)
    server_address(address)  # unset: Streamlit listens on every interface
    at = page("4_Predict")
    at.context["url"] = "http://localhost:8501/Predict"
    at.query_params[links.RUN] = OLDER
    at.run()
    assert not at.exception, at.exception
    assert not [w for w in texts(at.warning) if "Only this computer" in w]
    assert any("192.168.1.7:8501" in c.value for c in at.code)


def test_a_public_address_behind_a_proxy_on_loopback_is_not_warned_about(
    home: Path, monkeypatch: pytest.MonkeyPatch, server_address: Any
) -> None:
    monkeypatch.setenv(share.PUBLIC_URL_ENV, "https://studio.school.example/")
    server_address("127.0.0.1")  # a reverse proxy on this machine reaches it
    at = page("4_Predict")
    at.context["url"] = "http://localhost:8501/Predict"
    at.query_params[links.RUN] = OLDER
    at.run()
    assert not at.exception, at.exception
    assert not [w for w in texts(at.warning) if "Only this computer" in w]


def test_what_listens_on_loopback_only() -> None:
    assert share.listens_on_loopback_only("127.0.0.1")
    assert share.listens_on_loopback_only("127.0.1.1")
    assert share.listens_on_loopback_only("localhost")
    assert share.listens_on_loopback_only("[::1]")
    for address in (None, "", "0.0.0.0", "::", "192.168.1.7", "studio.local",
                    "unix:///run/studio.sock"):
        assert not share.listens_on_loopback_only(address), address
