"""Who may change the studio: the admin rule read from the app's settings (no Streamlit here).

The app's pages decide with these functions (ui.roles); the command line is not restricted.
Three modes, from the `[studio]` and `[auth]` tables of `.streamlit/secrets.toml`:

- open: neither is set; the local user is the admin (the app as it always was);
- password: `[studio] admin_password = "..."`; visitors are viewers until they give it;
- login: `[auth]` (Streamlit's OpenID Connect login) is set; the signed-in e-mail addresses
  listed in `[studio] admin_emails` are admins, everyone else is a viewer.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from core.errors import AppError

OPEN = "open"
PASSWORD = "password"
LOGIN = "login"
LOCKED = "locked"  # the settings exist but cannot be read: nobody is admin


class AccessDenied(AppError):
    """A viewer asked for something only an admin may do."""


@dataclass(frozen=True)
class AccessSettings:
    """The admin rule of one app.

    Attributes:
        mode: OPEN, PASSWORD, LOGIN or LOCKED.
        password: The admin password (PASSWORD mode), else None.
        admin_emails: Lower-cased e-mail addresses of the admins (LOGIN mode).
        problem: Why the settings could not be read (LOCKED mode), for the admin.
    """

    mode: str = OPEN
    password: str | None = field(default=None, repr=False)
    admin_emails: frozenset[str] = frozenset()
    problem: str | None = None

    @property
    def restricted(self) -> bool:
        """True when some visitors are viewers (every mode but OPEN)."""
        return self.mode != OPEN


def settings_from(secrets: Mapping[str, Any] | None) -> AccessSettings:
    """The admin rule given the app's secrets (st.secrets as a plain mapping).

    Args:
        secrets: Top-level tables of secrets.toml; None or empty when there is none.

    Returns:
        LOGIN when an [auth] table is present, else PASSWORD when [studio] has an
        admin_password, else OPEN. A [studio] table of the wrong shape, or an admin_password
        that is empty or only spaces, gives LOCKED.
    """
    secrets = secrets or {}
    studio = secrets.get("studio", {})
    if not isinstance(studio, Mapping):
        return AccessSettings(LOCKED, problem="[studio] in secrets.toml is not a table.")
    if secrets.get("auth"):
        emails = studio.get("admin_emails", [])
        if isinstance(emails, str):
            emails = [emails]
        if not isinstance(emails, (list, tuple)) or not all(isinstance(e, str) for e in emails):
            return AccessSettings(LOCKED, problem="admin_emails in [studio] must be a list of "
                                                  "e-mail addresses.")
        return AccessSettings(LOGIN, admin_emails=frozenset(
            e.strip().lower() for e in emails if e.strip()))
    password = studio.get("admin_password")
    if password is None:
        return AccessSettings(OPEN)
    if not isinstance(password, str):
        return AccessSettings(LOCKED, problem="admin_password in [studio] must be text "
                                              "(in quotes).")
    if not password.strip():  # "" or spaces: a slip, not a wish to let everyone in
        return AccessSettings(LOCKED, problem="admin_password in [studio] is empty (or only "
                                              "spaces), so nobody is admin. Set a password, "
                                              "or remove the line to let every visitor change "
                                              "the studio.")
    return AccessSettings(PASSWORD, password=password)


def password_matches(settings: AccessSettings, given: str) -> bool:
    """True when given is the admin password (compared in constant time)."""
    if settings.mode != PASSWORD or settings.password is None:
        return False
    return hmac.compare_digest(given.encode("utf-8"), settings.password.encode("utf-8"))


def sign_in_token(settings: AccessSettings) -> str:
    """What a session keeps once it gave the password: a digest of the password itself.

    A session's sign-in counts only while its token equals the current one
    (signed_in_with), so changing admin_password signs every session out.
    """
    secret = (settings.password or "").encode("utf-8")
    return hmac.new(b"tl-studio admin sign-in", secret, hashlib.sha256).hexdigest()


def signed_in_with(settings: AccessSettings, token: object) -> bool:
    """True when a session's token (sign_in_token at its sign-in) is valid for settings."""
    if settings.mode != PASSWORD or not isinstance(token, str):
        return False
    return hmac.compare_digest(token, sign_in_token(settings))


def is_admin(settings: AccessSettings, *, signed_in: bool = False,
             email: str | None = None) -> bool:
    """Whether a visitor may change the studio.

    Args:
        settings: The app's rule (settings_from).
        signed_in: The visitor gave the right password in this session (PASSWORD mode).
        email: The e-mail of the visitor's login, None when not logged in (LOGIN mode).
    """
    if settings.mode == OPEN:
        return True
    if settings.mode == PASSWORD:
        return signed_in
    if settings.mode == LOGIN:
        return email is not None and email.strip().lower() in settings.admin_emails
    return False


def require_admin(settings: AccessSettings, action: str, *, signed_in: bool = False,
                  email: str | None = None) -> None:
    """Raises AccessDenied, saying how to become admin, unless the visitor is one.

    Args:
        settings: The app's rule.
        action: What was asked, e.g. "delete runs".
        signed_in: As for is_admin.
        email: As for is_admin.
    """
    if is_admin(settings, signed_in=signed_in, email=email):
        return
    how = {
        PASSWORD: "sign in with the admin password (in the sidebar) first",
        LOGIN: "log in with an admin's account (in the sidebar) first",
    }.get(settings.mode, "ask the studio's owner to fix its settings")
    raise AccessDenied(f"Only an admin can {action}: {how}.")


class SignInThrottle:
    """Slows down repeated wrong admin passwords, per key (a session, a client address).

    The first FREE_TRIES wrong passwords of a key cost nothing; each further one doubles the
    wait before that key may try again (2 s, 4 s, 8 s... up to MAX_WAIT). A right password
    clears the keys given. One instance is shared by every session of a server.
    """

    FREE_TRIES = 3
    MAX_WAIT = 300.0
    MAX_KEYS = 10_000  # memory bound: the oldest keys are forgotten first

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: dict[str, tuple[int, float]] = {}  # key -> (failures, retry at)

    def wait(self, keys: Iterable[str]) -> float:
        """Seconds before any of keys may try again (0: now)."""
        now = self._clock()
        with self._lock:
            return max([0.0, *(self._failures.get(k, (0, now))[1] - now for k in keys)])

    def failed(self, keys: Iterable[str]) -> float:
        """Records a wrong password for each key; returns the wait it earned (seconds)."""
        now, waits = self._clock(), [0.0]
        with self._lock:
            for key in keys:
                count = self._failures.pop(key, (0, now))[0] + 1
                wait = (0.0 if count < self.FREE_TRIES
                        else min(self.MAX_WAIT, 2.0 ** (count - self.FREE_TRIES + 1)))
                self._failures[key] = (count, now + wait)
                waits.append(wait)
            while len(self._failures) > self.MAX_KEYS:
                self._failures.pop(next(iter(self._failures)))
        return max(waits)

    def failures(self, key: str) -> int:
        """Wrong passwords recorded for key."""
        with self._lock:
            return self._failures.get(key, (0, 0.0))[0]

    def succeeded(self, keys: Iterable[str]) -> None:
        """Forgets the failures of keys (the session that gave the right password)."""
        with self._lock:
            for key in keys:
                self._failures.pop(key, None)
