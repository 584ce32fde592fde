"""Names are data: every page, opened with a run and a dataset whose class, dataset and file
names are hostile (tests/hostile_names.py), shows them as typed, never as Markdown, HTML,
maths, directives, emoji or links, and no address from a name reaches the rendered output."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from app_helpers import page
from conftest import make_class_folders, patterned_image
from google.protobuf.json_format import MessageToDict
from hostile_names import (
    FOLDER_NAMES,
    HOSTILE_DATASET,
    HOSTILE_NAMES,
    markup_problems,
    plotly_problems,
    visible_text,
)
from run_helpers import tiny_classifier
from streamlit.testing.v1 import AppTest

from core.config import SplitConfig, TrainConfig
from core.data import datasets, splits
from core.runs import evaluation
from core.runs.store import RunStore
from ui import state

# Fields of element protos that Streamlit renders as Markdown.
MARKDOWN_FIELDS = {"body", "label", "text", "caption", "help"}
MARKDOWN_OPTIONS = {"radio"}  # radio options are Markdown too; select boxes are plain text


def _strings(value: Any, keys: set[str], found: list[str]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if key in keys and isinstance(item, str):
                found.append(item)
            elif key in keys and isinstance(item, list):
                found.extend(i for i in item if isinstance(i, str))
            else:
                _strings(item, keys, found)
    elif isinstance(value, list):
        for item in value:
            _strings(item, keys, found)


def rendered(at: AppTest) -> tuple[list[str], list[str], list[str]]:
    """(Markdown sources, plain texts, plotly specs) of every element and block of the page."""
    markdown, plain, specs = [], [], []

    def walk(node: Any) -> None:
        proto = getattr(node, "proto", None)
        kind = getattr(node, "type", "")
        if kind == "exception":
            raise AssertionError(f"the page raised: {node.value}")
        if kind == "plotly_chart":
            specs.append(node.proto.spec)
        elif kind == "arrow_data_frame":
            frame = node.value
            plain.extend(str(v) for v in [*frame.columns, *np.ravel(frame.to_numpy(dtype=str))])
        elif proto is not None and hasattr(proto, "DESCRIPTOR"):
            data = MessageToDict(proto)
            _strings(data, MARKDOWN_FIELDS | ({"options"} if kind in MARKDOWN_OPTIONS else set()),
                     markdown)
            _strings(data, {"options", "defaultValues", "rawValues"}, plain)
        for child in (getattr(node, "children", None) or {}).values():
            walk(child)

    walk(at._tree)
    return markdown, plain, specs


def check_page(at: AppTest, expected: list[str]) -> None:
    """No hostile markup anywhere on the page; each expected name visible as typed."""
    assert not at.exception, at.exception
    markdown, plain, specs = rendered(at)
    problems = [f"{p}: {source[:120]!r}" for source in markdown for p in markup_problems(source)]
    problems += [p for spec in specs for p in plotly_problems(spec)]
    assert not problems, "\n".join(problems)
    seen = "\n".join([*(visible_text(m) for m in markdown), *plain])
    missing = [name for name in expected if name not in seen]
    assert not missing, f"not shown as typed: {missing}"


def png(class_number: int, variant: int) -> bytes:
    buffer = io.BytesIO()
    patterned_image(class_number, variant, 32).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def hostile_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A studio home with one completed run whose classes and dataset carry hostile names.

    The photos lie in plain folders; the run's labels are the hostile names (a run's labels
    can hold any character, like a damaged or hand-edited run folder)."""
    data = make_class_folders(tmp_path_factory.mktemp("data") / "pets",
                              {f"c{i:02d}": 4 for i in range(len(HOSTILE_NAMES))}, size=32)
    home = tmp_path_factory.mktemp("home")
    dataset = datasets.ingest(data)
    split_df = splits.split(dataset.index, SplitConfig(seed=1, train_fraction=0.5, val_fraction=0.25,
                                                       test_fraction=0.25))
    rename = dict(zip(dataset.classes, HOSTILE_NAMES, strict=True))
    split_df["label"] = split_df["label"].map(rename)
    labels = [rename[c] for c in dataset.classes]
    model = tiny_classifier(len(labels))
    writer = RunStore(home).create(TrainConfig(weights=None), labels, split_df,
                                   {"name": HOSTILE_DATASET}, device={"kind": "cpu"})
    writer.save_model(model)
    test = split_df[split_df["split"] == "test"]
    from core.data import images
    pixels = np.stack([images.load_resized(p, 32) for p in test["path"]]).astype("float32")
    probs = np.asarray(model(pixels, training=False))
    result = evaluation.evaluate_probabilities(probs, test["label_index"].to_numpy(), labels,
                                               test["path"].tolist())
    writer.write_metrics({"test": result.to_dict(), "test_accuracy": result.accuracy,
                          "unsure_threshold": 0.4})
    writer.set_status("completed")
    return home


@pytest.fixture
def home(hostile_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TL_STUDIO_HOME", str(hostile_home))
    return hostile_home


@pytest.fixture(scope="module")
def hostile_dataset(tmp_path_factory: pytest.TempPathFactory) -> state.LoadedDataset:
    """A dataset on disk whose class folders and files carry the hostile names a folder can."""
    root = tmp_path_factory.mktemp("hostile") / "set"
    for number, name in enumerate(FOLDER_NAMES):
        folder = root / name
        folder.mkdir(parents=True)
        for variant in range(5):
            (folder / f"{name} {variant}.png").write_bytes(png(number, variant))
    dataset = datasets.ingest(root)
    assert dataset.report.usable, dataset.report.errors
    return state.LoadedDataset(dataset=dataset, name=HOSTILE_DATASET, source="upload:hostile")


@pytest.mark.parametrize("name", ["0_Home", "3_Evaluate", "5_Compare", "6_Export"])
def test_pages_with_a_hostile_run_show_names_as_text(home: Path, name: str) -> None:
    at = page(name).run()
    expected = {"0_Home": [], "5_Compare": [], "6_Export": []}.get(name, HOSTILE_NAMES)
    check_page(at, expected)


def test_evaluate_gallery_and_every_confusion_cell_show_names_as_text(home: Path) -> None:
    at = page("3_Evaluate").run()
    labels = at.selectbox(key=state.EVAL_TRUE).options
    for true in labels[:4]:
        at.selectbox(key=state.EVAL_TRUE).set_value(true).run()
        check_page(at, [true])


def test_predict_shows_hostile_classes_and_file_names_as_text(home: Path) -> None:
    at = page("4_Predict").run()
    check_page(at, [])
    uploader = at.file_uploader(key=state.PREDICT_UPLOAD)
    uploader.upload("**bold** <img src=x onerror=alert(1)> :smile:.png", png(0, 1), "image/png")
    at.run()
    check_page(at, ["**bold** <img src=x onerror=alert(1)> :smile:.png"])


def test_dataset_and_train_pages_show_hostile_dataset_names_as_text(
        home: Path, hostile_dataset: state.LoadedDataset) -> None:
    at = page("1_Dataset")
    at.session_state[state.LOADED] = hostile_dataset
    at.run()
    check_page(at, FOLDER_NAMES)

    config = SplitConfig(seed=1)
    current = state.CurrentDataset(loaded=hostile_dataset, split_config=config,
                                   split=splits.split(hostile_dataset.dataset.index, config))
    at = page("2_Train")
    at.session_state[state.CURRENT] = current
    at.run()
    check_page(at, [HOSTILE_DATASET])


def test_the_demo_view_shows_hostile_classes_as_text(home: Path) -> None:
    from ui import demo, links

    at = page("4_Predict")
    at.query_params[links.VIEW] = links.DEMO
    at.run()
    check_page(at, HOSTILE_NAMES)  # "It knows: ..." lists every class
    at.file_uploader(key=demo.UPLOAD).upload("**x** :smile:.png", png(1, 2), "image/png")
    at.run()
    check_page(at, [])
