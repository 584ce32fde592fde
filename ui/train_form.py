"""The Train page's form: the base picker, options from TrainConfig metadata, starting a job."""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, Any

import pandas as pd
import streamlit as st

from core import config
from core.config import HIDDEN_LAYER_PRESETS, TrainConfig
from core.features import backbones
from core.features import weights as base_weights
from core.runs import head_choice
from core.training import pipeline as training
from ui import resources, roles, state, widgets
from ui.errors import show_user_errors
from ui.widgets import InvalidInput

if TYPE_CHECKING:
    from ui.state import CurrentDataset

WEIGHTS_IMAGENET = "ImageNet (pretrained)"
WEIGHTS_FILE = "A weights file on the server"
WEIGHTS_RANDOM = "Random weights (for quick tests)"
WEIGHTS_KINDS = (WEIGHTS_IMAGENET, WEIGHTS_FILE, WEIGHTS_RANDOM)
CUSTOM_HIDDEN = "custom sizes..."

OPTION_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Training", ("head", "search_seconds", "epochs", "batch_size", "learning_rate",
                  "early_stopping_patience", "class_weights", "seed")),
    ("Head: hidden layers and regularisation (manual head; the search's starting point)",
     ("dropout", "l2", "label_smoothing")),
    ("Augmentation", ("augment", "augment_views")),
    ("Top blocks on cached activations (retrains the top of the base at a fraction of "
     "fine-tuning's cost)",
     ("tune_top_blocks", "tune_top_blocks_epochs", "tune_top_blocks_learning_rate")),
    ("Fine-tuning (optional, slower: retrains the top of the base)",
     ("fine_tune_layers", "fine_tune_epochs", "fine_tune_learning_rate", "fine_tune_averaging")),
)


# TrainConfig fields with widgets of their own, not built from OPTION_GROUPS.
PICKED_ELSEWHERE: dict[str, str] = {
    "backbone": "the base picker", "weights": "the base picker",
    "hub_handle": "the base picker (TF Hub)", "hub_input_size": "the base picker (TF Hub)",
    "hidden_units": "the hidden layers preset",
}
# TrainConfig fields the page deliberately leaves out, and why (none today).
HIDDEN_OPTIONS: dict[str, str] = {}


@st.cache_data(ttl=300, show_spinner="Checking whether weights can be downloaded...")
def _download_possible(offline_flag: str) -> bool:
    del offline_flag  # part of the cache key: TL_STUDIO_OFFLINE changes the answer
    return base_weights.network_available()


def download_possible() -> bool:
    """Whether Keras' weights server is reachable (checked at most every 5 minutes)."""
    return _download_possible(os.environ.get(base_weights.OFFLINE_ENV_VAR, ""))


def weights_here(spec: backbones.BackboneSpec) -> bool:
    """Whether the base's ImageNet weights file is in Keras' cache folder right now."""
    return base_weights.weights_available(spec, allow_download=False)


def missing_weights_text(spec: backbones.BackboneSpec) -> str:
    """Where to put a base's weights file when it is not here and cannot be downloaded."""
    folder = base_weights.keras_models_dir()
    return (f"The ImageNet weights of {spec.display_name} are not on this machine and cannot "
            f"be downloaded. Put the file `{spec.weights_file}` (from {spec.weights_url}) into "
            f"the folder `{folder}`, or set KERAS_HOME to a folder whose `models/` subfolder "
            "holds it; or choose another base, a weights file, or random weights.")


def bases_table() -> pd.DataFrame:
    """One row per registry base: size, speed and whether its weights are available here."""
    can_download = None
    rows = []
    for spec in backbones.BACKBONES.values():
        if weights_here(spec):
            availability = "yes, on this machine"
        else:
            if can_download is None:
                can_download = download_possible()
            availability = ("downloads on first use" if can_download
                            else "missing: see below")
        rows.append({
            "Base": spec.display_name, "Input size": f"{spec.input_size} px",
            "Parameters (M)": spec.params / 1e6, "Depth (layers)": spec.depth,
            "Weights file (MB)": spec.weights_mb, "Relative speed": spec.relative_speed,
            "Weights available": availability,
        })
    return pd.DataFrame(rows)


def base_picker() -> dict[str, Any]:
    """Chooses the base, its weights or a TF Hub model; returns those TrainConfig values.

    Returns:
        {"backbone", "weights", "hub_handle", "hub_input_size"}; a value may be an
        InvalidInput that build_config() reports.
    """
    with st.expander("Compare the bases", expanded=False):
        st.dataframe(bases_table(), hide_index=True, width="stretch", column_config={
            "Parameters (M)": st.column_config.NumberColumn(format="%.1f"),
            "Weights file (MB)": st.column_config.NumberColumn(format="%.1f"),
            "Relative speed": st.column_config.NumberColumn(
                format="%.2f×", help="Images per second on a CPU relative to MobileNetV2; "
                                     "higher is faster."),
        })
    names = [*backbones.BACKBONES, backbones.HUB_BACKBONE]

    def describe(name: str) -> str:
        if name == backbones.HUB_BACKBONE:
            return "TF Hub model (handle, URL or SavedModel folder)"
        spec = backbones.BACKBONES[name]
        return (f"{spec.display_name} · {spec.input_size} px · {spec.params / 1e6:.1f} M "
                f"parameters · {spec.weights_mb:.0f} MB · speed {spec.relative_speed:g}×")

    name = st.selectbox("Pretrained base", names, key=state.TRAIN_BASE, format_func=describe,
                        persist_state="session",
                        help="The network pretrained on ImageNet whose features the new head "
                             "learns from. Faster bases train sooner; bigger ones are often "
                             "more accurate.")
    values: dict[str, Any] = {"backbone": name, "weights": "imagenet", "hub_handle": None}
    if name == backbones.HUB_BACKBONE:
        values.update(widgets.config_inputs(
            TrainConfig, key_prefix=state.TRAIN_PREFIX, fields=("hub_handle", "hub_input_size"),
            columns=2))
        if not values["hub_handle"]:
            values["hub_handle"] = InvalidInput(
                "Type a TF Hub image feature-vector handle or URL, or the path of a SavedModel "
                "folder on the server.")
        return values

    spec = backbones.BACKBONES[name]
    kind = st.radio("Weights", WEIGHTS_KINDS, key=state.TRAIN_WEIGHTS_KIND, horizontal=True,
                    persist_state="session",
                    help="Random weights learn almost nothing from photos: use them only to "
                         "check that training works.")
    if kind == WEIGHTS_IMAGENET:
        if weights_here(spec):
            st.caption(f":material/check_circle: Weights file `{spec.weights_file}` is in "
                       f"`{base_weights.keras_models_dir()}`.")
        elif download_possible():
            st.caption(f":material/download: `{spec.weights_file}` ({spec.weights_mb:.0f} MB) "
                       "will be downloaded into Keras' cache when training starts.")
        else:
            st.warning(missing_weights_text(spec), icon=":material/warning:")
    elif kind == WEIGHTS_FILE:
        path = st.text_input("Weights file on the server", key=state.TRAIN_WEIGHTS_FILE,
                             persist_state="session",
                             placeholder=f"/models/{spec.weights_file}",
                             help=f"No-top weights of {spec.display_name} (.h5, .hdf5 or "
                                  ".keras), readable by the server.").strip()
        values["weights"] = path or InvalidInput(
            "Type the path of the weights file, or choose other weights.")
    else:
        values["weights"] = None
        st.caption(":material/science: Random weights: fast and fine for trying the app, but "
                   "the model will not be accurate.")
    return values


# ----------------------------------------------------------------------------- options


def hidden_layers_input() -> tuple[int, ...] | InvalidInput:
    """The head's hidden layers: a preset from HIDDEN_LAYER_PRESETS or custom sizes."""
    presets = [*HIDDEN_LAYER_PRESETS, CUSTOM_HIDDEN]
    field = next(f for f in dataclasses.fields(TrainConfig) if f.name == "hidden_units")
    choice = st.selectbox(widgets.field_label(field), presets, key=state.TRAIN_HIDDEN_PRESET,
                          persist_state="session", help=config.field_help(field) or None)
    if choice != CUSTOM_HIDDEN:
        return HIDDEN_LAYER_PRESETS[choice]
    return widgets.field_widget(field, tuple[int, ...], (512, 256),
                                f"{state.TRAIN_PREFIX}.hidden_units")


def options_form() -> dict[str, Any]:
    """Every training option, grouped, with bounds and help from TrainConfig's metadata."""
    values: dict[str, Any] = {}
    for title, names in OPTION_GROUPS:
        with st.expander(title, expanded=title == "Training"):
            if title.startswith("Head"):
                values["hidden_units"] = hidden_layers_input()
            values.update(widgets.config_inputs(TrainConfig, key_prefix=state.TRAIN_PREFIX,
                                                fields=names, columns=3))
    return values


def head_advice(current: CurrentDataset, config: TrainConfig) -> None:
    """Suggests searching the head's settings where it pays for this dataset."""
    if config.head == "search":
        return
    photos = int(current.split["split"].isin(("train", "val")).sum())
    issues = (current.audit or {}).get("label_issues") if (current.audit or {}).get("ran") else None
    why = head_choice.search_advice(photos, issues)
    if why:
        st.info(f"{why} Choose **search the head's settings** under Training (adds about "
                f"{config.search_seconds:.0f} s).", icon=":material/lightbulb:")


def job_title(current: CurrentDataset, config: TrainConfig) -> str:
    """A short title of a training job for job lists."""
    base = (f"TF Hub {config.hub_handle}" if config.backbone == backbones.HUB_BACKBONE
            else backbones.BACKBONES[config.backbone].display_name.replace(" (default)", ""))
    weights = ("random weights" if config.weights is None and not config.hub_handle
               else "" if config.weights in ("imagenet", None) else "own weights")
    epochs = f"{config.epochs} epoch{'s' if config.epochs != 1 else ''}" + (
        f" + {config.fine_tune_epochs} fine-tune" if config.fine_tune_layers else
        f" + top {config.tune_top_blocks} block(s)" if config.tune_top_blocks else "")
    augmented = "augmented" if config.augments else ""  # says what "automatic" chose
    return " · ".join(p for p in (current.name, base, weights, epochs, augmented) if p)


def check_weights(config: TrainConfig) -> None:
    """Raises WeightsUnavailableError now when ImageNet weights are missing and offline."""
    if config.backbone == backbones.HUB_BACKBONE or config.weights != "imagenet":
        return
    spec = backbones.get_spec(config.backbone)
    if not weights_here(spec) and not download_possible():
        base_weights.resolve_weights(spec, "imagenet")  # raises, naming the file and the folder


def start(current: CurrentDataset, config: TrainConfig) -> str | None:
    """Submits training to the server's job manager; returns the job id (None after an error).

    The job belongs to the server process: page switches, reruns and closed tabs do not stop
    it. Its id is kept in this session, and any session can find it in the jobs list.
    """
    with show_user_errors("Cannot start training:") as outcome:
        roles.require("start training")
        check_weights(config)
        job_id = resources.job_manager().submit(
            training.train, title=job_title(current, config), kind="train",
            split_df=current.split, config=config, home=resources.home(),
            dataset_info=current.info(),
        )
    if outcome.failed:
        return None
    st.session_state[state.JOB_ID] = job_id
    st.session_state[state.TRAIN_WATCH_NEXT] = job_id  # shown first on the next run
    return job_id
