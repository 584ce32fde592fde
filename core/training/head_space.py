"""The head search's space and plan: the settings tried, and a model of what each fit costs."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.config import TrainConfig

# The space searched. Today's manual default is always tried first.
SPACE: dict[str, tuple[Any, ...]] = {
    "l2": (0.0, 1e-5, 1e-4, 1e-3, 1e-2),
    "dropout": (0.0, 0.2, 0.5, 0.7),
    "learning_rate": (3e-4, 1e-3, 3e-3),
    "label_smoothing": (0.0, 0.1),
    "hidden_units": ((), (256,)),
    "views": (False, True),
}
# A small dataset finishes sooner: the budget is at most this many seconds per labelled row.
SECONDS_PER_ROW = 0.02
# Successive halving keeps the best 1/ETA of the settings at each rung.
ETA = 3
MAX_SETTINGS = 48
SETTINGS_EXAMINED = 4 * MAX_SETTINGS  # settings looked at when planning, fitting or not
# The plan (how many settings) comes from a model of a fold fit's seconds, not from the
# clock, so the same seed and data choose the same head: per fit, per epoch, per training
# row and epoch (a hidden layer of h units costs 1 + h / 70 times as much per row). Measured
# on the reference machine (2 shared CPU cores, docs/benchmarks.md); the clock only stops
# the search when a slower machine would overrun the budget.
_COST_PER_FIT, _COST_PER_EPOCH, _COST_PER_ROW_EPOCH = 0.02, 0.004, 14e-6
# The plan fills this share of the budget: a machine (or a load) up to 1.7 times slower
# than modelled still ends the plan before the clock stops it, and chooses the same head.
PLAN_SHARE = 0.6

@dataclass(frozen=True)
class HeadSetting:
    """One point of the search space.

    Attributes:
        l2: L2 penalty of the head's Dense kernels.
        dropout: Dropout before each Dense layer.
        learning_rate: Adam learning rate.
        label_smoothing: Share of each label spread over all classes.
        hidden_units: () for a linear head, (256,) for one hidden layer.
        views: Whether the cached augmented views of the training rows are trained on.
    """

    l2: float
    dropout: float
    learning_rate: float
    label_smoothing: float
    hidden_units: tuple[int, ...]
    views: bool

    @classmethod
    def of_config(cls, config: TrainConfig, views: bool) -> HeadSetting:
        """The setting a manual run with this config trains."""
        return cls(config.l2, config.dropout, config.learning_rate, config.label_smoothing,
                   tuple(config.hidden_units), views)

    def apply(self, config: TrainConfig) -> TrainConfig:
        """The config with this setting's head options."""
        return dataclasses.replace(
            config, l2=self.l2, dropout=self.dropout, learning_rate=self.learning_rate,
            label_smoothing=self.label_smoothing, hidden_units=self.hidden_units)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {**dataclasses.asdict(self), "hidden_units": list(self.hidden_units)}

    def describe(self) -> str:
        """A short line for people."""
        hidden = (f"hidden {'-'.join(map(str, self.hidden_units))}" if self.hidden_units
                  else "linear")
        return (f"L2 {self.l2:g}, dropout {self.dropout:g}, learning rate "
                f"{self.learning_rate:g}, smoothing {self.label_smoothing:g}, {hidden}, "
                f"views {'on' if self.views else 'off'}")


def settings_to_try(first: HeadSetting, seed: int, *, views: bool) -> Iterator[HeadSetting]:
    """`first`, then distinct random settings of SPACE (views only when `views`)."""
    rng = np.random.default_rng(seed)
    seen = {first}
    yield first
    space = dict(SPACE, views=SPACE["views"] if views else (False,))
    size = math.prod(len(v) for v in space.values())
    while len(seen) < size:
        setting = HeadSetting(**{k: v[rng.integers(len(v))] for k, v in space.items()})
        if setting not in seen:
            seen.add(setting)
            yield setting


def predicted_fit_seconds(setting: HeadSetting, train_rows: int, n_views: int,
                          config: TrainConfig) -> float:
    """Modelled seconds of one fold fit (early stopping expected after 4 x patience epochs)."""
    patience = config.early_stopping_patience
    epochs = config.epochs if patience <= 0 else min(config.epochs, 4 * patience)
    rows = train_rows * (n_views if setting.views else 1)
    width = 1.0 + sum(setting.hidden_units) / 70.0
    return _COST_PER_FIT + epochs * (_COST_PER_EPOCH + rows * width * _COST_PER_ROW_EPOCH)


def plan_seconds(costs: list[float], rungs: list[int]) -> float:
    """Modelled seconds of successive halving over settings of these fit costs (the first,
    the baseline, on every fold; the promoted ones at the others' mean cost)."""
    total = sum(costs) * rungs[0] + costs[0] * (rungs[-1] - rungs[0])
    mean, promoted = sum(costs[1:]) / max(1, len(costs) - 1), len(costs) - 1
    for before, after in zip(rungs, rungs[1:]):
        promoted = math.ceil(promoted / ETA)
        total += promoted * mean * (after - before)
    return total


def scaled_budget(seconds: float, n_rows: int) -> float:
    """The budget for n_rows labelled rows: a small dataset finishes sooner."""
    return float(min(seconds, SECONDS_PER_ROW * n_rows))
