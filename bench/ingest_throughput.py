"""Ingestion throughput and peak memory on a photo folder; prints one JSON object."""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

DEFAULT_DATASET = REPO_ROOT.parent / "shared" / "assets" / "datasets" / "flower_photos_300"


def _peak_rss_mb(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # Linux reports KiB


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii") as fh:
                    if int(fh.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    return found


class TotalRssSampler(threading.Thread):
    """Samples the RSS of this process plus its worker processes (ru_maxrss of children is
    useless here: it counts the parent's pages at fork time, before the worker's exec)."""

    def __init__(self, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.peak_kb = 0
        self.peak_workers = 0
        self._done = threading.Event()

    def run(self) -> None:
        me = os.getpid()
        while not self._done.is_set():
            kids = _children(me)
            self.peak_kb = max(self.peak_kb, _rss_kb(me) + sum(_rss_kb(k) for k in kids))
            self.peak_workers = max(self.peak_workers, len(kids))
            self._done.wait(self.interval)

    def stop(self) -> None:
        self._done.set()
        self.join()


def generate(root: Path, count: int, classes: int = 10, size: int = 32) -> Path:
    """Writes count distinct small JPEGs into root/class_k/, one at a time (flat memory)."""
    rng = np.random.default_rng(0)
    for i in range(count):
        folder = root / f"class_{i % classes:02d}"
        if i < classes:
            folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img_{i:06d}.jpg", quality=85)
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("dataset", nargs="?", default=str(DEFAULT_DATASET),
                        help="folder or zip to ingest (default: shared flower_photos_300)")
    parser.add_argument("--workers", type=int, default=0, help="0: one per CPU core")
    parser.add_argument("--generate", type=int, default=0, metavar="N",
                        help="ingest N generated 32 px images instead of DATASET")
    args = parser.parse_args()
    # Imported here, not at the top: spawned workers re-run this script's top level, and
    # should pay only for what the studio's own workers import (core.data.images).
    from core.config import IngestConfig
    from core.data.datasets import ingest, worker_count

    with tempfile.TemporaryDirectory(prefix="tl-bench-") as tmp:
        source = Path(args.dataset)
        if args.generate:
            source = generate(Path(tmp) / "generated", args.generate)
        elif not source.exists():
            sys.exit(f"dataset not found: {source} (see ../shared/assets/SOURCES.md)")
        config = IngestConfig(workers=args.workers)
        rss_before = _peak_rss_mb(resource.RUSAGE_SELF)
        sampler = TotalRssSampler()
        sampler.start()
        start = time.perf_counter()
        dataset = ingest(source, home=Path(tmp) / "home", config=config)
        seconds = time.perf_counter() - start
        sampler.stop()
    images = len(dataset.index)
    print(json.dumps({
        "dataset": "generated" if args.generate else str(source),
        "images": images,
        "rejected": len(dataset.report.rejected),
        "seconds": round(seconds, 3),
        "images_per_s": round(images / seconds, 1),
        "peak_rss_mb": round(_peak_rss_mb(resource.RUSAGE_SELF), 1),
        "peak_rss_before_ingest_mb": round(rss_before, 1),
        "peak_rss_total_with_workers_mb": round(sampler.peak_kb / 1024, 1),
        "workers": worker_count(config),
        "child_processes_seen": sampler.peak_workers,
    }))


if __name__ == "__main__":
    main()
