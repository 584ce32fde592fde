"""The app as a person starts it: `streamlit run` on 127.0.0.1 and a free port, for the tests
that drive it from a real browser or over HTTP (browser, live camera, https, upload budget),
and whether this machine has the browser those tests drive.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")  # Debian's, driven by Debian's chromedriver
CHROMEDRIVER = Path("/usr/bin/chromedriver")


def browser_missing() -> str | None:
    """Why a browser test cannot run here, None when it can."""
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    if not CHROMEDRIVER.exists():
        return f"{CHROMEDRIVER} is missing (apt-get install chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -r requirements-dev.txt)"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def studio(home: Path, log: Path, *, secrets: Path | None = None,
           extra: tuple[str, ...] = (), scheme: str = "http", start_seconds: float = 120,
           env: Mapping[str, str] | None = None,
           public_url: bool = False) -> Iterator[tuple[str, subprocess.Popen]]:
    """`streamlit run` of the app with its own studio home; yields (url, process) once
    /_stcore/health answers, and stops the server's whole process group after.

    Args:
        public_url: Shared links name the server as the tests reach it (TL_STUDIO_PUBLIC_URL),
            not this machine's network address: it listens on 127.0.0.1 only.
        env: More environment variables for the server.
    """
    port = free_port()
    url = f"{scheme}://127.0.0.1:{port}"
    server_env = {**os.environ, "TL_STUDIO_HOME": str(home), "TL_STUDIO_OFFLINE": "1",
                  "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    if public_url:
        server_env["TL_STUDIO_PUBLIC_URL"] = url
    command = [sys.executable, "-m", "streamlit", "run", "streamlit_app.py",
               "--server.port", str(port), "--server.address", "127.0.0.1",
               "--server.headless", "true", "--browser.gatherUsageStats", "false", *extra]
    if secrets is not None:
        command += ["--secrets.files", str(secrets)]
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=REPO, env=server_env, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        trust = ssl._create_unverified_context() if scheme == "https" else None
        wait_healthy(url, process, log, start_seconds, context=trust)
        yield url, process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=15)


def wait_healthy(url: str, process: subprocess.Popen, log: Path, seconds: float,
                 context: Any = None) -> None:
    """Waits for /_stcore/health to say ok; raises with the log's end when it does not."""
    deadline = time.monotonic() + seconds
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"streamlit exited with {process.returncode}:\n{tail(log)}")
        with (contextlib.suppress(OSError),
              urllib.request.urlopen(f"{url}/_stcore/health", timeout=2,
                                     context=context) as reply):
            if reply.status == 200:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"streamlit did not answer in {seconds:.0f} s:\n{tail(log)}")
        time.sleep(0.5)


def tail(path: Path, lines: int = 40) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


@contextlib.contextmanager
def studio_for_browser(tmp_path: Path, artifact: Path, **options: Any) -> Iterator[str]:
    """studio() with a new studio home for a browser test, skipped where no browser is; the
    server's log is kept as `artifact` afterwards (CI keeps test-artifacts/)."""
    import pytest  # here: the benchmarks use this module without pytest

    reason = browser_missing()
    if reason:
        pytest.skip(reason)
    log = tmp_path / "streamlit.log"
    try:
        with studio(tmp_path / "studio-home", log, **options) as (url, _process):
            yield url
    finally:
        artifact.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            shutil.copy(log, artifact)
