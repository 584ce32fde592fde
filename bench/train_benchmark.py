"""Training benchmarks of issue 3 on the offline flower photos; prints one JSON object.

Parts (run all by default, or name some with --parts):
  speed     our first frozen-base run (default config, 10 epochs, cold caches) vs the plain
            Keras recipe (image_dataset_from_directory, base inside the model, 10 epochs),
            same split; then second runs with other head settings on the same data (warm
            caches; five of each kind, alternating, their median set against the first run);
            then a first run on a new home where the base is already converted to TFLite, and
            a cold first run with augmentation on (2 cached views per photo)
  accuracy  test accuracy of the default frozen config, with augmentation on, and of a
            fine-tuning config; then the frozen configs on two other splits
  predict   warm single-photo prediction latency (p50, p90) through core.results.prediction
  memory    peak RSS of a frozen-base training on a generated 20,000-image dataset
  head-search  (only when named) the searched head (the default) against the manual head
            (today's settings), same split, three training seeds: test accuracy, the
            search's cross-validated accuracy, the time of a cold first run of each and of
            warm second runs, and what the search adds
  head-search-fine-tune  (only when named; 10-20 minutes) fine-tuning 50 layers after the
            searched head against after the manual head, seed 0, same split
  fine-tune-seeds  (only when named; 5-10 minutes a run on the 2-core CPU, 12 runs by
            default) fine-tuning accuracy by training seed, for 5 and 8 epochs, ending with
            the average of the epochs' weights (the default) or the best epoch's

Usage: .venv/bin/python bench/train_benchmark.py [--parts speed accuracy ...] [--data DIR]
Needs the MobileNetV2 no-top weights from ../shared/assets (linked into a temp KERAS_HOME).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASSETS = Path(os.environ.get("TL_STUDIO_ASSETS") or ROOT.parent / "shared" / "assets")
WEIGHTS = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
# Second runs of each kind in the speed part; their median is set against the first run.
SECOND_RUNS = 5


def _keras_home(tmp: Path) -> Path:
    source = ASSETS / "weights" / WEIGHTS
    if not source.is_file():
        sys.exit(f"missing {source}: the benchmarks need the offline weights")
    home = tmp / "keras-home"
    (home / "models").mkdir(parents=True, exist_ok=True)
    link = home / "models" / WEIGHTS
    if not link.exists():
        link.symlink_to(source)
    return home


def _split(data: Path, home: Path):
    from core.config import SplitConfig
    from core.data import datasets, splits

    dataset = datasets.ingest(data, home=home)
    return splits.split(dataset.index, SplitConfig(seed=0))


def _train(split_df, config, home: Path) -> dict:
    from core.training import pipeline as training

    started = time.perf_counter()
    result = training.train(split_df, config, home=home)
    out = result.to_dict()
    out["wall_seconds"] = round(time.perf_counter() - started, 2)
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    out["feature_backend"] = metrics["feature_backend"]
    out["feature_cache"] = metrics["feature_cache"]
    out["final_val_accuracy"] = metrics.get("final_val_accuracy")
    return out


def plain_keras_recipe(split_df, epochs: int, keras_home: Path, tmp: Path) -> dict:
    """The Keras transfer-learning guide's recipe: the frozen base runs inside the model."""
    import keras
    import tensorflow as tf

    started = time.perf_counter()
    # Same split as ours: class folders of links for each part.
    for row in split_df.itertuples():
        target = tmp / "plain" / row.split / row.label / Path(row.path).name
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            target.symlink_to(row.path)

    def load(part: str, shuffle: bool):
        return keras.utils.image_dataset_from_directory(
            tmp / "plain" / part, image_size=(224, 224), batch_size=32, shuffle=shuffle,
            seed=0, label_mode="int", verbose=False,
        ).prefetch(tf.data.AUTOTUNE)

    train_ds, val_ds, test_ds = load("train", True), load("val", False), load("test", False)
    keras.utils.set_random_seed(0)
    base = keras.applications.MobileNetV2(
        include_top=False, weights=str(keras_home / "models" / WEIGHTS),
        input_shape=(224, 224, 3),
    )
    base.trainable = False
    augment = keras.Sequential([keras.layers.RandomFlip("horizontal"),
                                keras.layers.RandomRotation(0.1)])
    inputs = keras.Input((224, 224, 3))
    x = augment(inputs)
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(x)  # mobilenet_v2.preprocess_input
    x = base(x, training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.2)(x)
    outputs = keras.layers.Dense(split_df["label"].nunique(), activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    history = model.fit(train_ds, validation_data=val_ds, epochs=epochs, verbose=0,
                        shuffle=False)  # the dataset already reshuffles every epoch
    train_seconds = time.perf_counter() - started
    _, test_accuracy = model.evaluate(test_ds, verbose=0)
    return {
        "wall_seconds": round(train_seconds, 2),
        "test_accuracy": float(test_accuracy),
        "best_val_accuracy": float(max(history.history["val_accuracy"])),
        "epochs": epochs,
    }


def _home_with_converted_base(source_home: Path, target: Path) -> Path:
    """A new studio home (empty feature cache) that has the converted TFLite base already."""
    converted = target / "cache" / "tflite"
    converted.mkdir(parents=True)
    for model in (source_home / "cache" / "tflite").glob("*.tflite"):
        (converted / model.name).symlink_to(model)
    return target


def part_speed(data: Path, tmp: Path, keras_home: Path) -> dict:
    from core.config import TrainConfig
    from core.features import extraction as features

    home = tmp / "speed-home"
    split_df = _split(data, home)
    # The default config: augmentation "auto" is off for a frozen base alone.
    ten = TrainConfig(epochs=10, early_stopping_patience=0)
    # Cold: empty caches, no converted base, base not yet built in this process.
    features.forget_built_bases()
    first = _train(split_df, ten, home)
    # A second run takes 1-2 s, and on this shared 2-core host one sample can come out a third
    # slower than the next: several of each, alternating, and their median is the result.
    second_configs = {
        "hidden_256": replace(ten, hidden_units=(256,), dropout=0.3, learning_rate=5e-4),
        "linear_head": replace(ten, dropout=0.3, learning_rate=5e-4, l2=1e-3),
    }
    second_runs: dict[str, list[dict]] = {name: [] for name in second_configs}
    for _ in range(SECOND_RUNS):
        for name, config in second_configs.items():
            second_runs[name].append(_train(split_df, config, home))
    # New data for an installed base: the one-time TFLite conversion is already done.
    prepared = _home_with_converted_base(home, tmp / "speed-home-prepared")
    first_prepared = _train(_split(data, prepared), ten, prepared)
    # Augmentation on: 2 cached augmented views per training photo, cold.
    augmented_home = tmp / "speed-home-augmented"
    features.forget_built_bases()
    augmented = _train(_split(data, augmented_home), replace(ten, augment="on"),
                       augmented_home)
    plain = plain_keras_recipe(split_df, 10, keras_home, tmp)

    def speedup(ours: dict) -> float:
        return round(plain["wall_seconds"] / ours["wall_seconds"], 2)

    def second_run_results(name: str) -> dict:
        runs = second_runs[name]
        walls = [run["wall_seconds"] for run in runs]
        return {
            f"second_run_{name}": runs[0],
            f"second_run_{name}_wall_seconds": walls,
            f"second_over_first_{name}": round(statistics.median(walls)
                                               / first["wall_seconds"], 3),
        }

    return {
        "first_run_10_epochs": first,
        "first_run_10_epochs_base_converted": first_prepared,
        "first_run_10_epochs_augmented": augmented,
        "plain_keras_recipe_10_epochs": plain,
        "speedup_vs_plain": speedup(first),
        "speedup_vs_plain_base_converted": speedup(first_prepared),
        "speedup_vs_plain_augmented": speedup(augmented),
        **second_run_results("hidden_256"),
        **second_run_results("linear_head"),
        "load_average_after": os.getloadavg(),
    }


def part_accuracy(data: Path, tmp: Path) -> dict:
    from core.config import SplitConfig, TrainConfig
    from core.data import datasets, splits

    home = tmp / "accuracy-home"
    split_df = _split(data, home)
    frozen = _train(split_df, TrainConfig(), home)
    augmented = _train(split_df, TrainConfig(augment="on"), home)
    # Fine-tuning's defaults: 8 epochs at 1e-4, their weights averaged, augmented ("auto").
    fine = _train(split_df, TrainConfig(fine_tune_layers=50), home)
    # The test split holds 225 photos: one photo is 0.44 points. Other splits show the spread.
    index = datasets.ingest(data, home=home).index
    other_splits = {}
    for split_seed in (1, 2):
        other = splits.split(index, SplitConfig(seed=split_seed))
        other_splits[split_seed] = {
            name: _train(other, config, home)["test_accuracy"]
            for name, config in (("default", TrainConfig()),
                                 ("augmented", TrainConfig(augment="on")))
        }
    return {"frozen_default": frozen, "frozen_augmented": augmented, "fine_tuned": fine,
            "test_accuracy_on_other_splits": other_splits}


def part_head_search(data: Path, tmp: Path, seeds: list[int],
                     split_seeds: list[int] = (0,)) -> dict:
    """Searched default vs manual default: accuracy over training seeds (and splits), time."""
    from core.config import SplitConfig, TrainConfig
    from core.data import datasets, splits
    from core.features import extraction as features

    def summary(run: dict) -> dict:
        keep = ("test_accuracy", "best_val_accuracy", "final_val_accuracy", "wall_seconds",
                "seconds", "epochs_run", "head_search")
        return {k: run.get(k) for k in keep}

    out: dict = {"load_average_before": os.getloadavg()}
    # Cold first runs, each in a new home: features computed, base converted and built.
    for name, head in (("searched", "search"), ("manual", "manual")):
        home = tmp / f"head-search-cold-{name}"
        features.forget_built_bases()
        out[f"first_run_{name}"] = summary(_train(_split(data, home), TrainConfig(head=head),
                                                  home))
    home = tmp / "head-search-cold-searched"
    split_df = _split(data, home)
    accuracy: dict[str, list[float]] = {"searched": [], "manual": []}
    for seed in seeds:
        for name, head in (("searched", "search"), ("manual", "manual")):
            run = summary(_train(split_df, TrainConfig(head=head, seed=seed), home))
            out[f"warm_{name}_seed_{seed}"] = run
            accuracy[name].append(run["test_accuracy"])
            print(json.dumps({f"warm_{name}_seed_{seed}": run}), file=sys.stderr, flush=True)
    searched = [out[f"warm_searched_seed_{s}"] for s in seeds]
    manual = [out[f"warm_manual_seed_{s}"] for s in seeds]
    out.update({
        "mean_test_accuracy_searched": round(statistics.mean(accuracy["searched"]), 4),
        "mean_test_accuracy_manual": round(statistics.mean(accuracy["manual"]), 4),
        "mean_gain_points": round(100 * (statistics.mean(accuracy["searched"])
                                         - statistics.mean(accuracy["manual"])), 2),
        "mean_cv_accuracy_searched": round(statistics.mean(
            r["head_search"]["cv_accuracy"] for r in searched), 4),
        "median_warm_wall_searched": statistics.median(r["wall_seconds"] for r in searched),
        "median_warm_wall_manual": statistics.median(r["wall_seconds"] for r in manual),
        "median_search_seconds": statistics.median(r["seconds"]["search"] for r in searched),
        "first_run_added_seconds": round(out["first_run_searched"]["wall_seconds"]
                                         - out["first_run_manual"]["wall_seconds"], 2),
    })
    # Other splits (the same photos, warm features): the test split moves by 0.44 points a
    # photo, so one split's three seeds say little.
    index = datasets.ingest(data, home=home).index
    every: dict[str, list[float]] = {name: list(accuracy[name]) for name in accuracy}
    for split_seed in [s for s in split_seeds if s != 0]:
        other = splits.split(index, SplitConfig(seed=split_seed))
        for seed in seeds:
            for name, head in (("searched", "search"), ("manual", "manual")):
                run = _train(other, TrainConfig(head=head, seed=seed), home)
                out[f"split_{split_seed}_{name}_seed_{seed}"] = run["test_accuracy"]
                every[name].append(run["test_accuracy"])
    if len(split_seeds) > 1:
        out["all_splits_mean_test_accuracy"] = {
            name: round(statistics.mean(values), 4) for name, values in every.items()}
        out["all_splits_runs"] = len(every["manual"])
    out["load_average_after"] = os.getloadavg()
    return out


def part_head_search_fine_tune(data: Path, tmp: Path) -> dict:
    """Fine-tuning (50 layers, its defaults) from the searched head and from the manual one."""
    from core.config import TrainConfig

    home = tmp / "head-search-fine-tune-home"
    split_df = _split(data, home)
    out: dict = {"load_average_before": os.getloadavg()}
    for name, head in (("searched", "search"), ("manual", "manual")):
        run = _train(split_df, TrainConfig(head=head, fine_tune_layers=50), home)
        out[f"fine_tuned_{name}"] = {k: run.get(k) for k in (
            "test_accuracy", "wall_seconds", "seconds", "head_search")}
        print(json.dumps({name: out[f"fine_tuned_{name}"]}), file=sys.stderr, flush=True)
    out["load_average_after"] = os.getloadavg()
    return out


def part_fine_tune_seeds(data: Path, tmp: Path, epochs: list[int], seeds: list[int],
                         averaging: list[str]) -> dict:
    """Fine-tuning test accuracy by training seed: how much of a result is chance.

    Top 50 layers at the default 1e-4, for each number of fine-tuning epochs, each way of
    ending (the average of the epochs' weights, the default, or the best epoch's) and each
    seed; then the mean over the seeds of each configuration.
    """
    from core.config import TrainConfig

    home = tmp / "fine-tune-seeds-home"
    split_df = _split(data, home)
    out: dict = {}
    for n_epochs in epochs:
        for ending in averaging:
            name = f"{n_epochs}_epochs_{ending}"
            accuracies = []
            for seed in seeds:
                config = TrainConfig(fine_tune_layers=50, fine_tune_epochs=n_epochs, seed=seed,
                                     fine_tune_averaging=ending == "averaged")
                run = _train(split_df, config, home)
                out[f"{name}_seed_{seed}"] = {k: run[k] for k in (
                    "test_accuracy", "best_val_accuracy", "final_val_accuracy", "wall_seconds")}
                accuracies.append(run["test_accuracy"])
                print(json.dumps({f"{name}_seed_{seed}": out[f"{name}_seed_{seed}"]}),
                      file=sys.stderr, flush=True)
            out[f"{name}_mean_test_accuracy"] = round(statistics.mean(accuracies), 4)
    return out


def part_predict(data: Path, tmp: Path) -> dict:
    from core.config import TrainConfig
    from core.results.prediction import Predictor

    home = tmp / "predict-home"
    split_df = _split(data, home)
    run = _train(split_df, TrainConfig(epochs=5), home)
    predictor = Predictor.from_run(run["run_dir"])
    photos = split_df[split_df["split"] == "test"]["path"].tolist()[:60]
    predictor.predict(photos[0])  # warm
    latencies = []
    for photo in photos:
        started = time.perf_counter()
        predictor.predict(photo, top_k=3)
        latencies.append((time.perf_counter() - started) * 1000)
    latencies.sort()
    return {
        "photos": len(latencies),
        "p50_ms": round(statistics.median(latencies), 1),
        "p90_ms": round(latencies[int(0.9 * (len(latencies) - 1))], 1),
        "max_ms": round(latencies[-1], 1),
    }


def part_memory(tmp: Path, n_images: int) -> dict:
    """Trains in a child process so its peak RSS is the training's alone."""
    data = tmp / "generated"
    code = f"""
import json, resource, sys
sys.path.insert(0, {str(ROOT)!r})
from pathlib import Path
import numpy as np
from PIL import Image
data = Path({str(data)!r})
rng = np.random.default_rng(0)
for i in range({n_images}):
    folder = data / f"class_{{i % 10}}"
    folder.mkdir(parents=True, exist_ok=True)
    pixels = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    pixels[:, :, i % 3] = (i % 10) * 25
    Image.fromarray(pixels).save(folder / f"img_{{i:05d}}.jpg", quality=85)
from core.data import datasets
from core.data import splits
from core.training import pipeline as training
from core.config import SplitConfig, TrainConfig
home = Path({str(tmp / "memory-home")!r})
dataset = datasets.ingest(data, home=home)
split_df = splits.split(dataset.index, SplitConfig(seed=0))
result = training.train(split_df, TrainConfig(epochs=3, early_stopping_patience=0), home=home)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"images": len(split_df), "peak_rss_mb": round(peak, 1),
                  "seconds": result.seconds, "test_accuracy": result.test_accuracy}}))
"""
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=os.environ.copy())
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    result["peak_rss_mb_children"] = round(children, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", default=["speed", "accuracy", "predict", "memory"],
                        choices=["speed", "accuracy", "predict", "memory", "fine-tune-seeds",
                                 "head-search", "head-search-fine-tune"])
    parser.add_argument("--data", type=Path,
                        default=ASSETS / "datasets" / "flower_photos_300")
    parser.add_argument("--memory-images", type=int, default=20_000)
    parser.add_argument("--fine-tune-epochs", type=int, nargs="+", default=[5, 8],
                        help="fine-tune-seeds: numbers of fine-tuning epochs (default 5 8)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="fine-tune-seeds, head-search: training seeds (default 0 1 2)")
    parser.add_argument("--split-seeds", type=int, nargs="+", default=[0],
                        help="head-search: split seeds (default 0; 0 1 2 adds two splits)")
    parser.add_argument("--endings", nargs="+", default=["averaged", "best_epoch"],
                        choices=["averaged", "best_epoch"],
                        help="fine-tune-seeds: how fine-tuning ends (default: both)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory(prefix="tl-bench-") as name:
        tmp = Path(name)
        keras_home = _keras_home(tmp)
        os.environ["KERAS_HOME"] = str(keras_home)
        os.environ["TL_STUDIO_OFFLINE"] = "1"
        report: dict = {"data": str(args.data), "cpu_count": os.cpu_count()}
        parts = {
            "speed": lambda: part_speed(args.data, tmp, keras_home),
            "accuracy": lambda: part_accuracy(args.data, tmp),
            "predict": lambda: part_predict(args.data, tmp),
            "memory": lambda: part_memory(tmp, args.memory_images),
            "fine-tune-seeds": lambda: part_fine_tune_seeds(
                args.data, tmp, args.fine_tune_epochs, args.seeds, args.endings),
            "head-search": lambda: part_head_search(args.data, tmp, args.seeds,
                                                    args.split_seeds),
            "head-search-fine-tune": lambda: part_head_search_fine_tune(args.data, tmp),
        }
        for name in args.parts:
            report[name] = parts[name]()
            # Partial results survive a later part's failure.
            print(json.dumps({name: report[name]}), file=sys.stderr, flush=True)
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
