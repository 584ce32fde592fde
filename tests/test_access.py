"""core.access: who is admin given the app's secrets (open, password, login, locked)."""

from __future__ import annotations

import pytest

from core import access
from core.access import AccessDenied, AccessSettings, settings_from
from core.runs.store import is_run_id


def test_no_settings_is_open_and_everyone_is_admin() -> None:
    for secrets in (None, {}, {"studio": {}}):  # an empty password locks (issue 28)
        rule = settings_from(secrets)
        assert rule.mode == access.OPEN and not rule.restricted
        assert access.is_admin(rule)
        access.require_admin(rule, "delete runs")  # does not raise


def test_password_mode_needs_the_password_compared_exactly() -> None:
    rule = settings_from({"studio": {"admin_password": "s3cret é"}})
    assert rule.mode == access.PASSWORD and rule.restricted
    assert "s3cret" not in repr(rule)
    assert access.password_matches(rule, "s3cret é")
    for wrong in ("", "s3cret", "s3cret é ", "S3CRET É"):
        assert not access.password_matches(rule, wrong)
    assert not access.is_admin(rule)
    assert access.is_admin(rule, signed_in=True)
    with pytest.raises(AccessDenied, match="Only an admin can delete runs: sign in"):
        access.require_admin(rule, "delete runs")


def test_a_sign_in_lasts_only_while_the_password_is_the_same() -> None:
    rule = settings_from({"studio": {"admin_password": "one"}})
    token = access.sign_in_token(rule)
    assert "one" not in token
    assert access.signed_in_with(rule, token)
    assert not access.signed_in_with(settings_from({"studio": {"admin_password": "two"}}), token)
    assert not access.signed_in_with(rule, True) and not access.signed_in_with(rule, None)
    assert not access.signed_in_with(settings_from({}), token)


def test_login_mode_decides_by_the_admin_emails_not_the_password() -> None:
    secrets = {"auth": {"redirect_uri": "http://localhost:8501/oauth2callback"},
               "studio": {"admin_password": "ignored", "admin_emails": ["Ada@Example.org"]}}
    rule = settings_from(secrets)
    assert rule.mode == access.LOGIN
    assert access.is_admin(rule, email="ada@example.org")
    assert access.is_admin(rule, email=" ADA@example.org ")
    assert not access.is_admin(rule, email="bob@example.org")
    assert not access.is_admin(rule, email=None)
    assert not access.is_admin(rule, signed_in=True)  # the password does not count here
    assert not access.password_matches(rule, "ignored")
    with pytest.raises(AccessDenied, match="log in with an admin's account"):
        access.require_admin(rule, "cancel jobs", email="bob@example.org")
    # [auth] without admin_emails: nobody is admin (closed, not open).
    assert not access.is_admin(settings_from({"auth": {"x": 1}}), email="ada@example.org")


@pytest.mark.parametrize("secrets", [
    {"studio": None}, {"studio": "oops"}, {"studio": {"admin_password": 1234}},
    {"auth": {"x": 1}, "studio": {"admin_emails": [1, 2]}},
])
def test_settings_that_cannot_be_read_lock_the_studio(secrets: dict) -> None:
    rule = settings_from(secrets)
    assert rule.mode == access.LOCKED and rule.problem
    assert not access.is_admin(rule, signed_in=True, email="a@b.c")
    with pytest.raises(AccessDenied, match="fix its settings"):
        access.require_admin(rule, "export runs")


def test_an_access_denied_is_an_app_error_shown_to_users() -> None:
    from core.errors import AppError

    assert issubclass(AccessDenied, AppError)
    assert AccessSettings().mode == access.OPEN


@pytest.mark.parametrize("text,ok", [
    ("20261203-001122-ab12", True), ("run_1.b", True), ("../etc", False), ("/tmp/x", False),
    ("a/b", False), ("..", False), ("", False), (".hidden", False), ("x" * 201, False),
])
def test_run_ids_are_never_paths(text: str, ok: bool) -> None:
    assert is_run_id(text) is ok
