"""'None of these' on the pages: the Predict card, the demo view and the Evaluate section."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from app_helpers import TIMEOUT, all_text, page, png_bytes, texts, train_small_run
from streamlit.testing.v1 import AppTest

from core.results.familiarity import Familiarity
from core.training.result import TrainResult
from ui import demo, links
from ui import familiarity as ui_familiarity

LABELS = ["cats", "dogs", "fish"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    return train_small_run(tmp_path_factory, LABELS)


@pytest.fixture
def strict_home(trained: TrainResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the run whose lines are above any score: every photo is 'none of these'."""
    home = tmp_path / "home"
    shutil.copytree(trained.run_dir.parent, home / "runs")
    path = home / "runs" / trained.run_id / "familiarity.npz"
    fam = Familiarity.load(path)
    fam.class_thresholds = np.full_like(fam.class_thresholds, 2.0)  # cosine is at most 1
    fam.save(path)
    monkeypatch.setenv("TL_STUDIO_HOME", str(home))
    return home


def test_a_card_says_none_of_these_with_the_closest_class_second() -> None:
    def card() -> None:
        import numpy as np

        from core.results.prediction import Prediction
        from ui import predict as ui_predict

        ui_predict.prediction_card(Prediction(
            file="cat.jpg", top_k=[("roses", 0.85), ("tulips", 0.15)], unsure=False,
            image=np.zeros((8, 8, 3), np.uint8), threshold=0.6, familiarity=0.41,
            unknown=True, familiarity_threshold=0.55), 8, 0, 3)

    at = AppTest.from_function(card, default_timeout=TIMEOUT).run()
    assert not at.exception, at.exception
    assert "### None of these" in texts(at.markdown)
    said = " ".join(texts(at.info))
    assert "none of the 3 classes this model knows" in said and "closest is roses" in said
    assert not any("### roses" in m for m in texts(at.markdown))


def test_the_demo_view_answers_none_of_these_in_big_letters(strict_home: Path,
                                                             trained: TrainResult) -> None:
    at = page("4_Predict")
    at.query_params[links.RUN] = trained.run_id
    at.query_params["view"] = links.DEMO
    at.run()
    at.file_uploader(key=demo.UPLOAD).upload("cat.png", png_bytes(1, 500), "image/png")
    at.run()
    assert not at.exception, at.exception
    big = next(m.value for m in at.markdown if "font-size" in m.value)
    assert ">None of these</div>" in big and "Closest: " in big
    assert any(label in big for label in LABELS)
    assert "none of the 3 classes this model knows" in " ".join(texts(at.info))


def test_the_predict_page_answers_none_of_these(strict_home: Path) -> None:
    at = page("4_Predict").run()
    at.file_uploader(key="tl_predict_upload").upload("cat.png", png_bytes(1, 500), "image/png")
    at.run()
    assert not at.exception, at.exception
    assert "### None of these" in texts(at.markdown)
    assert "none of these" in all_text(at)  # the caption says the page can answer it


def test_evaluate_shows_the_false_alarms_and_lets_an_admin_try_other_photos(
        strict_home: Path, trained: TrainResult) -> None:
    at = page("3_Evaluate").run()
    assert not at.exception, at.exception
    assert "None of these" in texts(at.header)
    (metric,) = [m for m in at.metric if "answered" in m.label]
    photos = len(trained.evaluation.predictions)
    assert metric.value.endswith(f"of {photos}")
    at.file_uploader(key=ui_familiarity.TRY_KEY).upload("cat.png", png_bytes(1, 500),
                                                         "image/png")
    at.run()
    assert not at.exception, at.exception
    assert "**1 of 1** would be answered" in all_text(at)
