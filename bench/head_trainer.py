"""The head trainer alone (core.training.head.fit_head) on random features; prints JSON.

For each head, in the order a user might try them in one process: the wall and CPU time of
its first training (the process's first also traces the compiled steps, which every later
head reuses) and the median of later ones. 1,050 training rows of 1,280 features
(MobileNetV2's), 5 classes, 10 epochs of batch 32, as in the speed part of
train_benchmark.py. No weights or data needed.

Usage: .venv/bin/python bench/head_trainer.py [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

HEADS = [(), (256,), (128,), (1024, 512, 256), (512, 256)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="later trainings per head")
    args = parser.parse_args()

    import numpy as np

    from core.config import TrainConfig
    from core.training import head as head_training

    rng = np.random.default_rng(0)
    x, y = rng.random((1050, 1280), np.float32), rng.integers(0, 5, 1050)
    x_val, y_val = rng.random((225, 1280), np.float32), rng.integers(0, 5, 225)

    def timed(hidden: tuple[int, ...]) -> tuple[float, float]:
        config = TrainConfig(hidden_units=hidden)
        head = head_training.build_head(1280, 5, config)
        wall, cpu = time.perf_counter(), time.process_time()
        head_training.fit_head(head, x, y, x_val, y_val, epochs=10, batch_size=32,
                               learning_rate=config.learning_rate, dropout=config.dropout,
                               l2=config.l2, seed=0)
        return round(time.perf_counter() - wall, 3), round(time.process_time() - cpu, 3)

    results = {}
    for hidden in HEADS:
        first = timed(hidden)
        later = [timed(hidden) for _ in range(args.repeat)]
        results[str(list(hidden))] = {
            "first_wall_seconds": first[0], "first_cpu_seconds": first[1],
            "later_wall_seconds_median": statistics.median(t[0] for t in later),
            "later_cpu_seconds_median": statistics.median(t[1] for t in later),
        }
    print(json.dumps({"heads": results, "load_average_after": os.getloadavg()}, indent=2))


if __name__ == "__main__":
    main()
