"""The command line's train, evaluate, predict and runs contracts, as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT, make_class_folders


def run_cli(*args: str, home: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "TL_STUDIO_OFFLINE": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(
        [sys.executable, "-m", "core", "--home", str(home), *args],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"exit {done.returncode}\n{done.stdout}\n{done.stderr}")
    return done


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("cli")
    data = make_class_folders(root / "data", {"cats": 10, "dogs": 10, "fish": 10})
    home = root / "home"
    done = run_cli("train", str(data), "--backbone", "mobilenet_v2", "--weights", "none",
                   "--epochs", "2", "--batch-size", "8", "--seed", "3", "--json", home=home)
    return {"data": data, "home": home, "result": json.loads(done.stdout),
            "stderr": done.stderr}


def test_train_prints_one_json_object_and_progress_on_stderr(trained: dict) -> None:
    result = trained["result"]
    for key in ("run_id", "run_dir", "test_accuracy", "best_val_accuracy", "epochs_run"):
        assert key in result
    assert set(result["seconds"]) >= {"features", "training", "total"}
    assert result["epochs_run"] == 2
    assert Path(result["run_dir"]).parent == trained["home"] / "runs"
    assert "[extracting features]" in trained["stderr"]
    assert "[training head] Epoch 2/2" in trained["stderr"]


def test_evaluate_on_a_labelled_folder(trained: dict) -> None:
    done = run_cli("evaluate", trained["result"]["run_id"], "--data", str(trained["data"]),
                   "--json", home=trained["home"])
    report = json.loads(done.stdout)
    assert 0.0 <= report["accuracy"] <= 1.0
    assert set(report["per_class"]) == {"cats", "dogs", "fish"}
    assert report["per_class"]["cats"]["support"] == 10
    assert set(report["per_class"]["dogs"]) == {"precision", "recall", "f1", "support"}


def test_evaluate_refuses_classes_the_model_does_not_know(trained: dict,
                                                          tmp_path: Path) -> None:
    other = make_class_folders(tmp_path / "other", {"cats": 3, "horses": 3})
    done = run_cli("evaluate", trained["result"]["run_dir"], "--data", str(other), "--json",
                   home=trained["home"], check=False)
    assert done.returncode == 2
    assert "horses" in done.stderr and "Traceback" not in done.stderr


def test_predict_images_top_k(trained: dict, tmp_path: Path) -> None:
    photo = next((trained["data"] / "fish").iterdir())
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a photo")
    done = run_cli("predict", trained["result"]["run_id"], str(photo), str(broken),
                   "--top-k", "2", "--json", home=trained["home"], check=False)
    rows = json.loads(done.stdout)
    assert [Path(r["file"]).name for r in rows] == [photo.name, "broken.jpg"]
    first = rows[0]
    assert len(first["top_k"]) == 2
    assert {t["label"] for t in first["top_k"]} <= {"cats", "dogs", "fish"}
    assert first["top_k"][0]["probability"] >= first["top_k"][1]["probability"]
    assert isinstance(first["unsure"], bool)
    assert "error" in rows[1]
    assert done.returncode == 2  # one photo could not be read


def test_runs_lists_the_run(trained: dict) -> None:
    rows = json.loads(run_cli("runs", "--json", home=trained["home"]).stdout)
    assert [r["run_id"] for r in rows] == [trained["result"]["run_id"]]
    assert rows[0]["backbone"] == "mobilenet_v2"
    assert rows[0]["status"] == "completed"
    assert rows[0]["test_accuracy"] == pytest.approx(trained["result"]["test_accuracy"])


def test_unknown_base_and_missing_weights_are_one_line_errors(tmp_path: Path) -> None:
    data = make_class_folders(tmp_path / "data", {"a": 4, "b": 4})
    done = run_cli("train", str(data), "--backbone", "alexnet", home=tmp_path / "h",
                   check=False)
    assert done.returncode == 2
    assert "mobilenet_v2" in done.stderr and "Traceback" not in done.stderr
    done = run_cli("train", str(data), "--weights", str(tmp_path / "missing.h5"),
                   home=tmp_path / "h", check=False)
    assert done.returncode == 2
    assert "missing.h5" in done.stderr and "Traceback" not in done.stderr


def test_export_of_a_run_without_results_says_what_to_do(trained: dict, tmp_path: Path) -> None:
    import pandas as pd

    from core.config import TrainConfig
    from core.runs import RunStore

    split = pd.DataFrame({"path": ["a.png", "b.png"], "label": ["x", "y"], "label_index": [0, 1],
                          "sha256": ["0" * 64, "1" * 64], "split": ["train", "test"]})
    writer = RunStore(trained["home"]).create(TrainConfig(weights=None), ["x", "y"], split, {})
    writer.set_status("failed", error="out of memory")
    done = run_cli("export", writer.run_id, "--out", str(tmp_path / "x"), home=trained["home"],
                   check=False)
    assert done.returncode == 2
    assert "no test results" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "x").exists()
    missing = run_cli("export", "no-such-run", home=trained["home"], check=False)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    RunStore(trained["home"]).delete(writer.run_id)  # the other tests see one run
