"""A client that ignores the browser cannot fill the server's memory through Streamlit's upload
endpoint: the running app refuses files beyond a session's budget (413) and keeps large files
on the disk (ui.upload_store). The server listens on 127.0.0.1 and is stopped by the test."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path
from typing import Any

import requests
import websockets  # a dependency of Streamlit (its server's websocket)
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from studio_server import studio, tail

MB = 2**20
BUDGET_MB = 200  # --server.maxUploadSize: each session may hold this much


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


async def session(url: str) -> tuple[Any, str]:
    """A session that ran the app's script once (as a browser's first page view)."""
    ws = await websockets.connect(url.replace("http", "ws") + "/_stcore/stream", max_size=None)
    msg = BackMsg()
    msg.rerun_script.query_string = ""
    await ws.send(msg.SerializeToString())
    session_id = None
    while True:
        forward = ForwardMsg()
        forward.ParseFromString(await asyncio.wait_for(ws.recv(), 300))
        kind = forward.WhichOneof("type")
        if kind == "new_session":
            session_id = forward.new_session.initialize.session_id
        elif kind == "script_finished" and session_id:
            return ws, session_id


def put(url: str, session_id: str, mb: float) -> requests.Response:
    data = os.urandom(int(mb * MB))
    return requests.put(f"{url}/_stcore/upload_file/{session_id}/{uuid.uuid4().hex}",
                        files={"UploadedFile": ("x.jpg", data, "image/jpeg")}, timeout=300)


def test_the_running_app_refuses_uploads_over_a_sessions_budget_and_keeps_zips_on_disk(
        tmp_path: Path) -> None:
    log = tmp_path / "streamlit.log"
    with studio(tmp_path / "home", log, extra=(
            "--server.maxUploadSize", str(BUDGET_MB),
            "--server.enableXsrfProtection", "false")) as (url, process):
        pid = process.pid  # streamlit itself (not a shell)

        async def scenario() -> None:
            ws, sid = await session(url)
            other_ws, other = await session(url)
            try:
                before = rss_mb(pid)
                # Two files larger than a photo (a zip's size class): kept on the disk.
                assert put(url, sid, 90).status_code == 204, tail(log)
                assert put(url, sid, 90).status_code == 204, tail(log)
                held = rss_mb(pid) - before
                # A third file passes the 200 MB the session may hold: refused, with why.
                refused = put(url, sid, 30)
                assert refused.status_code == 413, (refused.status_code, refused.text)
                assert "may hold 200 MB" in refused.text
                # Another session has a budget of its own: a photo is stored in memory.
                assert put(url, other, 5).status_code == 204
                assert "Upload refused: session" in log.read_text()
                # 180 MB were stored; on the disk, not in the server's heap.
                assert held < 60, f"the server grew by {held:.0f} MB for 180 MB on disk"
                assert rss_mb(pid) - before < 60
            finally:
                await ws.close()
                await other_ws.close()

        asyncio.run(scenario())
