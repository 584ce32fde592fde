"""The live camera in headless Chromium with MobileNetV2 at 224: answers per second, time to the
first answer, bytes sent, and the server's CPU time with five live sessions against none.

Takes the newest completed run of a studio home (train one first, e.g. MobileNetV2 on
flower_photos_tiny: `python -m core train ../shared/assets/datasets/flower_photos_tiny --home H
--head manual`), starts the app on 127.0.0.1 on a copy of that home, and plays a clip of flower
photos as Chromium's camera. Prints JSON.

    .venv/bin/python bench/live_camera_benchmark.py --home H [--seconds 60] [--sessions 5]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

ASSETS = REPO.parent / "shared" / "assets"
FLOWERS = ASSETS / "datasets" / "flower_photos_300"


def newest_run(home: Path):
    from core.runs.store import RunStore

    store = RunStore(home)
    summary = next(s for s in store.list() if s.usable)
    return store.load(summary.run_id)


def clip_of_flowers(path: Path, count: int = 20) -> None:
    from PIL import Image
    from video_helpers import frame_of, write_y4m

    photos = sorted(FLOWERS.glob("*/*.jpg"))[::15][:count]
    write_y4m(path, [frame_of(Image.open(p), 640, 480) for p in photos], repeat=10)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its children, from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / ticks  # utime stime cutime cstime


def transfer(url: str) -> dict[str, int]:
    request = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"})
    with urllib.request.urlopen(request, timeout=60) as reply:
        body = reply.read()
        encoding = reply.headers.get("Content-Encoding")
    raw = gzip.decompress(body) if encoding == "gzip" else body
    return {"sent_bytes": len(body), "file_bytes": len(raw), "gzip": encoding == "gzip"}


def open_live(driver, url: str) -> float:
    """Opens the live demo view; seconds from the address to the first answer."""
    from live_helpers import enter_live_view, wait_for_answers

    started = time.monotonic()
    driver.get(url)
    enter_live_view(driver)
    wait_for_answers(driver, 1, timeout=300)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--sessions", type=int, default=5)
    args = parser.parse_args()
    from live_helpers import chromium
    from studio_server import studio

    out: dict = {"load_average_start": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="tl-live-bench-") as work_dir:
        work = Path(work_dir)
        shutil.copytree(args.home, work / "home")
        run = newest_run(work / "home")
        shutil.rmtree(run.run_dir / "browser", ignore_errors=True)  # the first open makes it
        out["run"] = {"backbone": run.backbone, "input_size": run.input_size,
                      "classes": len(run.labels)}
        clip = work / "clip.y4m"
        clip_of_flowers(clip)
        with studio(work / "home", work / "streamlit.log") as (url, process):
            live = f"{url}/Predict?run={run.run_id}&view=demo&live=1"
            with chromium(clip) as driver:
                out["first_answer_seconds_cold"] = open_live(driver, live)  # converts + sends
                time.sleep(12)
                out["answers_per_second"] = float(driver.find_element(
                    "id", "status").get_attribute("data-fps") or 0)
            with chromium(clip) as driver:
                out["first_answer_seconds_warm"] = open_live(driver, live)
            base = f"{url}/component/ui.live_camera.live_camera/vendor/litertjs-core/wasm/"
            out["runtime_wasm"] = transfer(base + "litert_wasm_internal.wasm")
            out["model_bytes"] = next((run.run_dir / "browser").glob("*.tflite")).stat().st_size

            before = cpu_seconds(process.pid)
            time.sleep(args.seconds)
            out["server_cpu_seconds_idle"] = cpu_seconds(process.pid) - before
            with chromium(clip) as driver:
                for n in range(args.sessions):
                    if n:
                        driver.switch_to.default_content()
                        driver.switch_to.new_window("window")  # a tab behind would be hidden
                    open_live(driver, live)
                before = cpu_seconds(process.pid)
                counts = _answer_counts(driver)
                time.sleep(args.seconds)
                out["server_cpu_seconds_live"] = cpu_seconds(process.pid) - before
                out["browser_answers_during_live_window"] = _answer_counts(driver) - counts
            out["sessions"] = args.sessions
            out["window_seconds"] = args.seconds
    out["load_average_end"] = os.getloadavg()
    print(json.dumps(out, indent=1))


def _answer_counts(driver) -> int:
    """Answers recorded over all tabs (each tab's component frame)."""
    from live_helpers import COMPONENT_FRAME

    total = 0
    for handle in driver.window_handles:
        driver.switch_to.window(handle)
        driver.switch_to.default_content()
        driver.switch_to.frame(driver.find_element("css selector", COMPONENT_FRAME))
        total += len(driver.execute_script("return window.__answers || []"))
    return total


if __name__ == "__main__":
    main()
