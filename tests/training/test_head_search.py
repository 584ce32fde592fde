"""The cross-validated head search on synthetic features: choice, folds, out-of-fold
predictions, cancel and budget."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from core.config import TrainConfig
from core.training import head as head_training
from core.training import head_search, head_space
from core.training.head_space import HeadSetting

CONFIG = TrainConfig(epochs=20, batch_size=16, early_stopping_patience=0)
PLAIN = HeadSetting(l2=0.0, dropout=0.0, learning_rate=3e-3, label_smoothing=0.0,
                    hidden_units=(), views=False)


def _noisy(n: int, dim: int, seed: int = 0, signal: float = 0.35) -> tuple[np.ndarray, ...]:
    """Two classes a small shift apart in many noisy dimensions."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    direction = rng.normal(size=dim)
    direction /= np.linalg.norm(direction)
    x = rng.normal(size=(n, dim)) + np.outer(2 * y - 1, direction) * signal * np.sqrt(dim) / 4
    return x.astype(np.float32), y


def _xor(n: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Classes a linear head cannot tell apart and one hidden layer can."""
    rng = np.random.default_rng(seed)
    signs = rng.choice([-1.0, 1.0], size=(n, 2))
    y = (signs[:, 0] * signs[:, 1] > 0).astype(np.int64)
    x = np.concatenate([signs * 2 + rng.normal(scale=0.3, size=(n, 2)),
                        rng.normal(size=(n, 6))], axis=1)
    return x.astype(np.float32), y


def test_heavy_l2_wins_on_few_noisy_samples() -> None:
    x, y = _noisy(120, 1000, signal=0.3)
    flipped = np.random.default_rng(5).random(len(y)) < 0.2  # a fifth of the labels wrong
    y = np.where(flipped, 1 - y, y)
    heavy = replace(PLAIN, l2=1.0)
    result = head_search.search(x, y, n_classes=2, config=CONFIG, budget_seconds=600,
                                settings=[PLAIN, heavy, replace(PLAIN, l2=0.1)])
    by_setting = {t.setting: t for t in result.trials}
    # Chosen over the manual setting (tried first), by more than the folds' noise.
    assert result.chosen.setting == heavy
    assert by_setting[heavy].mean_accuracy > by_setting[PLAIN].mean_accuracy + 0.05
    assert result.chosen.folds_done == 5 and result.stopped == "finished"


def test_hidden_layer_wins_where_a_linear_head_cannot_separate() -> None:
    x, y = _xor(200)
    hidden = replace(PLAIN, hidden_units=(32,))
    result = head_search.search(x, y, n_classes=2, config=replace(CONFIG, epochs=30),
                                budget_seconds=600, settings=[PLAIN, hidden])
    assert result.chosen.setting == hidden
    assert result.chosen.mean_accuracy > 0.9
    assert min(t.mean_accuracy for t in result.trials) < 0.75


def test_search_is_skipped_when_a_class_cannot_fill_two_folds() -> None:
    x, y = _noisy(10, 8)
    assert head_search.search(x, y, n_classes=3, config=CONFIG, budget_seconds=5,
                              groups=np.where(y == 1, "same", np.arange(10).astype(str))) is None


def test_out_of_fold_predictions_come_from_heads_that_never_saw_the_row() -> None:
    # Random labels a head can memorise: in-sample it would be near 100%; held out, chance.
    rng = np.random.default_rng(1)
    x = rng.normal(size=(80, 300)).astype(np.float32)
    y = rng.integers(0, 2, 80)
    result = head_search.search(x, y, n_classes=2, config=replace(CONFIG, epochs=40),
                                budget_seconds=600, settings=[PLAIN])
    assert len(result.oof_rows()) == 80
    oof_accuracy = float((result.oof_probs.argmax(axis=1) == y).mean())
    assert oof_accuracy < 0.75
    assert oof_accuracy == pytest.approx(result.chosen.mean_accuracy, abs=0.05)
    for fold, probs in result.chosen.fold_probs.items():
        np.testing.assert_array_equal(result.oof_probs[result.fold_of_row == fold], probs)


def test_cancel_stops_the_search_and_keeps_the_best_so_far(monkeypatch) -> None:
    x, y = _noisy(60, 50)
    calls = []
    real_fit = head_training.fit_head

    def counting_fit(*args, **kwargs):
        calls.append(1)
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(head_training, "fit_head", counting_fit)
    settings = [replace(PLAIN, l2=l2) for l2 in (0.0, 1e-3, 1e-2, 1e-1)]
    # The fourth fit is cancelled at its first batches: three fits of rung one are kept.
    result = head_search.search(x, y, n_classes=2, config=CONFIG, budget_seconds=600,
                                settings=settings, should_stop=lambda: len(calls) >= 4)
    assert result.stopped == "cancelled"
    assert len(calls) == 4
    assert [t.setting for t in result.trials] == settings[:3]
    assert all(t.folds_done == 1 for t in result.trials)
    best = max(t.mean_accuracy for t in result.trials)
    assert result.chosen.mean_accuracy == best  # the manual setting wins a tie
    assert result.summary()["cv_accuracy"] == pytest.approx(best, abs=1e-6)


def test_no_fit_starts_once_the_budget_is_spent(monkeypatch) -> None:
    x, y = _noisy(60, 50)
    now = [0.0]
    real_fit = head_training.fit_head

    def one_second_fit(*args, **kwargs):
        now[0] += 1.0  # each fold fit takes one second on the fake clock
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(head_training, "fit_head", one_second_fit)
    settings = [replace(PLAIN, l2=l2) for l2 in (0.0, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)]
    result = head_search.search(x, y, n_classes=2, config=replace(CONFIG, epochs=2),
                                budget_seconds=3.5, settings=settings, clock=lambda: now[0])
    assert result.stopped == "budget"
    assert now[0] == 4.0  # fits started at 0, 1, 2 and 3 s; none at 4 s
    assert len(result.trials) == 4
    assert result.seconds == 4.0


def test_a_lead_within_the_noise_of_the_folds_keeps_the_manual_setting() -> None:
    x, y = _noisy(60, 40, signal=1.0)
    close = [PLAIN, replace(PLAIN, l2=1e-5), replace(PLAIN, l2=2e-5)]
    result = head_search.search(x, y, n_classes=2, config=CONFIG, budget_seconds=600,
                                settings=close)
    best = min(result.trials, key=head_search.Trial.rank_key)
    diff = np.subtract(best.accuracies, result.trials[0].accuracies)
    if best is not result.trials[0] and diff.mean() <= diff.std(ddof=1) / np.sqrt(len(diff)):
        assert result.chosen is result.trials[0]
    else:
        assert result.chosen is best


def test_plan_is_deterministic_and_scales_down_on_small_data() -> None:
    x, y = _noisy(30, 16)
    config = replace(CONFIG, epochs=3)
    first = head_search.search(x, y, n_classes=2, config=config)
    second = head_search.search(x, y, n_classes=2, config=config)
    assert first.plan_seconds == pytest.approx(30 * head_space.SECONDS_PER_ROW)
    assert first.budget_seconds == config.search_seconds  # the clock's limit stays the option
    assert [t.setting for t in first.trials] == [t.setting for t in second.trials]
    assert first.table() == second.table()
    # The manual setting is always the first one tried.
    assert first.trials[0].setting == HeadSetting.of_config(config, views=False)


def test_views_are_searched_only_when_given_and_never_held_out(monkeypatch) -> None:
    x, y = _noisy(40, 16)
    views = np.stack([x, x + 0.01, x - 0.01])
    seen = []
    real_fit = head_training.fit_head

    def recording_fit(head, x_train, y_train, x_val, y_val, **kwargs):
        seen.append((len(x_train), len(x_val)))
        return real_fit(head, x_train, y_train, x_val, y_val, **kwargs)

    monkeypatch.setattr(head_training, "fit_head", recording_fit)
    with_views = replace(PLAIN, views=True)
    head_search.search(views, y, n_classes=2, config=replace(CONFIG, epochs=2),
                       budget_seconds=600, settings=[with_views])
    assert seen == [(3 * 32, 8)] * 5  # three views of the 32 training rows; held out: photos


def test_result_record_has_the_table_and_summary() -> None:
    x, y = _noisy(40, 16)
    settings = [PLAIN, replace(PLAIN, dropout=0.5), replace(PLAIN, learning_rate=3e-4)]
    result = head_search.search(x, y, n_classes=2, config=replace(CONFIG, epochs=3),
                                budget_seconds=600, settings=settings)
    record = result.to_dict()
    assert record["tried"] == 3
    assert set(record["chosen"]) == {"l2", "dropout", "learning_rate", "label_smoothing",
                                     "hidden_units", "views"}
    (chosen,) = [row for row in record["table"] if row["chosen"]]
    assert chosen["cv_accuracy"] == record["cv_accuracy"]
    assert {"cv_accuracy", "cv_spread", "folds", "epochs"} <= set(record["table"][0])
    assert record["refit_epochs"] == 3
    assert len(result.cv_curve()) == 3
