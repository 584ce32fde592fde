"""The studio over https with a self-made certificate, as README "Showing a run to others" says.

Phones allow the camera only on https pages; this starts `streamlit run` with
server.sslCertFile / server.sslKeyFile and a certificate made by README's openssl command
(for 127.0.0.1 here), and gets /_stcore/health over https, checking the certificate.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
import urllib.request
from pathlib import Path

import pytest
from studio_server import studio

pytestmark = pytest.mark.slow


def make_certificate(folder: Path, name: str, address: str) -> tuple[Path, Path]:
    """README's command: a self-signed certificate for a machine's name and address."""
    cert, key = folder / "studio-cert.pem", folder / "studio-key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "365",
         "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={name}",
         "-addext", f"subjectAltName=DNS:{name},IP:{address}"],
        check=True, capture_output=True, timeout=60)
    return cert, key


def test_the_studio_answers_over_https_with_a_self_made_certificate(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is missing (apt-get install openssl)")
    cert, key = make_certificate(tmp_path, "localhost", "127.0.0.1")
    trusting = ssl.create_default_context(cafile=str(cert))  # as a phone that accepted it
    with studio(tmp_path / "home", tmp_path / "streamlit.log", scheme="https",
                extra=("--server.sslCertFile", str(cert), "--server.sslKeyFile", str(key))
                ) as (url, _):
        assert url.startswith("https://")
        with urllib.request.urlopen(f"{url}/_stcore/health", context=trusting,
                                    timeout=10) as reply:
            assert reply.status == 200 and reply.read().strip() == b"ok"
        with pytest.raises(urllib.error.URLError):  # a browser that has not accepted it yet
            urllib.request.urlopen(f"{url}/_stcore/health", timeout=10,
                                   context=ssl.create_default_context())
