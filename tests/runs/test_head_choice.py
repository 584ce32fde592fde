"""How a run's head was chosen, in words and as a table (core.runs.head_choice)."""

from __future__ import annotations

from core.runs import head_choice

RECORD = {
    "tried": 2, "chosen": {"l2": 1e-4}, "cv_accuracy": 0.875, "cv_spread": 0.012, "folds": 5,
    "refit_epochs": 17, "stopped": "finished", "seconds": 12.3,
    "table": [
        {"l2": 1e-4, "dropout": 0.5, "learning_rate": 1e-3, "label_smoothing": 0.0,
         "hidden_units": [], "views": False, "folds": 5, "cv_accuracy": 0.875,
         "cv_spread": 0.012, "epochs": 17.2, "chosen": True},
        {"l2": 0.0, "dropout": 0.2, "learning_rate": 3e-3, "label_smoothing": 0.1,
         "hidden_units": [256], "views": True, "folds": 1, "cv_accuracy": 0.85,
         "cv_spread": 0.0, "epochs": 9.0, "chosen": False},
    ],
}


def test_text_says_how_the_head_was_chosen() -> None:
    text = head_choice.record_text(RECORD)
    assert "5-fold cross-validation" in text and "among 2 settings" in text
    assert "87.5% ± 1.2%" in text and "17 epochs" in text
    assert "cancelled" in head_choice.record_text({**RECORD, "stopped": "cancelled"})
    assert "time budget" in head_choice.record_text({**RECORD, "stopped": "budget"})
    assert head_choice.record_text(None).startswith("Set by hand")
    assert head_choice.record_text({"skipped": "Too few photos."}) == "Too few photos."
    assert head_choice.record_table({"skipped": "Too few photos."}).empty


def test_table_has_one_row_per_setting_with_the_chosen_one_marked() -> None:
    table = head_choice.record_table(RECORD)
    assert table["Chosen"].tolist() == ["✓", ""]
    assert table["Hidden layer"].tolist() == ["none", "256"]
    assert table["Augmented views"].tolist() == ["off", "on"]
    assert head_choice.record_table(None).empty


USUAL = {"l2": 1e-4, "dropout": 0.5, "learning_rate": 1e-3, "label_smoothing": 0.0,
         "hidden_units": [], "views": False}


def test_plain_words_first_the_usual_setting_kept() -> None:
    """Issue 27: a teacher reads what was tried and kept, without a table."""
    text = head_choice.plain_text(RECORD, USUAL)
    assert text.startswith("Tried 2 settings of the head and kept the usual one: none was "
                           "clearly better.")
    assert "88%" in text and "fold" not in text


def test_plain_words_say_how_the_kept_setting_differs_and_by_how_much() -> None:
    usual = {**USUAL, "l2": 0.0, "dropout": 0.2, "learning_rate": 3e-3, "label_smoothing": 0.1,
             "hidden_units": [256], "views": True}
    text = head_choice.plain_text(RECORD, usual)
    assert "kept the one that named the most photos held out in each try correctly: 88%" in text
    assert "against 85% for the usual settings" in text
    assert "dropout 0.5 (usual 0.2)" in text and "hidden layer none (usual 256)" in text
    assert head_choice.plain_text(None, USUAL).startswith("Set by hand")
