"""Times the dataset audit: flower_photos_300 with a warm feature cache, and 20,000 generated
feature vectors (peak memory too). Each part runs in its own process; prints one JSON object.

    KERAS_HOME=<folder whose models/ holds the MobileNetV2 weights> TL_STUDIO_OFFLINE=1 \
        python bench/audit_benchmark.py [--home DIR] [--n 20000] [--part flowers|generated]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _peak_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def flowers(home: Path, data: str) -> dict:
    """Audit of flower_photos_300: once to warm the cache (and the process), then timed."""
    from core.audit import findings as audit
    from core.data import datasets

    dataset = datasets.ingest(data, home=home)
    t0 = time.monotonic()
    first = audit.audit(dataset, home=home)
    first_s = time.monotonic() - t0
    t1 = time.monotonic()
    warm = audit.audit(dataset, home=home)
    warm_s = time.monotonic() - t1
    s = warm.summary
    return {
        "part": "flowers", "photos": s["images"],
        "first_audit_seconds": round(first_s, 2),
        "first_audit_stages": first.summary["seconds"],
        "warm_audit_seconds": round(warm_s, 2), "warm_audit_stages": s["seconds"],
        "label_issues": s["label_issues"], "near_duplicate_groups": s["near_duplicate_groups"],
        "outliers": s["outliers"], "estimated_wrong_label_share":
            s["estimated_wrong_label_share"], "cross_validated_accuracy":
            s["cross_validated_accuracy"], "peak_rss_mb": _peak_mb(),
    }


def generated(home: Path, n: int, dim: int = 1280, classes: int = 10) -> dict:
    """Audit of n generated feature vectors (no image files: no pixel check), 1% near-copies."""
    import pandas as pd

    from core.audit import findings as audit

    rng = np.random.default_rng(0)
    y = rng.integers(0, classes, n)
    centres = np.abs(rng.normal(0, 1, (classes, dim))).astype(np.float32)
    x = (centres[y] + np.abs(rng.normal(0, 1.2, (n, dim)))).astype(np.float32)
    copies = rng.choice(n, n // 100, replace=False)
    x[copies] = x[(copies + 1) % n] + rng.normal(0, 0.01, (len(copies), dim)).astype(np.float32)
    root = Path(tempfile.gettempdir()) / "tl-generated"
    index = pd.DataFrame({
        "path": [str(root / f"c{c}" / f"{i:06d}.jpg") for i, c in enumerate(y)],
        "label": [f"c{c}" for c in y], "label_index": y,
        "sha256": [hashlib.sha256(str(i).encode()).hexdigest() for i in range(n)],
    })
    before = _peak_mb()
    t0 = time.monotonic()
    result = audit.audit(index, features=x, home=home, check_pixels=False)
    seconds = time.monotonic() - t0
    s = result.summary
    return {"part": "generated", "vectors": n, "dim": dim, "classes": classes,
            "planted_copies": int(len(copies)), "audit_seconds": round(seconds, 2),
            "stages": s["seconds"], "near_duplicate_groups": s["near_duplicate_groups"],
            "label_issues": s["label_issues"], "outliers": s["outliers"],
            "peak_rss_mb_before_audit": before, "peak_rss_mb": _peak_mb()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", default=None, help="studio home (feature cache)")
    parser.add_argument("--data", default=os.path.join(
        os.environ.get("TL_STUDIO_ASSETS", str(REPO.parent / "shared" / "assets")),
        "datasets", "flower_photos_300"))
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--part", choices=["flowers", "generated"], default=None)
    args = parser.parse_args()
    home = Path(args.home or tempfile.mkdtemp(prefix="tl-audit-bench-"))
    if args.part == "flowers":
        print(json.dumps(flowers(home, args.data)))
        return
    if args.part == "generated":
        print(json.dumps(generated(home, args.n)))
        return
    out = {"benchmark": "audit", "cpu_count": os.cpu_count()}
    for part in ("flowers", "generated"):
        load = os.getloadavg()
        done = subprocess.run(
            [sys.executable, __file__, "--part", part, "--home", str(home), "--data",
             args.data, "--n", str(args.n)], capture_output=True, text=True, check=True)
        out[part] = {**json.loads(done.stdout.strip().splitlines()[-1]),
                     "loadavg_before": [round(v, 2) for v in load],
                     "loadavg_after": [round(v, 2) for v in os.getloadavg()]}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
