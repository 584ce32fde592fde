"""The command line's train flags, generated from TrainConfig's field metadata."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass

import pytest

from core.__main__ import build_parser
from core.config import TrainConfig, field_help, option
from core.flags import add_config_flags, config_from_flags, flag_name

# Every flag `train` had before the flags were generated: scripts use them.
KEPT_FLAGS = ("--backbone", "--weights", "--hub-handle", "--epochs", "--batch-size",
              "--learning-rate", "--hidden-units", "--dropout", "--l2", "--class-weights",
              "--patience", "--augment", "--no-augment", "--augment-views",
              "--fine-tune-layers", "--fine-tune-epochs", "--fine-tune-learning-rate",
              "--fine-tune-averaging", "--no-fine-tune-averaging", "--seed", "--split", "--json")


def train_parser() -> argparse.ArgumentParser:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["train"]


def parse(*flags: str) -> TrainConfig:
    args = build_parser().parse_args(["train", "data", *flags])
    return config_from_flags(TrainConfig, args)


def test_every_existing_flag_is_kept() -> None:
    options = {o for action in train_parser()._actions for o in action.option_strings}
    assert set(KEPT_FLAGS) <= options


def test_every_option_has_a_flag_with_the_pages_help_and_range() -> None:
    actions: dict[str, argparse.Action] = {}
    for action in train_parser()._actions:
        actions.setdefault(action.dest, action)  # --augment before --no-augment
    for f in dataclasses.fields(TrainConfig):
        assert flag_name(f) in actions[f.name].option_strings
        assert field_help(f).replace("%", "%%") in actions[f.name].help, f.name


def test_no_flags_give_the_default_config() -> None:
    assert parse() == TrainConfig()


def test_flags_reach_the_config() -> None:
    config = parse("--weights", "none", "--patience", "3", "--hidden-units", "512", "256",
                   "--no-augment", "--no-fine-tune-averaging", "--learning-rate", "0.01",
                   "--class-weights", "balanced", "--hub-input-size", "299")
    assert config.weights is None and config.early_stopping_patience == 3
    assert config.hidden_units == (512, 256) and config.augment == "off"
    assert config.fine_tune_averaging is False and config.learning_rate == 0.01
    assert config.class_weights == "balanced" and config.hub_input_size == 299
    assert parse("--augment").augment == "on"
    searched = parse("--head", "search", "--search-seconds", "5", "--label-smoothing", "0.1")
    assert (searched.head, searched.search_seconds, searched.label_smoothing) == (
        "search", 5.0, 0.1)
    assert parse().head == "manual"  # the search measured no better on real photos (issue 26)
    # "base" is the word users read; --backbone stays for scripts written before.
    assert parse("--base", "tfhub", "--hub-handle", "/x").backbone == "tfhub"
    assert parse("--backbone", "tfhub", "--hub-handle", "/x").backbone == "tfhub"
    # A switch takes no value, so the data may follow it, as before the flags were generated.
    args = build_parser().parse_args(["train", "--augment", "flowers.zip"])
    assert args.data == "flowers.zip" and args.augment == "on"


def test_a_new_option_gets_its_flag_help_and_range_without_code() -> None:
    @dataclass(frozen=True)
    class Options:
        warmup_epochs: int = option(2, "Epochs at a low learning rate first.", min=0, max=9)
        label_smoothing: float = option(0.0, "Softens the targets.", max=0.5)
        tags: tuple[int, ...] = option((), "Numbers.")
        note: str | None = option(None, "Free text.")

    parser = argparse.ArgumentParser()
    add_config_flags(parser, Options)
    assert "(from 0 to 9)" in parser.format_help()
    args = parser.parse_args(["--warmup-epochs", "4", "--label-smoothing", "0.1", "--tags",
                              "1", "2", "--note", "none"])
    assert config_from_flags(Options, args) == Options(4, 0.1, (1, 2), None)


@pytest.mark.parametrize("flags", [("--learning-rate", "nan"), ("--dropout", "nan"),
                                   ("--l2", "inf"), ("--split", "nan", "nan", "nan")])
def test_nan_options_are_one_line_errors(flags: tuple[str, ...], capsys, tmp_path) -> None:
    from core.__main__ import main

    code = main(["--home", str(tmp_path / "home"), "train", str(tmp_path), *flags])
    assert code == 2
    assert "finite number" in capsys.readouterr().err
    assert not (tmp_path / "home" / "runs").exists()
