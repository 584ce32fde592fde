"""A stored run as readers see it: Run (everything) and RunSummary (one row of the run list)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from core.config import TrainConfig
from core.errors import RunNotUsableError
from core.files import to_jsonable
from core.runs import history as history_table
from core.runs.layout import FAMILIARITY_FILE
from core.status import BROKEN, COMPLETED

if TYPE_CHECKING:
    from core.runs.evaluation import EvalResult

DEFAULT_UNSURE_THRESHOLD = 0.5
HOW_TO_LIST = "See the runs with `python -m core runs` or on the Compare page"


def created_from_id(run_id: str) -> dt.datetime | None:
    """The UTC time stamp at the start of a run id, or None."""
    match = re.match(r"(\d{8}-\d{6})", run_id)
    if not match:
        return None
    try:
        stamp = dt.datetime.strptime(match.group(1), "%Y%m%d-%H%M%S")
    except ValueError:
        return None
    return stamp.replace(tzinfo=dt.UTC)


def parse_time(value: Any) -> dt.datetime | None:
    """An ISO time stamp as an aware datetime (UTC when it has no zone), or None."""
    if not isinstance(value, str):
        return None
    try:
        stamp = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.UTC)


def _metric(metrics: Mapping[str, Any], key: str) -> float | None:
    value = metrics.get(key)
    if value is None and key == "test_accuracy":
        value = (metrics.get("test") or {}).get("accuracy")
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def unusable_message(run_id: str, status: str, error: str | None, action: str) -> str:
    """Why a run cannot be used to <action>, and what to do instead."""
    if status == BROKEN:
        return (f"Run {run_id} is broken and cannot {action}: {error or 'its files are damaged'} "
                f"{HOW_TO_LIST}, and pick a completed run or train again.")
    return (f"Run {run_id} has no trained model (status: {status}). Only completed runs can "
            f"{action}. {HOW_TO_LIST}, and pick one or train again.")


def _count(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and value > 0 else None


@dataclass
class RunSummary:
    """One row of the run list: what the Compare page and `python -m core runs` show.

    Attributes:
        run_id: Folder name of the run.
        run_dir: The run folder.
        created: When training started (UTC), or None when unknown.
        status: running, completed, cancelled, failed, interrupted (its process died while
            running) or broken (files missing or damaged; see error).
        backbone: Registry name of the base.
        dataset: Name of the dataset, when recorded.
        num_classes: Number of classes.
        train_images: Images in the train split.
        total_params: Parameters of the exported model.
        trainable_params: Trainable parameters of the exported model while it was saved.
        depth: Depth of the base, as in the Keras applications table.
        model_size_mb: Size of the model file in MB (10**6 bytes).
        seconds_per_epoch: Average wall time of an epoch.
        best_epoch: Epoch with the best validation accuracy.
        best_val_accuracy: Best validation accuracy.
        test_accuracy: Accuracy on the test split.
        epochs_run: Epochs trained, head and fine-tune together.
        error: The failure message, or why the run is interrupted or broken.
        cv_accuracy: Cross-validated accuracy of the searched head (None: manual head).
        dataset_root: The folder the run's photos were read from, when recorded.
        test_images: Photos in the test split (the test accuracy's sample size).
        fine_tuned: Whether the top of the base was retrained too.
        training_mode: What trained (Run.training_mode): frozen base, fine-tuned layers or
            top blocks on cached activations.
    """

    run_id: str
    run_dir: Path
    created: dt.datetime | None
    status: str
    backbone: str | None = None
    dataset: str | None = None
    num_classes: int | None = None
    train_images: int | None = None
    total_params: int | None = None
    trainable_params: int | None = None
    depth: int | None = None
    model_size_mb: float | None = None
    seconds_per_epoch: float | None = None
    best_epoch: int | None = None
    best_val_accuracy: float | None = None
    test_accuracy: float | None = None
    epochs_run: int = 0
    error: str | None = None
    cv_accuracy: float | None = None
    dataset_root: str | None = None
    test_images: int | None = None
    fine_tuned: bool = False

    @property
    def test_accuracy_text(self) -> str | None:
        """'83% (6 photos: 44-97%)': the test accuracy with its 95% interval, or None."""
        from core.runs import interval

        return interval.accuracy_text(self.test_accuracy, self.test_images)
    training_mode: str | None = None

    @property
    def usable(self) -> bool:
        """Whether the run can predict, be evaluated and exported (completed and not damaged)."""
        return self.status == COMPLETED

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (paths and dates as strings)."""
        return to_jsonable(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunSummary:
        """The summary of to_dict() (as kept in the run index)."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        values["run_dir"] = Path(values["run_dir"])  # a str from JSON
        values["created"] = parse_time(values.get("created"))
        return cls(**values)


@dataclass
class Run:
    """Everything stored for one run, read tolerantly (see problems).

    Attributes:
        run_id: Folder name of the run.
        run_dir: The run folder.
        config: The training options, or None when they are missing or invalid.
        labels: Class names in the order of the model's outputs.
        input_size: Square image size the model takes.
        backbone: Registry name of the base.
        hub_handle: TF Hub handle of the base, for a tfhub run.
        dataset: Facts about the dataset (name, split and class counts...).
        split: The split table (one row per image), or None when unreadable.
        history: One row per epoch (core.runs.history.HISTORY_COLUMNS first).
        events: Progress events, oldest first (torn lines skipped).
        metrics: Evaluation under "test", "unsure_threshold", "seconds"...
        status: The recorded status, with "status" replaced by the effective one (running,
            completed, cancelled, failed, interrupted or broken), the written one kept as
            "recorded_status", and "message" saying why it failed, is interrupted or broken.
        versions: Python, TensorFlow, Keras, numpy versions and device summary.
        model_path: The saved model, or None when the run has no model (yet).
        problems: Files that were missing or damaged; a run with problems may be broken.
    """

    run_id: str
    run_dir: Path
    config: TrainConfig | None
    labels: list[str]
    input_size: int | None
    backbone: str | None
    dataset: dict[str, Any]
    split: pd.DataFrame | None
    history: pd.DataFrame
    events: list[dict[str, Any]]
    metrics: dict[str, Any]
    status: dict[str, Any]
    versions: dict[str, Any]
    model_path: Path | None
    problems: list[str] = field(default_factory=list)
    hub_handle: str | None = None

    @property
    def state(self) -> str:
        """Effective status: running, completed, cancelled, failed, interrupted or broken."""
        return str(self.status.get("status", BROKEN))

    @property
    def usable(self) -> bool:
        """Whether the run can predict, be evaluated and exported (completed and not damaged)."""
        return self.state == COMPLETED and self.model_path is not None and bool(self.labels)

    def require_usable(self, action: str = "be used") -> None:
        """Raises RunNotUsableError, saying why and what to do, unless the run is usable.

        Args:
            action: What the caller wants to do, e.g. "predict" or "be exported".
        """
        if not self.usable:
            raise RunNotUsableError(unusable_message(self.run_id, self.state, self.error, action))

    @property
    def error(self) -> str | None:
        """Failure message, or why the run is interrupted or broken."""
        return self.status.get("message")

    @property
    def created(self) -> dt.datetime | None:
        """When training started (UTC)."""
        return parse_time(self.status.get("started")) or created_from_id(self.run_id)

    @property
    def finished(self) -> dt.datetime | None:
        """When the run ended (UTC), None while running or when unknown."""
        return parse_time(self.status.get("finished"))

    @property
    def test_accuracy(self) -> float | None:
        """Accuracy on the test split, when evaluated."""
        return _metric(self.metrics, "test_accuracy")

    @property
    def best_val_accuracy(self) -> float | None:
        """Best validation accuracy over all epochs."""
        best = history_table.history_facts(self.history)["best_val_accuracy"]
        return best if best is not None else _metric(self.metrics, "best_val_accuracy")

    def held_out_estimate(self) -> tuple[str, float | None, str]:
        """(label, value, meaning) of the estimate from photos the model did not train on,
        besides the test accuracy: the cross-validated accuracy when the head search trained
        on the validation photos (their curve is then not held out), else the best
        validation accuracy."""
        search = self.metrics.get("head_search") or {}
        if isinstance(search.get("cv_accuracy"), (int, float)):
            return ("Cross-validated accuracy", float(search["cv_accuracy"]),
                    "The chosen head setting's mean accuracy on held-out folds of the "
                    "training and validation photos (the search trained on both, so no "
                    "validation photo is left unseen).")
        return ("Best validation accuracy", self.best_val_accuracy,
                "Best accuracy on the validation photos over the epochs.")

    @property
    def unsure_threshold(self) -> float:
        """Top probability below which a prediction is flagged unsure (0.5 when not chosen)."""
        value = _metric(self.metrics, "unsure_threshold")
        if value is None or not 0.0 <= value <= 1.0:
            return DEFAULT_UNSURE_THRESHOLD
        return value

    @property
    def familiarity_path(self) -> Path:
        """Where the run's 'none of these' reference and threshold are kept."""
        return self.run_dir / FAMILIARITY_FILE

    @property
    def averaged_epochs(self) -> int:
        """Fine-tuning epochs whose weights the saved model averages; 0 or 1: no average."""
        value = _metric(self.metrics, "fine_tune_averaged_epochs")
        return int(value) if value is not None else 0

    @property
    def fine_tune_rate_text(self) -> str | None:
        """The fine-tuning learning rate used and where it came from; None: no fine-tuning."""
        if not self.metrics.get("fine_tuned"):
            return None
        used = self.metrics.get("fine_tune_learning_rate")
        if isinstance(used, Mapping) and isinstance(used.get("value"), (int, float)):
            return f"{used['value']:g} ({used.get('source') or 'as set'})"
        config = self.config  # runs from before the rate was recorded: the one set
        rate = config.fine_tune_learning_rate if config is not None else None
        return f"{rate:g}" if rate is not None else None

    @property
    def training_mode(self) -> str:
        """What trained, in words: the head on a frozen base, fine-tuned layers of the base,
        or the base's top blocks on cached activations (with how many)."""
        top = self.metrics.get("top_blocks")
        if isinstance(top, dict) and top.get("top_blocks"):
            n = int(top["top_blocks"])
            return f"top {n} block{'s' if n != 1 else ''} on cached activations"
        if self.metrics.get("fine_tuned"):
            layers = self.config.fine_tune_layers if self.config else None
            return f"fine-tuned {layers} layers" if layers else "fine-tuned"
        return "frozen base (head only)"

    @property
    def fine_tune_start_epoch(self) -> int | None:
        """First epoch of the fine-tune phase, or None when the run did not fine-tune."""
        return history_table.fine_tune_start_epoch(self.history)

    @property
    def evaluation(self) -> EvalResult | None:
        """The test-split evaluation rebuilt from the stored metrics, or None when absent."""
        from core.runs.evaluation import EvalResult  # only runs whose pages need it pay for it

        data = self.metrics.get("test")
        return EvalResult.from_dict(data) if isinstance(data, Mapping) else None

    def labels_record(self) -> dict[str, Any]:
        """What travels with the model: class names, input size, base (labels.json's content)."""
        return {"labels": list(self.labels), "input_size": self.input_size,
                "backbone": self.backbone, "hub_handle": self.hub_handle}

    def summary(self) -> RunSummary:
        """The run's row in the run list."""
        facts = history_table.history_facts(self.history)
        root = self.dataset.get("root")
        params = self.metrics.get("params") or {}
        size = self.model_path.stat().st_size / 1e6 if self.model_path else None
        counts = self.dataset.get("split_counts") or {}
        depth = self.metrics.get("depth")
        return RunSummary(
            run_id=self.run_id, run_dir=self.run_dir, created=self.created, status=self.state,
            backbone=self.backbone, dataset=self.dataset.get("name"),
            num_classes=len(self.labels) or None, train_images=counts.get("train"),
            total_params=params.get("total"), trainable_params=params.get("trainable"),
            depth=int(depth) if isinstance(depth, (int, float)) else None,
            model_size_mb=size, seconds_per_epoch=facts["seconds_per_epoch"],
            best_epoch=facts["best_epoch"],
            best_val_accuracy=(facts["best_val_accuracy"] if facts["best_val_accuracy"]
                               is not None else _metric(self.metrics, "best_val_accuracy")),
            test_accuracy=self.test_accuracy, epochs_run=facts["epochs_run"], error=self.error,
            cv_accuracy=(self.metrics.get("head_search") or {}).get("cv_accuracy"),
            dataset_root=root if isinstance(root, str) and root else None,
            fine_tuned=bool(self.metrics.get("fine_tuned")),
            test_images=_count(counts.get("test")) or _count(
                (self.metrics.get("test") or {}).get("num_samples")),
            training_mode=self.training_mode,
        )
