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
    done = run_cli("train", str(data), "--base", "mobilenet_v2", "--weights", "none",
                   "--epochs", "2", "--batch-size", "8", "--seed", "3", "--head", "search",
                   "--json", home=home)
    return {"data": data, "home": home, "result": json.loads(done.stdout),
            "stderr": done.stderr}


def test_train_prints_one_json_object_and_progress_on_stderr(trained: dict) -> None:
    result = trained["result"]
    for key in ("run_id", "run_dir", "test_accuracy", "best_val_accuracy", "epochs_run"):
        assert key in result
    assert set(result["seconds"]) >= {"features", "training", "total"}
    # The test accuracy comes with its 95% interval and sample size (issue 27).
    tested = result["test_accuracy_interval"]
    assert tested["value"] == pytest.approx(result["test_accuracy"]) and tested["photos"] > 0
    assert 0.0 <= tested["low"] <= tested["value"] <= tested["high"] <= 1.0
    # The searched head's epochs come from early stopping in its folds: at most --epochs.
    epochs = result["epochs_run"]
    assert 1 <= epochs <= 2
    assert Path(result["run_dir"]).parent == trained["home"] / "runs"
    assert "[extracting features]" in trained["stderr"]
    assert f"[training head] Epoch {epochs}/{epochs}" in trained["stderr"]
    # A searched head: what it tried is in the JSON.
    search = result["head_search"]
    assert search["tried"] >= 1 and 0.0 <= search["cv_accuracy"] <= 1.0
    assert set(search["chosen"]) >= {"l2", "dropout", "learning_rate", "hidden_units"}
    assert "[searching head]" in trained["stderr"]


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
    from core.runs.store import RunStore

    split = pd.DataFrame({"path": ["a.png", "b.png"], "label": ["x", "y"], "label_index": [0, 1],
                          "sha256": ["0" * 64, "1" * 64], "split": ["train", "test"]})
    writer = RunStore(trained["home"]).create(TrainConfig(weights=None), ["x", "y"], split, {})
    writer.set_status("failed", error="out of memory")
    done = run_cli("export", writer.run_id, "--out", str(tmp_path / "x"), home=trained["home"],
                   check=False)
    assert done.returncode == 2
    assert "no trained model (status: failed)" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "x").exists()
    missing = run_cli("export", "no-such-run", home=trained["home"], check=False)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    RunStore(trained["home"]).delete(writer.run_id)  # the other tests see one run


def _copy_run(trained: dict, home: Path, run_id: str) -> Path:
    import shutil

    run_dir = home / "runs" / run_id
    shutil.copytree(trained["result"]["run_dir"], run_dir)
    return run_dir


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_damaged_runs_are_refused_by_every_command(trained: dict, tmp_path: Path) -> None:
    home = tmp_path / "home"
    bad_labels = _copy_run(trained, home, "20260101-000000-mobilenet_v2-aaaaaa")
    (bad_labels / "labels.json").write_text(json.dumps({"labels": "cats"}))
    truncated = _copy_run(trained, home, "20260101-000001-mobilenet_v2-bbbbbb")
    model = truncated / "model.keras"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    photo = next((trained["data"] / "cats").iterdir())

    listed = {r["run_id"]: r for r in json.loads(run_cli("runs", "--json", home=home).stdout)}
    assert listed[bad_labels.name]["status"] == "broken"
    assert listed[truncated.name]["status"] == "broken"
    assert "model.keras" in listed[truncated.name]["error"]
    for args, needle in [
        (("export", bad_labels.name, "--out", str(tmp_path / "out")), "labels.json"),
        (("predict", bad_labels.name, str(photo)), "labels.json"),
        (("evaluate", bad_labels.name, "--data", str(trained["data"])), "labels.json"),
        (("export", truncated.name, "--out", str(tmp_path / "out")), "model.keras"),
        (("predict", truncated.name, str(photo)), "model.keras"),
    ]:
        done = run_cli(*args, home=home, check=False)
        assert done.returncode == 2, (args, done.stderr)
        assert "broken" in done.stderr and needle in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr and "not found" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_a_run_killed_while_saving_is_interrupted_and_tidied(trained: dict,
                                                             tmp_path: Path) -> None:
    home = tmp_path / "home"
    run_dir = _copy_run(trained, home, "20260101-000002-mobilenet_v2-cccccc")
    (run_dir / "model.keras").rename(run_dir / ".model-1a2b3c4d.tmp.keras")
    (run_dir / ".metrics.json.x1y2.tmp").write_text('{"test_acc')
    status = json.loads((run_dir / "status.json").read_text())
    status.update(status="running", finished=None, pid=_dead_pid(), pid_started=None)
    (run_dir / "status.json").write_text(json.dumps(status))
    photo = next((trained["data"] / "cats").iterdir())

    done = run_cli("predict", run_dir.name, str(photo), home=home, check=False)
    assert done.returncode == 2 and "(status: interrupted)" in done.stderr, done.stderr
    assert not [p.name for p in run_dir.iterdir() if p.name.startswith(".")]
    done = run_cli("export", run_dir.name, "--out", str(tmp_path / "out"), home=home,
                   check=False)
    assert done.returncode == 2 and "(status: interrupted)" in done.stderr, done.stderr
    assert "{" not in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("flags", [
    ("--backbone", "nope"),
    ("--weights", "/etc/passwd"),
    ("--weights", "/nonexistent.h5"),
    ("--backbone", "tfhub", "--hub-handle", "/etc"),
], ids=["unknown-base", "passwd-weights", "missing-weights", "hub-folder"])
def test_bad_options_leave_no_run_behind(flags: tuple[str, ...], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    from core.__main__ import main

    data = make_class_folders(tmp_path / "data", {"a": 4, "b": 4})
    home = tmp_path / "home"
    assert main(["--home", str(home), "train", str(data), *flags]) == 2
    err = capsys.readouterr().err
    assert "\nerror: " in f"\n{err}" and "Traceback" not in err
    runs = home / "runs"
    assert not runs.exists() or not any(runs.iterdir()), list(runs.iterdir())


def test_run_ids_never_hold_parts_of_a_typed_path() -> None:
    from core.runs.store import new_run_id

    assert "mobilenet_v2" in new_run_id("mobilenet_v2")
    for typed in ("/etc/passwd", "../../etc", "C:\\temp\\x", "tfhub/../../x"):
        run_id = new_run_id(typed)
        assert "etc" not in run_id and "passwd" not in run_id and "temp" not in run_id, run_id
        assert "/" not in run_id and "\\" not in run_id and ".." not in run_id


def test_an_unwritable_home_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    from core.__main__ import main

    if not Path("/sys/kernel").is_dir():
        pytest.skip("needs Linux's /sys/kernel as a folder nobody can write to")
    assert main(["--home", "/sys/kernel", "runs"]) == 2
    err = capsys.readouterr().err
    assert "/sys/kernel" in err and "TL_STUDIO_HOME" in err and "--home" in err
    assert "Traceback" not in err


def test_bases_lists_size_parameters_and_whether_weights_are_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from core.__main__ import main
    from core.features.backbones import BACKBONES

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    spec = BACKBONES["mobilenet_v2"]
    (tmp_path / "keras" / "models").mkdir(parents=True)
    (tmp_path / "keras" / "models" / spec.weights_file).write_bytes(b"present")
    assert main(["bases", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert set(rows) == set(BACKBONES)
    assert rows["mobilenet_v2"]["weights_here"] is True
    assert rows["resnet50_v2"]["weights_here"] is False
    assert rows["mobilenet_v2"]["params"] == spec.params
    assert rows["mobilenet_v2"]["input_size"] == 224 and rows["xception"]["weights_mb"] > 0
    assert main(["bases"]) == 0
    text = capsys.readouterr().out
    assert "mobilenet_v2" in text and str(tmp_path / "keras" / "models") in text


def test_train_splits_as_the_saved_audit_and_its_choices_say(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 16: after an audit, `train` keeps its near-duplicate groups in one split, applies
    the choices made on it (exclude, move) and records the audit in the run, like the page."""
    from types import SimpleNamespace

    from core import __main__ as cli
    from core.audit import choices as audit_choices
    from core.audit import findings as audit
    from core.data import datasets
    from core.training import pipeline as training

    home = tmp_path / "home"
    data = make_class_folders(tmp_path / "data", {"cats": 8, "dogs": 8, "fish": 8})
    dataset = datasets.ingest(data, home=home)
    names = audit.relative_names(dataset.index, dataset.root)
    group = [n for n in names if n.startswith("cats/")][:4]
    key = audit.dataset_key(dataset)
    audit.save_audit(audit.AuditResult(
        label_issues=[], outliers=[],
        near_duplicates=[{"files": group, "similarity": 0.99, "cross_class": False,
                          "spans_splits": True}],
        summary={"audit_id": "a-1", "dataset_key": key, "backbone": "mobilenet_v2"}), home)
    excluded = next(n for n in names if n.startswith("dogs/"))
    moved = next(n for n in names if n.startswith("fish/"))
    audit_choices.set_choice(dataset, excluded, audit_choices.EXCLUDE, home=home)
    audit_choices.set_choice(dataset, moved, audit_choices.MOVE, "cats", home=home)
    seen = {}

    def fake_train(split_df, config, **kwargs):
        seen.update(split=split_df, info=kwargs["dataset_info"])
        return SimpleNamespace(status="completed", to_dict=dict, run_id="r", test_accuracy=1.0,
                               best_val_accuracy=1.0, epochs_run=1, seconds={"total": 0.0},
                               run_dir=home, head_search=None, test_interval=lambda: None)

    monkeypatch.setattr(training, "train", fake_train)
    assert cli.main(["--home", str(home), "train", str(data), "--weights", "none"]) == 0

    split = seen["split"]
    by_name = dict(zip(audit.relative_names(split, dataset.root), split["split"], strict=True))
    assert len({by_name[n] for n in group}) == 1  # the group stays in one split
    assert excluded not in by_name
    relabelled = split.loc[[Path(p).name == Path(moved).name and "fish" in p
                            for p in split["path"]], "label"]
    assert relabelled.tolist() == ["cats"]
    record = seen["info"]["audit"]
    assert record["ran"] and record["audit_id"] == "a-1"
    assert record["excluded"] == 1 and record["moved"] == 1 and record["near_duplicate_groups"] == 1
