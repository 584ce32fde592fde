"""Helpers shared by the AppTests of the Train, Evaluate, Predict and Compare pages."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from conftest import patterned_image
from streamlit.testing.v1 import AppTest

from core.config import SplitConfig, TrainConfig
from core.data import datasets, splits
from core.training import pipeline as training
from core.training.result import TrainResult
from ui import state

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 180  # seconds per script run; the first run of a process imports TensorFlow
FAST = TrainConfig(backbone="mobilenet_v2", weights=None, epochs=2, batch_size=8,
                   early_stopping_patience=0)


def page(name: str) -> AppTest:
    """An AppTest of the app showing app_pages/<name>.py (not run yet).

    The app's main script stays streamlit_app.py, as under `streamlit run`, so links between
    pages resolve.
    """
    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=TIMEOUT)
    return at.switch_page(f"app_pages/{name}.py")


def texts(elements: Iterable[Any]) -> list[str]:
    """The values of text elements as strings."""
    return [str(e.value) for e in elements]


def all_text(at: AppTest) -> str:
    """Every markdown, caption, alert and heading of the last run, one per line."""
    parts = [*texts(at.markdown), *texts(at.caption), *texts(at.info), *texts(at.success),
             *texts(at.warning), *texts(at.error), *texts(at.title), *texts(at.header),
             *texts(at.subheader)]
    return "\n".join(parts)


def charts(at: AppTest) -> list[dict]:
    """The plotly figures on the page, as plotly JSON dicts."""
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def chart_titled(at: AppTest, words: str) -> dict:
    """The first figure whose title contains words."""
    for figure in charts(at):
        title = figure.get("layout", {}).get("title", {})
        if words in (title.get("text", "") if isinstance(title, dict) else str(title)):
            return figure
    raise AssertionError(f"no chart titled {words!r} on the page")


def values(data: Any) -> list[Any]:
    """Plotly JSON array values: a list, or a typed array {"dtype", "bdata"[, "shape"]}."""
    if isinstance(data, dict) and "bdata" in data:
        array = np.frombuffer(base64.b64decode(data["bdata"]), dtype=data["dtype"])
        if "shape" in data:
            array = array.reshape([int(n) for n in str(data["shape"]).split(",")])
        return array.tolist()
    return list(data)


def trace_lengths(figure: dict) -> list[int]:
    """Number of x values of each trace."""
    return [len(values(trace.get("x", []))) for trace in figure["data"]]


def png_bytes(class_number: int, variant: int, size: int = 64) -> bytes:
    """A generated photo of a class of conftest's small datasets, as PNG bytes."""
    buffer = io.BytesIO()
    patterned_image(class_number, variant, size).save(buffer, "PNG")
    return buffer.getvalue()


def share_caches(home: Path, factory: Any) -> None:
    """Points <home>/cache at one folder per test session (pytest's tmp_path_factory).

    The converted-base and feature caches are keyed by content, so homes can share them, and
    converting a base to TFLite is the slowest part of a small training run.
    """
    shared = Path(factory.getbasetemp()) / "shared-studio-cache"
    shared.mkdir(exist_ok=True)
    home.mkdir(parents=True, exist_ok=True)
    link = home / "cache"
    if not link.exists():
        link.symlink_to(shared, target_is_directory=True)


def current_dataset(root: Path, home: Path, name: str = "small.zip") -> state.CurrentDataset:
    """A dataset chosen as on the Dataset page (ingested, split with seed 1)."""
    dataset = datasets.ingest(root, home=home)
    assert dataset.report.usable, dataset.report.errors
    config = SplitConfig(seed=1)
    loaded = state.LoadedDataset(dataset=dataset, name=name, source=f"upload:{name}")
    return state.CurrentDataset(loaded=loaded, split=splits.split(dataset.index, config),
                                split_config=config)


def train_small_run(factory: Any, labels: Iterable[str], config: TrainConfig = FAST
                    ) -> TrainResult:
    """A fresh studio home with one completed run on 12 generated photos per label."""
    from conftest import make_class_folders

    root = make_class_folders(factory.mktemp("data") / "pets", {name: 12 for name in labels})
    home = factory.mktemp("home")
    share_caches(home, factory)
    return train_run(root, home, config)


def train_run(root: Path, home: Path, config: TrainConfig = FAST,
              name: str = "small.zip") -> TrainResult:
    """Trains a run into home as the Train page would, without the page."""
    current = current_dataset(root, home, name)
    result = training.train(current.split, config, home=home, dataset_info=current.info())
    assert result.status == "completed", result
    return result
