"""A stand-in for the studio's server process in the cluster tier's whole-cluster-loss test.

Run as `python cluster_server.py ADDRESS HOME SPLIT_CSV` (the repository on PYTHONPATH): one
JobManager on the ray executor, as the server has, starts a long training on the cluster and
says so ({"running": job id}); the test then stops the whole cluster and waits past Ray's
reconnect timeout. A line on stdin asks what the server saw: the job's state and error, and
what a new job gets ({"state", "error", "refused"}); then it exits 0. A process that Ray ended
in the meantime answers nothing.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pandas as pd


def say(**facts: object) -> None:
    print(json.dumps(facts), flush=True)


def main(address: str, home_text: str, split_csv: str) -> int:
    from core.config import TrainConfig
    from core.errors import AppError
    from core.jobs.executors.ray_executor import RayExecutor
    from core.jobs.manager import JobManager
    from core.training import pipeline as training

    home = Path(home_text)
    split = pd.read_csv(split_csv)
    manager = JobManager(home, executor=RayExecutor(address, home=home))
    config = TrainConfig(weights=None, seed=5, epochs=500, batch_size=2, head="manual",
                         early_stopping_patience=0)
    job = manager.submit(training.train, title="long", split_df=split, config=config, home=home)
    deadline = time.monotonic() + 300
    while True:
        status = manager.status(job)
        if status.state not in ("queued", "running") or time.monotonic() > deadline:
            say(ended_early=status.state, error=status.error)
            return 1
        if any(getattr(e, "phase", None) == "training head" for e in status.events):
            break
        time.sleep(0.5)
    say(running=job)
    sys.stdin.readline()
    status = manager.wait(job, 60)
    try:
        manager.submit(training.train, title="next", split_df=split, config=config, home=home)
        refused = None
    except AppError as exc:
        refused = str(exc)
    say(state=status.state, error=status.error, refused=refused)
    manager.shutdown(timeout=5)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
