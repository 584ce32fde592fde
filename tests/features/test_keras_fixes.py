"""The Keras fixes: saving reuses each type's skip-set, and models still round-trip."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from core.features import keras_fixes

saving_lib = pytest.importorskip("keras.src.saving.saving_lib")


def test_skipset_is_built_once_per_type_until_the_session_is_cleared() -> None:
    first = saving_lib.get_attr_skipset("Layer")
    assert saving_lib.get_attr_skipset("Layer") is first
    assert saving_lib.get_attr_skipset("Functional") is not first
    keras.backend.clear_session()
    rebuilt = saving_lib.get_attr_skipset("Layer")
    assert rebuilt is not first

    def named(skipset: set[str]) -> set[str]:  # dunders are skipped anyway, and dir() varies
        return {name for name in skipset if not name.startswith("__")}

    assert named(rebuilt) == named(first)


def test_applying_twice_changes_nothing() -> None:
    fixed = saving_lib.get_attr_skipset
    assert keras_fixes.cache_saving_skipsets() is False
    assert saving_lib.get_attr_skipset is fixed


def test_model_round_trips_with_the_fix(tmp_path) -> None:
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(3, activation="relu", name="hidden")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(hidden))
    path = tmp_path / "m.keras"
    model.save(path)
    x = np.random.default_rng(0).random((5, 4), np.float32)
    loaded = keras.saving.load_model(path, compile=False)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-6)
