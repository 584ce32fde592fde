"""The address other devices can open (not localhost), and QR codes of it for a projector.

A page's own address is what the browser typed, often http://localhost:8501; a phone on the
same network cannot open that. The address shown for sharing is, in this order: the one
configured in $TL_STUDIO_PUBLIC_URL, else the page's address with localhost replaced by this
machine's address on the local network. That address works only when the studio listens on
the network: Streamlit binds every interface when server.address is not set, and this machine
alone when it is 127.0.0.1 or localhost (listens_on_loopback_only), which Copy link then says.
"""

from __future__ import annotations

import io
import ipaddress
import os
import socket
from urllib.parse import urlsplit, urlunsplit

import streamlit as st

PUBLIC_URL_ENV = "TL_STUDIO_PUBLIC_URL"
_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def lan_address() -> str | None:
    """This machine's address on its local network, None when it has none.

    A UDP socket "connected" to a private address makes the system pick the outgoing
    interface; no packet is sent.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.254.254.254", 1))
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if ipaddress.ip_address(address).is_loopback else address


def is_local(host: str) -> bool:
    """True for names and addresses only this machine can open (localhost, 127.x, ::1)."""
    if host.lower() in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def reachable(url: str, *, public: str | None = None, lan: str | None = None) -> str:
    """The address of url that another device can open.

    Args:
        url: The page's address as the browser sees it (query included or not).
        public: The configured public base address (scheme://host[:port][/path]), if any.
        lan: This machine's local-network address, used in place of localhost.
    """
    parts = urlsplit(url)
    if public:
        base = urlsplit(public.rstrip("/"))
        return urlunsplit((base.scheme or parts.scheme, base.netloc,
                           base.path + parts.path, parts.query, ""))
    host = parts.hostname or ""
    if not is_local(host) or not lan:
        return url
    netloc = lan if parts.port is None else f"{lan}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def share_address(url: str) -> str:
    """reachable() with this studio's configured public address and this machine's address."""
    return reachable(url, public=os.environ.get(PUBLIC_URL_ENV) or None, lan=lan_address())


def listen_address() -> str | None:
    """Streamlit's server.address option as set (flag, config.toml or environment), None when
    unset: Streamlit then listens on every interface."""
    from streamlit import config

    value = config.get_option("server.address")
    return (str(value).strip() or None) if value else None


def listens_on_loopback_only(address: str | None) -> bool:
    """True when a server bound to address can be opened from this machine only
    (127.x, ::1, localhost). Unset, 0.0.0.0 or :: (every interface), a network address, or a
    unix socket (behind a proxy) are not."""
    if not address or address.startswith("unix://"):
        return False
    return is_local(address.strip("[]"))


def camera_needs_https(url: str) -> bool:
    """True when a phone opening url will not get the camera: http to another machine."""
    parts = urlsplit(url)
    return parts.scheme == "http" and not is_local(parts.hostname or "")


@st.cache_data(show_spinner=False, max_entries=64)
def qr_png(text: str) -> bytes:
    """A QR code of text as a PNG, large enough to scan from a projector."""
    import segno

    out = io.BytesIO()
    segno.make(text, error="m").save(out, kind="png", scale=8, border=2)
    return out.getvalue()
