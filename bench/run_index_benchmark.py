"""Listing a studio home of many runs (core.runs.store.RunStore.list) with the run index; prints JSON.

Generates N completed runs (one made through the RunStore with a small stand-in model
archive, then copied under new run ids) in a temporary home, and times:
- "cold": the first listing, which reads every run and writes the index;
- "warm": later listings with nothing changed (median), what every page rerun pays;
- "one_changed": a listing after one run's status changed (median);
- "no_index": a listing after the index was deleted (rebuilt from the folders);
- "page_rerun": a whole script run of the Home and Compare pages through Streamlit's AppTest
  (median of later reruns; AppTest's own work included, so an upper bound).
No weights or data needed.

Usage: .venv/bin/python bench/run_index_benchmark.py [--runs 1000] [--repeat 5] [--no-pages]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class _StandInModel:
    """Saves a zip laid out as a Keras 3 model archive, without TensorFlow."""

    input_shape = (None, 224, 224, 3)

    def save(self, path: Path) -> None:
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("metadata.json", "{}")
            archive.writestr("config.json", "{}")
            archive.writestr("model.weights.h5", b"w" * 100_000)


def _make_runs(home: Path, count: int) -> list[str]:
    import pandas as pd

    from core.config import TrainConfig
    from core.runs.store import RunStore, new_run_id
    from core.status import COMPLETED

    labels = ["daisy", "dandelion", "roses", "sunflowers", "tulips"]
    rows = [{"path": f"/data/{label}/{i}.jpg", "label": label, "label_index": k,
             "sha256": f"{label}{i}", "split": ("train", "val", "test")[i % 3]}
            for k, label in enumerate(labels) for i in range(60)]
    writer = RunStore(home).create(TrainConfig(weights=None), labels, pd.DataFrame(rows),
                                   {"name": "flowers"}, device={"kind": "cpu"})
    writer.write_history(pd.DataFrame([
        {"epoch": e, "phase": "head", "loss": 1 / e, "accuracy": 0.5 + e / 40,
         "val_loss": 1.1 / e, "val_accuracy": 0.5 + e / 45, "seconds": 0.2}
        for e in range(1, 11)]))
    writer.save_model(_StandInModel())
    writer.write_metrics({"test_accuracy": 0.9, "unsure_threshold": 0.6,
                          "params": {"total": 2_300_000, "trainable": 6_405}, "depth": 105})
    writer.set_status(COMPLETED)
    ids = [writer.run_id]
    for _ in range(count - 1):
        run_id = new_run_id("mobilenet_v2")
        shutil.copytree(writer.run_dir, writer.run_dir.parent / run_id)
        ids.append(run_id)
    return ids


def _timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def _page_reruns(home: Path, repeat: int) -> dict[str, dict[str, float]]:
    """Seconds of the first script run and the median later rerun of Home and Compare."""
    from streamlit.testing.v1 import AppTest

    os.environ["TL_STUDIO_HOME"] = str(home)
    repo = Path(__file__).resolve().parents[1]
    out = {}
    for name in ("0_Home", "5_Compare"):
        at = AppTest.from_file(str(repo / "streamlit_app.py"), default_timeout=300)
        at.switch_page(f"app_pages/{name}.py")
        first, _ = _timed(at.run)
        assert not at.exception, [e.value for e in at.exception]
        reruns = [_timed(at.run)[0] for _ in range(repeat)]
        out[name] = {"first_seconds": round(first, 3),
                     "rerun_seconds_median": round(statistics.median(reruns), 3),
                     "rerun_seconds_max": round(max(reruns), 3)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000, help="runs to generate")
    parser.add_argument("--repeat", type=int, default=5, help="timed listings per case")
    parser.add_argument("--no-pages", action="store_true", help="skip the page reruns")
    args = parser.parse_args()

    from core.runs.store import RunStore, RunWriter
    from core.status import COMPLETED, FAILED

    with tempfile.TemporaryDirectory(prefix="run-index-bench-") as tmp:
        home = Path(tmp)
        started = time.perf_counter()
        ids = _make_runs(home, args.runs)
        generated = time.perf_counter() - started
        # Files written in the last two seconds are not trusted from the index (they may
        # change again within one clock tick of the file system): measure a settled home, as
        # a page rerun meets it.
        time.sleep(2.1)
        store = RunStore(home)
        cold, listed = _timed(store.list)
        assert len(listed) == args.runs, len(listed)
        warm = [_timed(store.list)[0] for _ in range(args.repeat)]
        pages = {} if args.no_pages else _page_reruns(home, args.repeat)
        one_changed = []
        for i in range(args.repeat):
            RunWriter(store.runs_dir / ids[i], {"status": COMPLETED}).set_status(FAILED, "bench")
            one_changed.append(_timed(store.list)[0])
        index_bytes = store.index.path.stat().st_size
        store.index.path.unlink()
        no_index, _ = _timed(store.list)
    print(json.dumps({
        "runs": args.runs,
        "generate_seconds": round(generated, 2),
        "cold_list_seconds": round(cold, 4),
        "warm_list_seconds_median": round(statistics.median(warm), 4),
        "warm_list_seconds_max": round(max(warm), 4),
        "one_changed_list_seconds_median": round(statistics.median(one_changed), 4),
        "no_index_list_seconds": round(no_index, 4),
        "index_bytes": index_bytes,
        "page_rerun": pages,
        "load_average": os.getloadavg(),
    }, indent=2))


if __name__ == "__main__":
    main()
