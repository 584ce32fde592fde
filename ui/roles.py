"""Viewers and admins on the pages: the rule from secrets.toml, sign-in, and checks at actions.

The decision is core.access's; this module reads Streamlit's secrets, session and login for
it. Actions that change the studio (delete a run, cancel a job, start training, an export or
an audit, load a dataset) call require() or allowed() themselves, so hiding a button is never
the only guard.
"""

from __future__ import annotations

import logging
import math
import secrets as secrets_module
from typing import Any

import streamlit as st

from core import access
from core.access import AccessSettings
from ui.text import md

log = logging.getLogger(__name__)

SIGNED_IN = "tl_admin_signed_in"      # core.access.sign_in_token once this session gave the
                                      # admin password (a new password signs sessions out)
REFUSED = "tl_access_refused"         # a refusal from a callback, shown on the next run
PASSWORD = "tl_admin_password"
SIGN_IN_FORM = "tl_admin_sign_in"
SIGN_OUT = "tl_admin_sign_out"
LOG_IN = "tl_admin_log_in"
LOG_OUT = "tl_admin_log_out"
SESSION_KEY = "tl_sign_in_session"  # a random id: the per-session count of wrong passwords
NO_SECRETS = "no-secrets-found"  # Streamlit's error_id when there is no secrets.toml at all


def secrets() -> dict[str, Any]:
    """The app's secrets as a plain dict; empty when there is no secrets.toml.

    A secrets file that exists but cannot be read gives {"studio": None}, which core.access
    turns into LOCKED: a damaged file must not open the studio to everyone.
    """
    try:
        return st.secrets.to_dict()
    except FileNotFoundError as exc:  # StreamlitSecretNotFoundError
        if getattr(exc, "error_id", None) == NO_SECRETS:
            return {}
        return {"studio": None}


def settings() -> AccessSettings:
    """The admin rule of this app (core.access.settings_from of its secrets)."""
    return access.settings_from(secrets())


def current_email() -> str | None:
    """The e-mail address of the visitor's OpenID Connect login, None when not logged in."""
    try:
        if not st.user.is_logged_in:
            return None
        email = st.user.email
    except (AttributeError, KeyError):
        return None
    return str(email) if email else None


def _signed_in(rule: AccessSettings) -> bool:
    return access.signed_in_with(rule, st.session_state.get(SIGNED_IN))


def is_admin(rule: AccessSettings | None = None) -> bool:
    """Whether this session may change the studio."""
    rule = rule or settings()
    return access.is_admin(rule, signed_in=_signed_in(rule),
                           email=current_email() if rule.mode == access.LOGIN else None)


def require(action: str) -> None:
    """Raises core.access.AccessDenied (an AppError) unless this session is an admin's.

    Args:
        action: What is asked, for the message: "delete runs", "start training"...
    """
    rule = settings()
    access.require_admin(rule, action, signed_in=_signed_in(rule),
                         email=current_email() if rule.mode == access.LOGIN else None)


def allowed(action: str) -> bool:
    """For widget callbacks: True for an admin; else keeps the refusal for show_refusal()."""
    try:
        require(action)
    except access.AccessDenied as exc:
        st.session_state[REFUSED] = str(exc)
        return False
    return True


def show_refusal() -> None:
    """Shows (once) a refusal a callback kept."""
    message = st.session_state.pop(REFUSED, None)
    if message:
        st.error(md(message), icon=":material/lock:")


def cancel_job(job_id: str) -> None:
    """on_click of every Cancel button: cancels a background job, for admins only."""
    if allowed("cancel jobs"):
        from ui import resources

        resources.job_manager().cancel(job_id)


@st.cache_resource(show_spinner=False)
def throttle() -> access.SignInThrottle:
    """The server's one record of wrong admin passwords, shared by every session."""
    return access.SignInThrottle()


def _client_keys() -> list[str]:
    """Who is trying: this session, and the client's address when the server knows it."""
    session = st.session_state.setdefault(SESSION_KEY, secrets_module.token_hex(8))
    keys = [f"session:{session}"]
    address = getattr(st.context, "ip_address", None)
    if address:
        keys.append(f"address:{address}")
    return keys


def _sign_in(rule: AccessSettings, key: str) -> None:
    given = st.session_state.get(key) or ""
    st.session_state[key] = ""
    keys = _client_keys()
    wait = throttle().wait(keys)
    if wait > 0:  # not even compared: a guess during the wait tells nothing
        st.session_state[REFUSED] = (f"Too many wrong passwords: wait {math.ceil(wait)} s "
                                     "before the next try.")
        log.warning("Admin sign-in refused during its wait (%s)", ", ".join(keys))
        return
    if access.password_matches(rule, str(given)):
        throttle().succeeded(keys[:1])
        st.session_state[SIGNED_IN] = access.sign_in_token(rule)
        return
    wait = throttle().failed(keys)
    log.warning("Wrong admin password (%s); %d wrong in this session", ", ".join(keys),
                throttle().failures(keys[0]))
    st.session_state[REFUSED] = "Wrong password: try again, or ask the studio's owner." + (
        f" Wait {math.ceil(wait)} s before the next try." if wait > 0 else "")


def _sign_out() -> None:
    st.session_state.pop(SIGNED_IN, None)


def sign_in_form(rule: AccessSettings | None = None, place: str = "page") -> None:
    """The way to become admin in this mode: a password form, or the login button.

    Args:
        rule: The app's rule (read when None).
        place: "page" or "sidebar": keys the widgets, as both may be shown at once.
    """
    rule = rule or settings()
    if rule.mode == access.PASSWORD:
        key = f"{PASSWORD}.{place}"
        with st.form(f"{SIGN_IN_FORM}.{place}", border=False):
            st.text_input("Admin password", type="password", key=key)
            st.form_submit_button("Sign in", icon=":material/login:", on_click=_sign_in,
                                  args=(rule, key))
    elif rule.mode == access.LOGIN:
        email = current_email()
        if email is None:
            if st.button("Log in", key=f"{LOG_IN}.{place}", icon=":material/login:"):
                st.login()
        else:
            st.caption(f"Logged in as {md(email)}, which is not an admin's address.")
            if st.button("Log out", key=f"{LOG_OUT}.{place}", icon=":material/logout:"):
                st.logout()
    elif rule.mode == access.LOCKED:
        st.error(f"The studio's access settings cannot be read: {md(rule.problem)} Fix "
                 ".streamlit/secrets.toml and restart the app.", icon=":material/lock:")


def sidebar_status() -> None:
    """In the sidebar: who you are (viewer or admin) and how to sign in or out."""
    rule = settings()
    if not rule.restricted:
        return
    with st.sidebar:
        if is_admin(rule):
            who = current_email() if rule.mode == access.LOGIN else None
            st.caption(":material/shield_person: Admin" + (f" · {md(who)}" if who else ""))
            if rule.mode == access.PASSWORD:
                st.button("Sign out", key=SIGN_OUT, icon=":material/logout:",
                          on_click=_sign_out)
            else:
                if st.button("Log out", key=LOG_OUT, icon=":material/logout:"):
                    st.logout()
            return
        st.caption(":material/visibility: Viewer: you can look at runs, try models and "
                   "download them; changing the studio needs an admin.")
        with st.expander("Admin sign-in", icon=":material/lock:"):
            sign_in_form(rule, "sidebar")


def admin_page_or_stop(title: str) -> None:
    """Stops a page meant for admins, with the way to sign in, when the visitor is a viewer.

    Args:
        title: The page's title, for the message.
    """
    rule = settings()
    if is_admin(rule):
        return
    st.title(title)
    st.info(f"The {title} page changes the studio, so it is for admins only. Viewers can "
            "look at runs on Evaluate and Compare and try models on Predict.",
            icon=":material/lock:")
    sign_in_form(rule)
    st.stop()
