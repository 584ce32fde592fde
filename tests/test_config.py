"""Option validation shared by the pages and the command line, and the studio home."""

from __future__ import annotations

import dataclasses
import math
import typing
from pathlib import Path

import pytest

from core.config import (
    HOME_ENV_VAR,
    IngestConfig,
    SplitConfig,
    TrainConfig,
    field_help,
    studio_home,
)
from core.errors import ConfigError

CONFIGS = (IngestConfig, SplitConfig, TrainConfig)
FLOAT_FIELDS = [(cls, f.name) for cls in CONFIGS for f in dataclasses.fields(cls)
                if typing.get_type_hints(cls)[f.name] in (float, float | None)]


def test_every_config_has_float_options_to_check() -> None:
    names = {name for _, name in FLOAT_FIELDS}
    assert {"learning_rate", "dropout", "l2", "fine_tune_learning_rate", "train_fraction",
            "warn_imbalance_ratio"} <= names


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize(("cls", "name"), FLOAT_FIELDS,
                         ids=[f"{c.__name__}.{n}" for c, n in FLOAT_FIELDS])
def test_float_options_refuse_nan_and_infinities(cls: type, name: str, value: float) -> None:
    with pytest.raises(ConfigError, match="finite number"):
        cls(**{name: value})


def test_split_shares_of_nan_are_refused() -> None:
    with pytest.raises(ConfigError, match="finite"):
        SplitConfig(math.nan, math.nan, math.nan)


def test_help_shows_the_bounds() -> None:
    epochs = next(f for f in dataclasses.fields(TrainConfig) if f.name == "epochs")
    assert field_help(epochs) == "Most passes over the training images for the head. " \
                                 "(from 1 to 500)"


def test_help_texts_quote_no_measured_figures() -> None:
    """Timings and accuracies belong in docs/benchmarks.md, where they are re-measured."""
    for cls in CONFIGS:
        for f in dataclasses.fields(cls):
            text = str(f.metadata.get("help", ""))
            assert not any(word in text for word in ("0.9", "0.8", " times the time")), text


def test_an_unwritable_home_names_the_folder_and_how_to_choose_another(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    readonly = Path("/sys/kernel")  # exists and refuses new files even for root
    if not readonly.is_dir():
        pytest.skip("needs Linux's /sys/kernel as a folder nobody can write to")
    monkeypatch.setenv(HOME_ENV_VAR, str(readonly))
    with pytest.raises(ConfigError) as caught:
        studio_home()
    message = str(caught.value)
    assert "/sys/kernel" in message and HOME_ENV_VAR in message and "--home" in message
    assert studio_home(tmp_path / "fine") == (tmp_path / "fine").resolve()


def test_a_fine_tune_rate_nobody_set_is_never_refused() -> None:
    """Issue 27: the rate left empty follows the head's rate the run uses."""
    manual = TrainConfig(head="manual", learning_rate=1e-4, fine_tune_layers=30)
    assert manual.fine_tune_learning_rate is None
    rate, source = manual.fine_tune_rate(1e-4, searched=False)
    assert rate == pytest.approx(1e-5) and "as set" in source
    searched = TrainConfig(head="search", fine_tune_layers=30)
    # The search's choice replaces the head's rate: that must not make the config invalid.
    dataclasses.replace(searched, learning_rate=3e-4)
    rate, source = searched.fine_tune_rate(3e-4, searched=True)
    assert rate == pytest.approx(3e-5) and "chosen by the head search" in source


def test_a_fine_tune_rate_the_user_set_is_checked_against_their_head_rate() -> None:
    with pytest.raises(ConfigError, match="too large.*tenth"):
        TrainConfig(head="manual", fine_tune_layers=30, fine_tune_learning_rate=1e-3)
    config = TrainConfig(head="manual", fine_tune_layers=30, fine_tune_learning_rate=5e-5)
    assert config.fine_tune_rate(1e-3, searched=False) == (5e-5, "as set")
