"""Server memory while many sessions upload at once (issue 28).

Starts the app with `streamlit run` on 127.0.0.1, opens N sessions over the app's websocket
(each runs the app's first page, as a browser's first view does), and has every session upload
files through Streamlit's upload endpoint at the same time, as browsers do. Prints one JSON
object: how many uploads were stored (204) and refused (413), and the server's resident memory
(RSS) at rest, with the sessions open, at the peak of the uploads and after the sessions closed.

    .venv/bin/python bench/upload_memory.py --sessions 10 --files 2 --mb 20
    .venv/bin/python bench/upload_memory.py --sessions 2 --files 1 --mb 300   # a raw client
    .venv/bin/python bench/upload_memory.py --sessions 1 --files 8 --mb 300   # over its budget

The browser refuses a photo over ui.uploads.PHOTO_MB; a client that ignores it reaches the
upload store (ui.upload_store): files over the photo limit are kept on the disk, and a session
holding server.maxUploadSize is refused more.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import requests
import websockets
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Peak(threading.Thread):
    """Samples a process's RSS every 50 ms; .peak is the highest seen."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.running = pid, 0.0, True

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, rss_mb(self.pid))
            time.sleep(0.05)


async def open_session(port: int) -> tuple[object, str]:
    ws = await websockets.connect(f"ws://127.0.0.1:{port}/_stcore/stream", max_size=None)
    msg = BackMsg()
    msg.rerun_script.query_string = ""
    await ws.send(msg.SerializeToString())
    session_id = None
    while True:
        forward = ForwardMsg()
        forward.ParseFromString(await ws.recv())
        kind = forward.WhichOneof("type")
        if kind == "new_session":
            session_id = forward.new_session.initialize.session_id
        elif kind == "script_finished" and session_id:
            return ws, session_id


def upload(port: int, session_id: str, data: bytes) -> int:
    url = f"http://127.0.0.1:{port}/_stcore/upload_file/{session_id}/{uuid.uuid4().hex}"
    done = requests.put(url, files={"UploadedFile": ("photo.jpg", data, "image/jpeg")},
                        timeout=600)
    return done.status_code


async def measure(port: int, pid: int, sessions: int, files: int, mb: int) -> dict:
    rest = rss_mb(pid)
    opened = [await open_session(port) for _ in range(sessions)]
    with_sessions = rss_mb(pid)
    peak = Peak(pid)
    peak.start()
    data = os.urandom(mb * 2**20)
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(sessions * files) as pool:
        codes = list(pool.map(lambda sid: upload(port, sid, data),
                              [sid for _ws, sid in opened for _ in range(files)]))
    seconds = time.monotonic() - started
    after_uploads = rss_mb(pid)
    for ws, _sid in opened:
        await ws.close()
    await asyncio.sleep(10)
    peak.running = False
    return {"sessions": sessions, "files_per_session": files, "mb_per_file": mb,
            "upload_status": {str(code): codes.count(code) for code in sorted(set(codes))},
            "upload_seconds": round(seconds, 1),
            "rss_mb": {"at_rest": round(rest), "sessions_open": round(with_sessions),
                       "peak": round(peak.peak), "after_uploads": round(after_uploads),
                       "10_s_after_closing": round(rss_mb(pid))},
            "held_per_uploaded_mb": round((after_uploads - with_sessions)
                                          / max(1, sessions * files * mb), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--files", type=int, default=2)
    parser.add_argument("--mb", type=int, default=20)
    args = parser.parse_args()
    port = free_port()
    home = tempfile.mkdtemp(prefix="tl-bench-home-")
    env = {**os.environ, "TL_STUDIO_HOME": home, "TF_CPP_MIN_LOG_LEVEL": "3"}
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.port",
         str(port), "--server.address", "127.0.0.1", "--server.headless", "true",
         "--server.enableXsrfProtection", "false"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        result = asyncio.run(measure(port, server.pid, args.sessions, args.files, args.mb))
        result["load_average"] = os.getloadavg()[0]
        print(json.dumps(result))
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
