"""A hostile upload: a zip of many one-byte entries through core.data.datasets.ingest; prints JSON.

Issue 20 measured 200,000 one-byte entries at 59 s and 787 MB. Every entry is extracted and
checked (and rejected: none is an image); the time of each stage and the peak memory of this
process and of the checking workers are reported with the load average.

Usage: .venv/bin/python bench/zip_entries.py [--entries 200000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=200_000)
    args = parser.parse_args()
    from core.data import datasets

    with tempfile.TemporaryDirectory(prefix="zip-entries-") as tmp:
        archive = Path(tmp) / "many.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
            for i in range(args.entries):
                zf.writestr(f"ds/{'ab'[i % 2]}/{i}.jpg", b"x")
        stages: dict[str, float] = {}
        load_before = os.getloadavg()
        started = time.monotonic()
        dataset = datasets.ingest(archive, home=Path(tmp) / "home", on_event=lambda event:
                                  stages.setdefault(event.phase, time.monotonic()))
        total = time.monotonic() - started
    print(json.dumps({
        "entries": args.entries,
        "seconds": round(total, 1),
        "extracting_seconds": round(stages.get("checking photos", started) - stages.get(
            "unpacking", started), 1),
        "rejected": len(dataset.report.rejected),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "workers_peak_rss_mb": round(
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
    }, indent=2))


if __name__ == "__main__":
    main()
