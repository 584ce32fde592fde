"""Every option of the studio as frozen dataclasses, with bounds and help for the UI."""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import ConfigError

HOME_ENV_VAR = "TL_STUDIO_HOME"
DEFAULT_HOME = Path("~/.tl-studio")
# Fewest distinct usable images a class may have: one each for train, validation and test.
# Inspecting a dataset and training on it apply this one rule.
MIN_IMAGES_PER_CLASS = 3


def studio_home(override: str | Path | None = None) -> Path:
    """Returns the folder holding all studio state (runs, caches, uploads).

    Order: an explicit override (the command line's --home), then $TL_STUDIO_HOME, then
    ~/.tl-studio. The folder is created if missing.

    Raises:
        ConfigError: when the folder cannot be created or written to, naming it and how to
            choose another.
    """
    chosen = override or os.environ.get(HOME_ENV_VAR) or DEFAULT_HOME
    home = Path(chosen).expanduser().resolve()
    how = (f"Choose a folder you can write to: set {HOME_ENV_VAR}, or pass --home DIR to "
           "python -m core.")
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"Cannot create the studio home folder {home} "
                          f"({exc.strerror or exc}). {how}") from exc
    try:  # a file created and removed at once: the only test a read-only mount cannot fool
        tempfile.TemporaryFile(dir=home).close()
    except OSError as exc:
        raise ConfigError(f"Cannot write to the studio home folder {home} "
                          f"({exc.strerror or exc}). {how}") from exc
    return home


def option(default: Any, help: str, label: str | None = None, **bounds: Any) -> Any:
    """A dataclass field whose metadata carries UI help text and validation bounds.

    Bounds understood: min, max, step (numbers), choices (allowed values), and choice_labels
    (value -> text shown for it). `flag` names the command-line flag when it is not the
    field's name, `flag_aliases` older flags that still work (core.flags builds the flags,
    ui.widgets the widgets, from this metadata).
    """
    meta = {"help": help, "label": label, **bounds}
    if isinstance(default, (list, dict, set)):
        raise TypeError("use an immutable default (tuple, frozenset)")
    return field(default=default, metadata=meta)


def _number(value: float) -> str:
    return f"{value:,}" if isinstance(value, int) and abs(value) >= 10_000 else f"{value:g}"


def unwrap_optional(hint: Any) -> tuple[Any, bool]:
    """(inner type, allows None) for `X | None`; (hint, False) otherwise.

    The command line's flags and the Train page's widgets both read a field's type with it.
    """
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else Any), True
    return hint, False


def field_help(f: dataclasses.Field) -> str:
    """A field's help text followed by its bounds, such as "(from 1 to 500)".

    The Train page's widgets and the command line's flags both show this text.
    """
    meta = f.metadata
    text = meta.get("help") or ""
    low, high = meta.get("min"), meta.get("max")
    if low is not None and high is not None:
        text += f" (from {_number(low)} to {_number(high)})"
    elif low is not None:
        text += f" (at least {_number(low)})"
    elif high is not None:
        text += f" (at most {_number(high)})"
    return text.strip()


def validate_bounds(obj: Any) -> None:
    """Raises ConfigError for the first field outside its metadata bounds, or not finite."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        meta = f.metadata
        name = meta.get("label") or f.name.replace("_", " ")
        if "choices" in meta and value not in meta["choices"]:
            allowed = ", ".join(repr(c) for c in meta["choices"])
            raise ConfigError(f"{name} must be one of {allowed}; got {value!r}.")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if not math.isfinite(value):  # nan passes every comparison, inf every max-less one
            raise ConfigError(f"{name} must be a finite number; got {value}.")
        if "min" in meta and value < meta["min"]:
            raise ConfigError(f"{name} must be at least {meta['min']}; got {value}.")
        if "max" in meta and value > meta["max"]:
            raise ConfigError(f"{name} must be at most {meta['max']}; got {value}.")


@dataclass(frozen=True)
class IngestConfig:
    """How uploads and folders are turned into a validated dataset.

    Attributes:
        min_side: Images smaller than this on either side are rejected.
        max_pixels: Images with more pixels than this are rejected (decompression bombs).
        max_file_bytes: Larger files are rejected without being read, and larger zip entries
            without being unpacked.
        max_zip_bytes: Largest total uncompressed size of a zip, checked before extraction.
        max_zip_entries: Largest number of entries in a zip, checked before extraction.
        max_uploads_bytes: Size budget of the extracted uploads; the least recently used are
            removed first when a new one makes them exceed it, never one a saved dataset uses.
        drop_cross_class_duplicates: Leave out images whose exact content appears in two classes.
        min_images_per_class: A class with fewer usable images makes the dataset unusable.
        warn_images_per_class: A class with fewer usable images gets a warning.
        warn_imbalance_ratio: Warn when the largest class is more than this many times the smallest.
        workers: Processes used to read images; 0 means one per CPU core.
    """

    min_side: int = option(16, "Smallest accepted width or height, in pixels.", min=1, max=4096)
    max_pixels: int = option(
        89_478_485, "Largest accepted image, in pixels (guards against decompression bombs).",
        min=1_000, max=1_000_000_000,
    )
    max_file_bytes: int = option(
        100 * 1024**2, "Largest accepted image file, in bytes; larger files are not read.",
        min=1024, max=1024**4,
    )
    max_zip_bytes: int = option(
        8 * 1024**3, "Largest total uncompressed size of an uploaded zip, in bytes.",
        min=1, max=1024**4,
    )
    max_zip_entries: int = option(
        200_000, "Largest number of files in an uploaded zip.", min=1, max=10_000_000
    )
    max_uploads_bytes: int = option(
        4 * 1024**3, "Size budget of extracted uploads, in bytes; the least recently used "
        "are removed first.", min=1, max=1024**5,
    )
    drop_cross_class_duplicates: bool = option(
        True, "Leave out identical photos that appear under two different classes."
    )
    min_images_per_class: int = option(
        MIN_IMAGES_PER_CLASS,
        "Fewest usable images a class may have (one each for train, validation and test).",
        min=MIN_IMAGES_PER_CLASS,
    )
    warn_images_per_class: int = option(10, "Warn when a class has fewer images than this.", min=1)
    warn_imbalance_ratio: float = option(
        5.0, "Warn when the largest class is this many times the smallest.", min=1.0
    )
    workers: int = option(0, "Processes used to read images (0: one per CPU core).", min=0, max=64)

    def __post_init__(self) -> None:
        validate_bounds(self)


@dataclass(frozen=True)
class SplitConfig:
    """How a dataset is split into train, validation and test sets.

    Attributes:
        train_fraction: Share of each class used for training.
        val_fraction: Share of each class used for validation (early stopping, threshold).
        test_fraction: Share of each class held out for the final evaluation.
        seed: Seed of the shuffle; the same seed and data give the same split.
    """

    train_fraction: float = option(0.7, "Share of each class used to train.", "Train share",
                                   min=0.05, max=0.95, step=0.05)
    val_fraction: float = option(0.15, "Share of each class used to validate while training.",
                                 "Validation share", min=0.025, max=0.9, step=0.025)
    test_fraction: float = option(0.15, "Share of each class held out to measure the model.",
                                  "Test share", min=0.025, max=0.9, step=0.025)
    seed: int = option(0, "Seed of the shuffle: same seed, same split.", min=0, max=2**31 - 1)

    def __post_init__(self) -> None:
        validate_bounds(self)
        total = self.train_fraction + self.val_fraction + self.test_fraction
        if abs(total - 1.0) > 1e-6:
            raise ConfigError(
                f"Train, validation and test shares must add up to 1; they add up to {total:g}. "
                "Lower one of them."
            )


# TrainConfig.augment: "auto" augments only when fine-tuning.
AUGMENT_CHOICES = ("auto", "on", "off")

# What an empty fine-tune learning rate means (the Train page's placeholder, the flag's default).
FINE_TUNE_RATE_UNSET = "a tenth of the head's"

# TrainConfig.head: "manual" trains the settings as given; "search" chooses them by
# cross-validation (core.training.head_search), which measured no better on real photos.
HEAD_CHOICES = ("manual", "search")

HIDDEN_LAYER_PRESETS: dict[str, tuple[int, ...]] = {
    "none (linear head)": (),
    "one layer (256)": (256,),
    "three layers (1024-512-256, a common recipe)": (1024, 512, 256),
}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides how a model is trained.

    Attributes:
        backbone: Registry name of the pretrained base, or "tfhub" with hub_handle set.
        weights: "imagenet" (Keras cache, downloading when missing), a weights file path,
            or None for a randomly initialised base (to check quickly that training works).
        hub_handle: TF Hub handle, URL or local SavedModel folder when backbone is "tfhub".
        hub_input_size: Square input size the TF Hub model expects.
        epochs: Most epochs of head training (early stopping may end sooner).
        batch_size: Images (or feature vectors) per training step.
        learning_rate: Adam learning rate of the head.
        hidden_units: Sizes of hidden Dense layers before the softmax; empty for a linear head.
        dropout: Dropout rate before each Dense layer of the head.
        l2: L2 weight penalty of the head's Dense layers.
        class_weights: "off", or "balanced" to weigh classes inversely to their size.
        early_stopping_patience: Epochs without validation improvement before stopping; 0 = off.
        augment: "on", "off", or "auto" (the default): on only when fine-tuning. Random flips,
            rotations, zooms and contrast changes of the training photos; True and False
            (older runs) mean "on" and "off". `augments` says what a config does.
        augment_views: Augmented copies of each training image cached for the frozen base.
        fine_tune_layers: Top layers of the base to unfreeze after the head converges; 0 = off.
        fine_tune_epochs: Epochs of fine-tuning.
        fine_tune_learning_rate: Learning rate of fine-tuning; None (the default) is a tenth
            of the head's learning rate the run uses (the search's choice or the manual one).
            Set with a manual head, it may be at most a tenth of that head's.
        fine_tune_averaging: Whether fine-tuning ends with the mean of its epoch-end weights
            from the second epoch on (stochastic weight averaging) rather than the best epoch's.
        tune_top_blocks: Top blocks of the base trained, with the head, on their cached input
            tensors (core.training.top_blocks); 0 = the frozen base's head only.
        tune_top_blocks_epochs: Most epochs of that training (early stopping may end sooner).
        tune_top_blocks_learning_rate: Its Adam learning rate.
        seed: Seed for weights initialisation, shuffling and augmentation.
        head: "manual" (the default): the settings above as given, validation held out;
            "search": the head's L2, dropout, learning rate, label smoothing, hidden layer and
            augmented views are chosen by cross-validation on the cached features of train +
            validation (core.training.head_search), and the winner is refitted on both.
        search_seconds: Time budget of the search; a small dataset finishes sooner.
        label_smoothing: Share of each training label spread evenly over all classes.
    """

    backbone: str = option(
        "mobilenet_v2", "Pretrained base the new head is trained on: a name that `python -m "
        "core bases` lists, or tfhub for a TF Hub model (with a hub handle).", "Base", flag="base",
        flag_aliases=("backbone",))
    weights: str | None = option(
        "imagenet", "'imagenet' for the standard pretrained weights, a weights file path, or "
        "none for random weights (only to check that training works)."
    )
    hub_handle: str | None = option(
        None, "TF Hub feature-vector model: handle, URL or local SavedModel folder."
    )
    hub_input_size: int = option(224, "Input size the TF Hub model expects.", min=32, max=1024)
    epochs: int = option(30, "Most passes over the training images for the head.", "Epochs",
                         min=1, max=500)
    batch_size: int = option(32, "Images per training step.", "Batch size", min=1, max=1024)
    learning_rate: float = option(1e-3, "Adam learning rate of the new head.", "Learning rate",
                                  min=1e-6, max=1.0)
    hidden_units: tuple[int, ...] = option(
        (), "Sizes of the hidden Dense layers between the base and the softmax, such as 512 "
        "256 (none: a linear head).", "Hidden layers"
    )
    dropout: float = option(0.5, "Share of features dropped at random while training.",
                            "Dropout", min=0.0, max=0.9, step=0.05)
    l2: float = option(1e-4, "L2 penalty on the head's weights (0 for none).", "L2", min=0.0,
                       max=1.0)
    class_weights: str = option("off", "'balanced' weighs rare classes up.", "Class weights",
                                choices=("off", "balanced"))
    early_stopping_patience: int = option(
        5, "Stop after this many epochs without validation improvement (0: never).",
        "Early stopping patience", min=0, max=100, flag="patience",
    )
    augment: str = option(
        "auto", "Train on randomly flipped, rotated, zoomed and contrast-changed copies too. "
        "Automatic: only when fine-tuning, where it pays; a frozen base computes each copy once "
        "more, which costs time for no clear gain (docs/benchmarks.md).",
        "Augmentation", choices=AUGMENT_CHOICES,
        choice_labels={"auto": "automatic (when fine-tuning)", "on": "on", "off": "off"},
    )
    augment_views: int = option(2, "Augmented copies of each training photo, when augmenting "
                                "a frozen base.", "Augmented views", min=1, max=20)
    fine_tune_layers: int = option(
        0, "Top layers of the base to unfreeze and retrain (0: off). About a third of the "
        "base's layers is a good start: 50 of MobileNetV2's 155 (the bases table lists each "
        "depth).", "Fine-tune layers", min=0, max=1000)
    fine_tune_epochs: int = option(
        8, "Epochs of fine-tuning. With the epochs' weights averaged, 8 epochs were a little "
        "more accurate than 5 on the benchmark photos (docs/benchmarks.md).",
        "Fine-tune epochs", min=1, max=200)
    fine_tune_learning_rate: float | None = option(
        None, "Learning rate while fine-tuning, 10 to 100 times below the head's. Empty: a "
        "tenth of the head's learning rate the run uses (the search's choice, or yours).",
        "Fine-tune learning rate", min=1e-8, max=0.1, unset=FINE_TUNE_RATE_UNSET,
    )
    fine_tune_averaging: bool = option(
        True, "Keep the average of the weights at the end of each fine-tuning epoch after the "
        "first (stochastic weight averaging) instead of the best epoch's: steadier and more "
        "accurate (docs/benchmarks.md).",
        "Average the fine-tuning epochs",
    )
    tune_top_blocks: int = option(
        0, "Top blocks of the base to retrain, with the head, on their cached input tensors "
        "(0: the frozen base's head only). Each epoch runs only those blocks, so it costs a "
        "fraction of fine-tuning; a second run reuses the cached tensors (docs/benchmarks.md).",
        "Top blocks trained on cached activations", min=0, max=8)
    tune_top_blocks_epochs: int = option(
        10, "Most epochs of training the top blocks (early stopping may end sooner).",
        "Top-block epochs", min=1, max=200)
    tune_top_blocks_learning_rate: float = option(
        1e-4, "Adam learning rate of the top blocks and the head while they train together.",
        "Top-block learning rate", min=1e-7, max=0.1)
    seed: int = option(0, "Seed: the same seed and data train the same model.", "Seed", min=0,
                       max=2**31 - 1)
    head: str = option(
        "manual", "How the head's settings are chosen. The usual settings: the options below "
        "as given (fast). Search: L2, dropout, learning rate, label smoothing, a hidden layer "
        "and augmented views are tried by 5-fold cross-validation on the cached features of "
        "train + validation and the best is refitted on both; it adds about the search budget "
        "to a run and pays on small or noisily labelled datasets (docs/benchmarks.md).",
        "Head", choices=HEAD_CHOICES,
        choice_labels={"manual": "the usual settings",
                       "search": "search the head's settings"},
    )
    search_seconds: float = option(
        20.0, "Time budget of the head search, in seconds; a small dataset "
        "finishes sooner.", "Search budget (s)", min=1.0, max=3600.0)
    label_smoothing: float = option(
        0.0, "Share of each training label spread evenly over all classes (0: none).",
        "Label smoothing", min=0.0, max=0.5, step=0.05)

    def __post_init__(self) -> None:
        if isinstance(self.augment, bool):  # runs saved before "auto" stored a bool
            object.__setattr__(self, "augment", "on" if self.augment else "off")
        validate_bounds(self)
        if any((not isinstance(u, int)) or u < 1 or u > 8192 for u in self.hidden_units):
            raise ConfigError(
                f"Hidden layer sizes must be whole numbers from 1 to 8192; got {self.hidden_units}."
            )
        if self.backbone == "tfhub" and not self.hub_handle:
            raise ConfigError("A TF Hub base needs a handle, URL or SavedModel folder.")
        # Only a relation between two values the user set can be refused here: with the
        # search, the head's rate is known once it has run (fine_tune_rate() resolves it).
        chosen = self.fine_tune_learning_rate
        if (self.fine_tune_layers and self.head == "manual" and chosen is not None
                and chosen > self.learning_rate / 10):
            raise ConfigError(
                f"Fine-tune learning rate {chosen:g} is too large: use at most a tenth of the "
                f"head's ({self.learning_rate / 10:g}) so the pretrained weights are not "
                "destroyed, or leave it empty (a tenth of the head's)."
            )
        if self.tune_top_blocks and self.fine_tune_layers:
            raise ConfigError(
                "Choose either top blocks trained on cached activations or fine-tuned layers, "
                "not both: set one of them to 0.")
        if self.tune_top_blocks and self.backbone == "tfhub":
            raise ConfigError("A TF Hub base has no blocks to cut at: set the top blocks to 0 "
                              "or choose a registry base.")

    def fine_tune_rate(self, head_learning_rate: float, searched: bool) -> tuple[float, str]:
        """The fine-tuning learning rate a run uses and, in words, where it comes from.

        Args:
            head_learning_rate: The learning rate the head was trained with.
            searched: Whether the head search chose that rate.
        """
        if self.fine_tune_learning_rate is not None:
            return float(self.fine_tune_learning_rate), "as set"
        whose = "chosen by the head search" if searched else "as set"
        return (head_learning_rate / 10,
                f"a tenth of the head's learning rate {head_learning_rate:g}, {whose}")

    @property
    def augments(self) -> bool:
        """Whether training augments: "on", or "auto" with fine-tuning."""
        return self.augment == "on" or (self.augment == "auto" and self.fine_tune_layers > 0)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (tuples become lists)."""
        data = dataclasses.asdict(self)
        data["hidden_units"] = list(self.hidden_units)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of to_dict; unknown keys are ignored so old runs stay readable."""
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        kwargs.setdefault("fine_tune_averaging", False)  # runs from before it did not average
        kwargs.setdefault("tune_top_blocks", 0)  # runs from before it existed
        kwargs.setdefault("head", "manual")  # runs from before the search set the head by hand
        if "hidden_units" in kwargs:
            kwargs["hidden_units"] = tuple(int(u) for u in kwargs["hidden_units"])
        return cls(**kwargs)


@dataclass(frozen=True)
class AuditConfig:
    """How a dataset is audited for wrong labels, near-duplicates and outliers (core.audit.findings).

    Attributes:
        backbone: Pretrained base whose (cached) features the audit reads.
        weights: 'imagenet' for the standard weights, or a weights file path.
        folds: Cross-validation folds giving every photo an out-of-sample prediction.
        max_label_confidence: Of the photos confident learning flags, only those whose given
            label has a lower out-of-sample probability are reported. On flower photos with
            2-5% of labels flipped, cleanlab alone flags 2-3 times as many photos as were
            flipped (flowers that do look like another class); 0.08 keeps 67-87% of the
            flipped ones with 45-62% of those reported flipped (docs/benchmarks.md).
        near_duplicate_threshold: Cosine similarity of features from which two photos are
            near-duplicates outright. Measured with MobileNetV2 on flower_photos_300
            (docs/benchmarks.md): no two different photos score 0.95 or more except two pairs
            of the same scene shot twice (0.97, 0.999).
        candidate_threshold: Below near_duplicate_threshold, a pair from this cosine
            similarity up is a near-duplicate when its pixels match (pixel_threshold).
            Features alone cannot separate: a copy resized to half scores 0.77-0.98, a
            different photo of the same flower up to 0.93. 0.75 keeps every measured resized,
            recompressed (JPEG quality 50), 5-10% cropped or flipped copy as a candidate.
        pixel_threshold: Correlation of small greyscale thumbnails (allowing a 5-10% crop and
            a mirror image) from which a candidate pair is a near-duplicate: such copies
            measured at least 0.958, different photos at most 0.929.
        outlier_neighbours: Neighbours within the class whose mean distance measures how
            unlike its class a photo is.
        outlier_z: Robust z-score of that distance (against the class's photos) from which a
            photo is reported as an outlier. 3.0 reports, on 770 flower photos with a scanned
            document planted, a bridge, a mosaic, cupcakes and the document (4th).
        seed: Seed of the cross-validation folds and of the split the leaks are checked on.
    """

    backbone: str = option("mobilenet_v2", "Pretrained base whose features are compared.",
                           "Base")
    weights: str | None = option(
        "imagenet", "'imagenet' for the standard pretrained weights, or a weights file path."
    )
    folds: int = option(5, "Cross-validation folds for the out-of-sample predictions.",
                        "Folds", min=2, max=10)
    max_label_confidence: float = option(
        0.08, "Report a flagged photo only when its given label has a lower probability.",
        "Label confidence below", min=0.01, max=1.0, step=0.01)
    near_duplicate_threshold: float = option(
        0.95, "Cosine similarity of features from which two photos are near-duplicates.",
        "Near-duplicate similarity", min=0.5, max=0.9999, step=0.01)
    candidate_threshold: float = option(
        0.75, "Cosine similarity from which a pair is checked pixel by pixel.",
        "Candidate similarity", min=0.3, max=0.9999, step=0.01)
    pixel_threshold: float = option(
        0.95, "Thumbnail correlation (crop and mirror allowed) confirming a candidate pair.",
        "Pixel match", min=0.5, max=1.0, step=0.01)
    outlier_neighbours: int = option(5, "Neighbours in the class a photo is compared with.",
                                     "Outlier neighbours", min=1, max=50)
    outlier_z: float = option(3.0, "Robust z-score of the distance to the class from which a "
                              "photo is an outlier.", "Outlier z-score", min=1.0, max=20.0,
                              step=0.5)
    seed: int = option(0, "Seed of the folds and of the split checked for leaks.", min=0,
                       max=2**31 - 1)

    def __post_init__(self) -> None:
        validate_bounds(self)
