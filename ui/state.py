"""Session-state keys, and the dataset a session has loaded and chosen for the next pages."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd
import streamlit as st

from core.config import SplitConfig

if TYPE_CHECKING:
    from core.data.datasets import Dataset

# Data kept by the app (not widget values): survive page switches.
LOADED = "tl_loaded_dataset"          # LoadedDataset just ingested on the Dataset page
CURRENT = "tl_current_dataset"        # CurrentDataset chosen with "Use this dataset"
JOB_ID = "tl_train_job_id"            # the training job this session started last
LAST_RUN = "tl_last_run_id"           # run id of the last training this session saw finish

# Widget keys.
SOURCE_KIND = "tl_dataset_source_kind"
UPLOAD = "tl_dataset_upload"
FOLDER = "tl_dataset_folder"
LOAD_FOLDER = "tl_dataset_load_folder"
USE_DATASET = "tl_dataset_use"
THUMBNAIL_CLASSES = "tl_thumbnail_classes"
SPLIT_PREFIX = "tl_split"

# Dataset page: saved datasets (ui.saved_datasets) and the builder (ui.dataset_builder).
# Keys ending in "." take "<dataset id>.<class>[.<photo>]" after them.
SAVED_CHOICE = "tl_saved_choice"
SAVED_OPEN = "tl_saved_open"
SAVED_EDIT = "tl_saved_edit"
SAVED_DOWNLOAD = "tl_saved_download"
SAVED_RENAME = "tl_saved_rename"
SAVED_RENAME_GO = "tl_saved_rename_go"
SAVED_DELETE = "tl_saved_delete"
SAVED_DELETE_ASK = "tl_saved_delete_ask"
SAVED_DELETE_YES = "tl_saved_delete_yes"
SAVED_DELETE_NO = "tl_saved_delete_no"
SAVED_MESSAGES = "tl_saved_messages"      # (kind, text) said by callbacks, shown once
BUILD_DATASET = "tl_build_dataset"        # id of the saved dataset the builder edits
BUILD_SEEN = "tl_build_seen"              # file ids of uploads and camera shots added already
BUILD_NAME = "tl_build_name"
BUILD_CREATE = "tl_build_create"
BUILD_CLOSE = "tl_build_close"
BUILD_NEW_CLASS = "tl_build_new_class"
BUILD_ADD_CLASS = "tl_build_add_class"
BUILD_FILES = "tl_build_files."
BUILD_UPLOADER_GENERATION = "tl_build_uploader_generation"  # {dataset.class: n}: a new uploader
BUILD_CAMERA_ON = "tl_build_camera_on."
BUILD_CAMERA = "tl_build_camera."
BUILD_REMOVE_PHOTO = "tl_build_remove_photo."
BUILD_SHOWN = "tl_build_shown."            # how many thumbnails of a class are shown
BUILD_RENAME = "tl_build_rename."
BUILD_RENAME_GO = "tl_build_rename_go."
BUILD_REMOVE_CLASS = "tl_build_remove_class."
BUILD_REMOVE_CLASS_ASK = "tl_build_remove_class_ask"
BUILD_REMOVE_CLASS_YES = "tl_build_remove_class_yes"
BUILD_REMOVE_CLASS_NO = "tl_build_remove_class_no"
BUILD_USE = "tl_build_use"
BUILD_TRAIN_NOW = "tl_build_train_now"

# Train page.
TRAIN_PREFIX = "tl_train"             # widgets built from TrainConfig metadata: "tl_train.<field>"
TRAIN_BASE = "tl_train_base"
TRAIN_WEIGHTS_KIND = "tl_train_weights_kind"
TRAIN_WEIGHTS_FILE = "tl_train_weights_file"
TRAIN_HIDDEN_PRESET = "tl_train_hidden_preset"
TRAIN_START = "tl_train_start"
TRAIN_WATCH = "tl_train_watch"
TRAIN_WATCH_NEXT = "tl_train_watch_next"  # a job just started: show it on the next run
TRAIN_CANCEL = "tl_train_cancel"
TRAIN_FORGET = "tl_train_forget"

# Evaluate page.
EVAL_RUN = "tl_eval_run"
EVAL_CONFUSION = "tl_eval_confusion"
EVAL_NORMALIZE = "tl_eval_normalize"
EVAL_TRUE = "tl_eval_true"
EVAL_PREDICTED = "tl_eval_predicted"
EVAL_GALLERY_FILTER = "tl_eval_gallery_filter"
EVAL_GALLERY_PAGE = "tl_eval_gallery_page"

# Predict page.
PREDICT_RUN = "tl_predict_run"
PREDICT_UPLOAD = "tl_predict_upload"
PREDICT_CAMERA_ON = "tl_predict_camera_on"
PREDICT_CAMERA = "tl_predict_camera"
PREDICT_TOP_K = "tl_predict_top_k"
PREDICT_CARD = "tl_predict_card"     # + ".<position>": the elements of one photo's card

# Compare page.
COMPARE_RUNS = "tl_compare_runs"
COMPARE_METRIC = "tl_compare_metric"
COMPARE_DELETE = "tl_compare_delete"
COMPARE_DELETE_ASK = "tl_compare_delete_ask"
COMPARE_DELETE_YES = "tl_compare_delete_yes"
COMPARE_DELETE_NO = "tl_compare_delete_no"
COMPARE_DELETED = "tl_compare_deleted"

SOURCE_UPLOAD = "Upload a zip"
SOURCE_FOLDER = "Folder on the server"
SOURCE_SAVED = "Saved datasets"
SOURCE_BUILD = "New dataset"


@dataclass(frozen=True)
class LoadedDataset:
    """An ingested dataset and where it came from.

    Attributes:
        dataset: The result of core.data.datasets.ingest().
        name: Short name for people: the zip's file name or the folder's name.
        source: What was loaded: "upload:<file id>" or the folder path given.
    """

    dataset: Dataset
    name: str
    source: str


@dataclass(frozen=True)
class CurrentDataset:
    """The dataset and split this session uses for training.

    Attributes:
        loaded: The ingested dataset.
        split: Its index with a "split" column (train/val/test).
        split_config: The settings that made the split.
        audit: The audit the split respected and the choices applied
            (core.audit.choices.audit_record), None when none ran.
    """

    loaded: LoadedDataset
    split: pd.DataFrame
    split_config: SplitConfig
    audit: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        """The dataset's short name."""
        return self.loaded.name

    def split_counts(self) -> dict[str, int]:
        """Images per split, in train/val/test order."""
        counts = self.split["split"].value_counts()
        return {name: int(counts.get(name, 0)) for name in ("train", "val", "test")}

    def info(self) -> dict[str, Any]:
        """Facts stored with a training run (training's dataset_info)."""
        dataset = self.loaded.dataset
        return {
            "name": self.name,
            "source": self.loaded.source,
            "root": str(dataset.root),
            "classes": list(dataset.classes),
            "images": int(len(self.split)),
            "split": self.split_counts(),
            "split_config": {
                "train_fraction": self.split_config.train_fraction,
                "val_fraction": self.split_config.val_fraction,
                "test_fraction": self.split_config.test_fraction,
                "seed": self.split_config.seed,
            },
            "audit": self.audit or {"ran": False},
        }


def loaded_dataset() -> LoadedDataset | None:
    """The dataset last ingested in this session, if any."""
    return st.session_state.get(LOADED)


def set_loaded_dataset(loaded: LoadedDataset) -> None:
    """Keeps a freshly ingested dataset (not yet chosen for training)."""
    st.session_state[LOADED] = loaded


def current_dataset() -> CurrentDataset | None:
    """The dataset and split chosen for training in this session, if any."""
    return st.session_state.get(CURRENT)


def use_dataset(loaded: LoadedDataset, split: pd.DataFrame, config: SplitConfig,
                audit: dict[str, Any] | None = None) -> CurrentDataset:
    """Chooses a dataset and its split for the next pages; returns what was stored."""
    if "split" not in split.columns:
        raise ValueError("the split table needs a 'split' column (from core.data.splits.split)")
    current = CurrentDataset(loaded=loaded, split=split.copy(), split_config=config,
                             audit=audit)
    st.session_state[CURRENT] = current
    return current

