"""Widgets built from config field metadata, and user errors shown with st.error (AppTest)."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from ui.widgets import InvalidInput, parse_int_tuple


def train_form_script() -> None:
    import streamlit as st

    from core.config import TrainConfig
    from ui import widgets

    config = widgets.config_form(TrainConfig, key_prefix="t", columns=2)
    st.session_state["built"] = config


def user_error_script() -> None:
    import streamlit as st

    from core.errors import DatasetError
    from ui.errors import show_user_errors

    with show_user_errors("Cannot load:") as outcome:
        raise DatasetError("The zip is damaged; zip the folder again.")
    st.session_state["failed"] = outcome.failed
    st.write("still running")
    if st.session_state.get("bug"):
        with show_user_errors():
            raise ValueError("a bug")


def form() -> AppTest:
    return AppTest.from_function(train_form_script, default_timeout=30).run()


def test_every_field_gets_a_widget_with_label_help_and_bounds() -> None:
    at = form()
    assert not at.exception
    epochs = at.number_input(key="t.epochs")
    assert epochs.label == "Epochs"
    assert (epochs.min, epochs.max, epochs.value) == (1, 500, 30)
    assert "Most passes over the training images" in epochs.help
    assert "(from 1 to 500)" in epochs.help

    dropout = at.slider(key="t.dropout")  # float with a step: slider
    assert (dropout.min, dropout.max, dropout.step, dropout.value) == (0.0, 0.9, 0.05, 0.5)
    patience = at.slider(key="t.early_stopping_patience")  # small int range: slider
    assert (patience.min, patience.max, patience.value) == (0, 100, 5)

    lr = at.number_input(key="t.learning_rate")  # float without a step: number box
    assert (lr.min, lr.max, lr.value) == (1e-6, 1.0, 1e-3)

    class_weights = at.selectbox(key="t.class_weights")
    assert class_weights.options == ["off", "balanced"]
    assert class_weights.value == "off"
    augment = at.selectbox(key="t.augment")
    assert augment.options == ["automatic (when fine-tuning)", "on", "off"]
    assert augment.value == "auto"
    assert at.text_input(key="t.backbone").value == "mobilenet_v2"
    assert at.text_input(key="t.hidden_units").value == ""
    assert at.text_input(key="t.hub_handle").value == ""

    from core.config import TrainConfig

    assert at.session_state["built"] == TrainConfig()


def test_changed_values_build_the_dataclass() -> None:
    at = form()
    at.number_input(key="t.epochs").set_value(3)
    at.selectbox(key="t.class_weights").set_value("balanced")
    at.selectbox(key="t.augment").set_value("off")
    at.text_input(key="t.hidden_units").input("512, 256")
    at.text_input(key="t.weights").input("")
    at.run()
    built = at.session_state["built"]
    assert (built.epochs, built.class_weights, built.augment) == (3, "balanced", "off")
    assert built.hidden_units == (512, 256)
    assert built.weights is None  # an empty optional text means None


def test_unreadable_and_inconsistent_values_are_explained() -> None:
    at = form()
    at.text_input(key="t.hidden_units").input("512, lots").run()
    assert not at.exception
    assert any("whole numbers separated by commas" in e.value for e in at.error)
    assert at.session_state["built"] is None

    at.text_input(key="t.hidden_units").input("").run()
    at.number_input(key="t.fine_tune_layers").set_value(10)
    at.selectbox(key="t.head").set_value("manual")
    at.number_input(key="t.fine_tune_learning_rate").set_value(0.01)
    at.run()
    assert not at.exception
    assert any("too large" in e.value and "tenth" in e.value for e in at.error)
    assert at.session_state["built"] is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", ()), ("256", (256,)), (" 1024, 512 ;256 ", (1024, 512, 256))],
)
def test_parse_int_tuple(text: str, expected: tuple[int, ...]) -> None:
    assert parse_int_tuple(text, "Hidden layers") == expected


def test_parse_int_tuple_rejects_words() -> None:
    assert isinstance(parse_int_tuple("1.5, 2", "Hidden layers"), InvalidInput)


def test_show_user_errors_shows_app_errors_and_lets_bugs_through() -> None:
    at = AppTest.from_function(user_error_script, default_timeout=30).run()
    assert [e.value for e in at.error] == ["Cannot load: The zip is damaged; zip the folder again."]
    assert at.session_state["failed"] is True
    assert [m.value for m in at.markdown] == ["still running"]
    assert not at.exception

    at.session_state["bug"] = True
    at.run()
    assert at.exception  # a bug is not dressed up as a user error
    assert at.exception[0].proto.type == "ValueError"
    assert len(at.error) == 1


def paged_list_script() -> None:
    import streamlit as st

    from ui import paging

    shown = paging.shown_count("items", 30, page=12)
    st.write(f"items 1-{shown}")
    paging.show_more("items", 30, page=12, noun="items")


def test_a_long_list_shows_a_page_more_per_press_until_all_show() -> None:
    at = AppTest.from_function(paged_list_script, default_timeout=30).run()
    assert at.markdown[0].value == "items 1-12"
    assert at.caption[0].value == "Showing 12 of 30 items."
    assert at.button(key="items.more").label == "Show 12 more"
    at.button(key="items.more").click().run()
    assert at.button(key="items.more").label == "Show 6 more"
    at.button(key="items.more").click().run()
    assert at.markdown[0].value == "items 1-30"
    assert not at.button and not at.caption
