"""What a training run returns: TrainResult (also what `train --json` prints)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.runs import interval, placement

if TYPE_CHECKING:
    from core.runs import evaluation


@dataclass
class TrainResult:
    """What a training run produced.

    Attributes:
        run_id: Id of the run folder.
        run_dir: The run folder.
        status: completed or cancelled.
        test_accuracy: Accuracy on the test split (None when cancelled).
        best_val_accuracy: Best validation accuracy over all epochs.
        epochs_run: Epochs trained, head and fine-tune together.
        seconds: Wall time of features, head search, training (head + fine-tune) and
            total.
        evaluation: Test-split evaluation, None when cancelled.
        head_search: {"tried", "chosen", "cv_accuracy"} of the head search; None for a
            manual head (or a dataset too small to cross-validate).
        executed_on: Where it ran: backend ("local" or "ray"), node id and node address
            (core.runs.placement), as recorded in the run's versions.
    """

    run_id: str
    run_dir: Path
    status: str
    test_accuracy: float | None
    best_val_accuracy: float | None
    epochs_run: int
    seconds: dict[str, float]
    evaluation: evaluation.EvalResult | None = None
    head_search: dict[str, Any] | None = None
    executed_on: dict[str, Any] = field(default_factory=placement.current)

    def test_interval(self) -> dict[str, Any] | None:
        """{"value", "photos", "low", "high"} of the test accuracy, None when not measured."""
        if self.evaluation is None:
            return None
        measured = interval.accuracy(self.test_accuracy, self.evaluation.num_samples)
        return measured.to_dict() if measured else None

    def to_dict(self) -> dict[str, Any]:
        """The command line's JSON contract."""
        return {
            "run_id": self.run_id,
            "run_dir": str(self.run_dir),
            "status": self.status,
            "test_accuracy": self.test_accuracy,
            # The test accuracy's 95% Wilson interval and sample size (core.runs.interval).
            "test_accuracy_interval": self.test_interval(),
            "best_val_accuracy": self.best_val_accuracy,
            "epochs_run": self.epochs_run,
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
            "head_search": self.head_search,
            "executed_on": self.executed_on,
        }
