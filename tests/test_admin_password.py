"""The admin password cannot be tried without limit, and an empty one opens nothing."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from app_helpers import page, texts
from streamlit.testing.v1 import AppTest

from core import access
from ui import roles


@pytest.mark.parametrize("password", ["", " ", "   \t "])
def test_an_empty_password_makes_nobody_admin_and_says_why(password: str) -> None:
    rule = access.settings_from({"studio": {"admin_password": password}})
    assert rule.mode == access.LOCKED and "empty" in (rule.problem or "")
    assert not access.is_admin(rule, signed_in=True)
    assert not access.password_matches(rule, password)
    assert access.settings_from({"studio": {}}).mode == access.OPEN  # no line: open


def test_the_page_says_why_nobody_is_admin(studio_home: Path) -> None:
    at = page("2_Train")
    at.secrets["studio"] = {"admin_password": "  "}
    at.run()
    assert not at.exception, at.exception
    assert any("empty" in e for e in texts(at.error))
    assert not at.text_input  # no password form: no password can make an admin


def test_the_throttle_doubles_the_wait_after_free_tries() -> None:
    now = [0.0]
    throttle = access.SignInThrottle(clock=lambda: now[0])
    keys = ["session:a", "address:1.2.3.4"]
    waits = [throttle.failed(keys) for _ in range(6)]
    assert waits == [0.0, 0.0, 2.0, 4.0, 8.0, 16.0]
    assert throttle.wait(keys) == 16.0
    assert throttle.wait(["session:b", "address:1.2.3.4"]) == 16.0  # another tab, same client
    assert throttle.wait(["session:c", "address:5.6.7.8"]) == 0.0
    now[0] = 16.0
    assert throttle.wait(keys) == 0.0
    throttle.succeeded(["session:a"])
    assert throttle.failures("session:a") == 0 and throttle.failures("address:1.2.3.4") == 6
    for _ in range(40):
        throttle.failed(["session:z"])
    assert throttle.wait(["session:z"]) <= access.SignInThrottle.MAX_WAIT


def sign_in(at: AppTest, password: str) -> AppTest:
    at.main.text_input(key=f"{roles.PASSWORD}.page").input(password)
    next(b for b in at.main.button if b.label == "Sign in").click()
    return at.run()


def test_repeated_wrong_passwords_are_slowed_down_and_logged(
        studio_home: Path, caplog: pytest.LogCaptureFixture) -> None:
    at = page("2_Train")
    at.secrets["studio"] = {"admin_password": "right one"}
    at.run()
    caplog.set_level(logging.WARNING)
    for _ in range(access.SignInThrottle.FREE_TRIES):
        sign_in(at, "guess")
    assert any("Wait 2 s" in e for e in texts(at.error))
    sign_in(at, "right one")  # during the wait even the right password is not compared
    assert any("Too many wrong passwords" in e for e in texts(at.error))
    assert "Wrong admin password" in caplog.text
