"""Run store: creating, listing, loading, validating, deleting, and surviving kills mid-write."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from core.config import TrainConfig
from core.errors import JobError, RunNotFoundError, RunNotUsableError
from core.files import proc_stat, read_events, write_json_atomic
from core.runs.history import HISTORY_COLUMNS
from core.runs.store import RunStore, RunWriter, new_run_id

REPO = Path(__file__).resolve().parents[2]
DEVICE = {"kind": "cpu", "summary": "CPU only (test)"}
LABELS = ["NA", "dogs", "fish"]  # "NA" must survive CSV round trips as a string


def split_table() -> pd.DataFrame:
    rows = []
    for split, n in (("train", 4), ("val", 2), ("test", 2)):
        for i in range(n):
            for index, label in enumerate(LABELS):
                rows.append({"path": f"/data/{label}/{split}{i}.png", "label": label,
                             "label_index": index, "sha256": f"{split}{i}{label}",
                             "width": 48, "height": 48, "format": "PNG", "split": split})
    return pd.DataFrame(rows)


def new_run(store: RunStore, backbone: str = "mobilenet_v2") -> RunWriter:
    return store.create(TrainConfig(backbone=backbone, weights=None), LABELS, split_table(),
                        {"name": "pets"}, input_size=32, device=DEVICE)


def history(n_head: int, n_fine: int = 0) -> pd.DataFrame:
    rows = []
    for e in range(1, n_head + n_fine + 1):
        rows.append({"epoch": e, "phase": "head" if e <= n_head else "fine-tune",
                     "loss": 1.0 / e, "accuracy": 0.5 + e / 100, "val_loss": 1.1 / e,
                     "val_accuracy": [0.6, 0.8, 0.7, 0.75, 0.79][(e - 1) % 5],
                     "seconds": float(e)})
    return pd.DataFrame(rows)


def write_fake_keras_archive(path: Path, weights: bytes = b"w" * 2000) -> None:
    """A zip laid out as Keras 3 saves a model (config and weights), without TensorFlow."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("metadata.json", "{}")
        archive.writestr("config.json", "{}")
        archive.writestr("model.weights.h5", weights)


class FakeModel:
    """A stand-in model whose save() writes a Keras-shaped archive."""

    input_shape = (None, 32, 32, 3)

    def save(self, path: Path) -> None:
        write_fake_keras_archive(Path(path))


def finish(writer: RunWriter, test_accuracy: float = 0.9) -> None:
    """Completes a run without TensorFlow."""

    writer.append_event({"phase": "training head", "step": 1})
    writer.write_history(history(3, 2))
    writer.save_model(FakeModel())
    writer.write_metrics({"test_accuracy": test_accuracy, "unsure_threshold": 0.7,
                          "params": {"total": 1000, "trainable": 30, "non_trainable": 970},
                          "depth": 105, "seconds": {"total": 12.5}})
    writer.set_status("completed")


def test_run_ids_sort_by_time_and_are_safe() -> None:
    import datetime as dt

    early = new_run_id("tfhub/../x y", dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC))
    late = new_run_id("mobilenet_v2", dt.datetime(2026, 1, 2, 3, 4, 6, tzinfo=dt.UTC))
    # A typed path never reaches the id; a registry name does.
    assert early.startswith("20260102-030405-model-")
    assert late.startswith("20260102-030406-mobilenet_v2-")
    assert "/" not in early and ".." not in early
    assert sorted([late, early]) == [early, late]
    assert new_run_id("a") != new_run_id("a")


# --- create, write, load, list ------------------------------------------------------------


def test_create_writes_initial_files(studio_home: Path) -> None:
    store = RunStore(studio_home)
    writer = new_run(store)
    names = {p.name for p in writer.run_dir.iterdir()}
    assert {"config.json", "labels.json", "dataset.json", "split.csv", "history.csv",
            "versions.json", "status.json"} <= names
    assert writer.run_dir.parent == studio_home / "runs"
    labels = json.loads((writer.run_dir / "labels.json").read_text())
    assert labels == {"labels": LABELS, "input_size": 32, "backbone": "mobilenet_v2",
                      "hub_handle": None}
    versions = json.loads((writer.run_dir / "versions.json").read_text())
    assert versions["device"] == DEVICE
    assert versions["numpy"] and versions["python"]
    status = json.loads((writer.run_dir / "status.json").read_text())
    assert status["status"] == "running" and status["pid"] == os.getpid()
    assert status["hostname"] == socket.gethostname()
    assert not [p for p in (studio_home / "runs").iterdir() if p.name.startswith(".")]


def test_full_run_loads_back(studio_home: Path) -> None:
    store = RunStore(studio_home)
    writer = new_run(store)
    finish(writer)
    run = store.load(writer.run_id)
    assert run.state == "completed" and run.error is None and run.problems == []
    assert run.config == TrainConfig(backbone="mobilenet_v2", weights=None)
    assert run.labels == LABELS and run.input_size == 32 and run.backbone == "mobilenet_v2"
    assert run.split["label"].tolist()[:3] == LABELS
    pd.testing.assert_frame_equal(run.split, split_table(), check_dtype=False)
    assert tuple(run.history.columns[:8]) == HISTORY_COLUMNS and len(run.history) == 5
    assert run.events == [{"phase": "training head", "step": 1}]
    assert run.metrics["depth"] == 105
    assert run.versions["device"] == DEVICE
    assert run.model_path == writer.run_dir / "model.keras"
    assert run.unsure_threshold == 0.7 and run.test_accuracy == 0.9
    assert run.fine_tune_start_epoch == 4
    assert run.dataset["name"] == "pets"
    assert run.dataset["split_counts"] == {"test": 6, "train": 12, "val": 6}
    assert run.dataset["class_counts"]["train"]["NA"] == 4
    assert run.finished is not None and run.created <= run.finished

    summary = store.list()[0]
    assert summary.run_id == writer.run_id and summary.status == "completed"
    assert summary.backbone == "mobilenet_v2" and summary.dataset == "pets"
    assert summary.num_classes == 3 and summary.train_images == 12
    assert (summary.total_params, summary.trainable_params, summary.depth) == (1000, 30, 105)
    assert summary.model_size_mb == pytest.approx(run.model_path.stat().st_size / 1e6)
    assert summary.seconds_per_epoch == pytest.approx(3.0)  # 1..5 seconds
    assert (summary.best_epoch, summary.best_val_accuracy) == (2, 0.8)
    assert summary.test_accuracy == 0.9 and summary.epochs_run == 5
    assert json.loads(json.dumps(summary.to_dict()))["run_id"] == writer.run_id


def test_saving_a_real_keras_model(studio_home: Path) -> None:
    import keras

    store = RunStore(studio_home)
    writer = store.create(TrainConfig(weights=None), ["a", "b"], None, None, device=DEVICE)
    inputs = keras.Input((24, 24, 3))
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
    path = writer.save_model(model)
    assert path.name == "model.keras"
    assert [p.name for p in writer.run_dir.iterdir() if p.name.startswith(".")] == []
    assert json.loads((writer.run_dir / "labels.json").read_text())["input_size"] == 24
    loaded = keras.saving.load_model(path)
    assert loaded.output_shape == (None, 2)


def test_list_is_newest_first_and_empty_home(studio_home: Path) -> None:
    store = RunStore(studio_home)
    assert store.list() == []
    ids = []
    for _ in range(3):
        ids.append(new_run(store).run_id)
        time.sleep(0.002)
    assert [s.run_id for s in store.list()] == ids[::-1]
    assert all(s.status == "running" for s in store.list())


def test_the_run_list_names_each_runs_dataset_folder(studio_home: Path, tmp_path: Path) -> None:
    store = RunStore(studio_home)
    root = tmp_path / "pets"
    run_id = store.create(TrainConfig(weights=None), LABELS, split_table(),
                          {"name": "pets", "root": str(root)}, device=DEVICE).run_id
    other = new_run(store).run_id  # no folder recorded
    first = {s.run_id: s.dataset_root for s in store.list()}
    assert first == {run_id: str(root), other: None}
    # The run index keeps it; a changed run folder is read again.
    (studio_home / "runs" / run_id / "dataset.json").write_text("{}")
    os.utime(studio_home / "runs" / run_id, ns=(1, 1))
    assert {s.run_id: s.dataset_root for s in store.list()} == {run_id: None, other: None}


def test_failures_are_recorded_with_their_traceback(studio_home: Path) -> None:
    store = RunStore(studio_home)
    failed, cancelled = new_run(store), new_run(store)
    failed.set_status("failed", "out of memory", traceback="Traceback: RuntimeError")
    cancelled.set_status("cancelled")
    by_status = {s.status: s for s in store.list()}
    assert set(by_status) == {"failed", "cancelled"}
    assert by_status["failed"].error == "out of memory"
    loaded = store.load(by_status["failed"].run_id)
    assert "RuntimeError" in loaded.status["traceback"] and loaded.finished is not None
    assert not loaded.usable and not by_status["cancelled"].usable


def test_history_needs_epochs(studio_home: Path) -> None:
    writer = new_run(RunStore(studio_home))
    with pytest.raises(ValueError, match="epoch"):
        writer.write_history(pd.DataFrame({"loss": [1.0]}))
    with pytest.raises(ValueError, match="status"):
        writer.set_status("done")


# --- broken and interrupted runs ----------------------------------------------------------


def test_broken_runs_are_listed_not_raised(studio_home: Path) -> None:
    store = RunStore(studio_home)
    good = new_run(store)
    finish(good)
    runs_dir = studio_home / "runs"

    only_config = runs_dir / "20250101-000000-mobilenet_v2-aaaaaa"
    only_config.mkdir()
    (only_config / "config.json").write_text(json.dumps(TrainConfig().to_dict()))

    torn_status = new_run(store)
    (torn_status.run_dir / "status.json").write_text('{"status": "compl')

    no_model = new_run(store)
    finish(no_model)
    (no_model.run_dir / "model.keras").unlink()

    bad_labels = new_run(store)
    (bad_labels.run_dir / "labels.json").write_text("[1, 2")

    (runs_dir / "stray-file.txt").write_text("not a run")  # files in runs/ are ignored
    (runs_dir / ".creating-20250101-x").mkdir()           # a create that was killed

    summaries = {s.run_id: s for s in store.list()}
    assert len(summaries) == 5
    assert summaries[good.run_id].status == "completed"
    for broken_id, reason in [(only_config.name, "status.json is missing"),
                              (torn_status.run_id, "status.json is corrupt"),
                              (no_model.run_id, "model.keras is missing"),
                              (bad_labels.run_id, "labels.json is corrupt")]:
        assert summaries[broken_id].status == "broken", broken_id
        assert reason in summaries[broken_id].error
        run = store.load(broken_id)  # loading a broken run reports, does not raise
        assert run.state == "broken" and any(reason in p for p in run.problems)
    assert summaries[only_config.name].created is not None  # from the id's time stamp
    assert store.load(good.run_id).state == "completed"


def test_torn_event_line_and_leftover_temp_files(studio_home: Path) -> None:
    store = RunStore(studio_home)
    writer = new_run(store)
    writer.append_event({"n": 1})
    with (writer.run_dir / "events.jsonl").open("ab") as fh:
        fh.write(b'{"n": 2, "phase": "trai')  # killed mid-append
    # A kill between writing a temp file and renaming it leaves the temp file behind.
    (writer.run_dir / ".metrics.json.abc123.tmp").write_text('{"test_acc')
    assert [e["n"] for e in store.load(writer.run_id).events] == [1]
    # A new writer for the same run (as after a resume) starts on a fresh line.
    again = RunWriter(writer.run_dir, {"status": "running"})
    again.append_event({"n": 3})
    assert [e["n"] for e in read_events(writer.run_dir / "events.jsonl")] == [1, 3]
    assert store.load(writer.run_id).state == "running"


def test_failed_status_write_keeps_previous_status(studio_home: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    store = RunStore(studio_home)
    writer = new_run(store)
    other = new_run(store)
    finish(other)
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("full")))
    with pytest.raises(OSError):
        writer.set_status("completed")
    with pytest.raises(OSError):
        writer.write_history(history(2))
    monkeypatch.undo()
    assert store.load(writer.run_id).state == "running"
    assert {s.status for s in store.list()} == {"running", "completed"}


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_running_run_whose_process_died_is_interrupted(studio_home: Path) -> None:
    store = RunStore(studio_home)
    writer = new_run(store)
    path = writer.run_dir / "status.json"
    status = json.loads(path.read_text())
    write_json_atomic(path, {**status, "pid": _dead_pid(), "pid_started": None})
    summary = store.list()[0]
    assert summary.status == "interrupted" and "ended without finishing" in summary.error
    # On another host the process cannot be checked: it stays "running".
    write_json_atomic(path, {**status, "pid": _dead_pid(), "hostname": "elsewhere"})
    assert store.list()[0].status == "running"
    # Same pid but another process start time: the pid was reused, the writer is gone.
    write_json_atomic(path, {**status, "pid_started": "1"})
    expected = "running" if proc_stat(os.getpid()) is None else "interrupted"
    assert store.list()[0].status == expected


WRITER_SCRIPT = textwrap.dedent("""
    import sys, time, zipfile
    from pathlib import Path
    import pandas as pd
    from core.config import TrainConfig
    from core.runs.store import RunStore

    class SlowModel:
        input_shape = (None, 32, 32, 3)
        def save(self, path):
            with zipfile.ZipFile(path, "w") as archive:
                archive.writestr("config.json", "{}")
                with archive.open("model.weights.h5", "w") as fh:
                    for _ in range(40):
                        fh.write(b"w" * 50_000)
                        fh.flush()

    store = RunStore(Path(sys.argv[1]))
    split = pd.DataFrame({"path": ["a.png", "b.png"], "label": ["x", "y"],
                          "label_index": [0, 1], "split": ["train", "test"]})
    i = 0
    while True:
        w = store.create(TrainConfig(weights=None), ["x", "y"], split, {"name": "kill"},
                         device={"kind": "cpu"})
        for epoch in range(1, 4):
            w.append_event({"epoch": epoch, "text": "e" * 500})
            rows = [{"epoch": e, "phase": "head", "val_accuracy": 0.5} for e in range(1, epoch + 1)]
            w.write_history(pd.DataFrame(rows))
            w.write_metrics({"test_accuracy": 0.5, "blob": "m" * 20_000})
        w.save_model(SlowModel())
        w.set_status("completed")
        i += 1
        print(i, flush=True)
""")


@pytest.mark.parametrize("delay", [0.0, 0.013, 0.041])
def test_store_survives_sigkill_mid_write(studio_home: Path, tmp_path: Path, delay: float) -> None:
    script = tmp_path / "writer.py"
    script.write_text(WRITER_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, str(script), str(studio_home)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        for _ in range(2):  # let it finish two runs, then kill it somewhere in the third
            line = proc.stdout.readline()
            assert line, proc.stderr.read().decode() if proc.stderr else "writer died"
        time.sleep(delay)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()

    store = RunStore(studio_home)
    summaries = store.list()
    assert len(summaries) >= 2
    statuses = [s.status for s in summaries]
    assert "broken" not in statuses, [(s.run_id, s.error) for s in summaries]
    assert statuses.count("completed") >= 2
    assert set(statuses) <= {"completed", "interrupted"}
    for summary in summaries:
        run = store.load(summary.run_id)
        assert run.labels == ["x", "y"]
        if summary.status == "completed":
            assert run.usable and run.model_path.stat().st_size > 2_000_000
            assert len(run.history) == 3 and len(run.events) == 3
    # A new run in the same home still works after the kill.
    writer = store.create(TrainConfig(weights=None), ["x", "y"], None, None, device={})
    assert store.list()[0].run_id == writer.run_id


PAUSING_SCRIPT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import core.runs.writer as run_writer
    import core.runs.store as runs
    from core.config import TrainConfig

    where = sys.argv[2]
    real_write_json = run_writer.write_json_atomic

    def pause(tag):
        print(tag, flush=True)
        time.sleep(600)

    def write_json(path, obj):
        if where == "create" and ".creating-" in str(path) and Path(path).name == "status.json":
            pause("paused")
        real_write_json(path, obj)

    class HalfSavedModel:
        input_shape = (None, 32, 32, 3)
        def save(self, path):
            Path(path).write_bytes(b"half a model")
            pause("paused")

    run_writer.write_json_atomic = write_json
    store = runs.RunStore(Path(sys.argv[1]))
    w = store.create(TrainConfig(weights=None), ["x", "y"], None, {"name": "kill"}, device={})
    w.append_event({"epoch": 1})
    w.save_model(HalfSavedModel())
""")


@pytest.mark.parametrize("where", ["create", "model"])
def test_kill_at_a_chosen_point(studio_home: Path, tmp_path: Path, where: str) -> None:
    store = RunStore(studio_home)
    done = new_run(store)
    finish(done)
    script = tmp_path / "pausing.py"
    script.write_text(PAUSING_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, str(script), str(studio_home), where], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"paused\n"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    leftovers = [p.name for p in (studio_home / "runs").rglob(".*")]
    summaries = store.list()
    if where == "create":
        assert any(name.startswith(".creating-") for name in leftovers)
        assert [s.run_id for s in summaries] == [done.run_id]
    else:
        assert any(name.endswith(".tmp.keras") for name in leftovers)
        assert [s.status for s in summaries] == ["interrupted", "completed"]
        killed = store.load(summaries[0].run_id)
        assert killed.model_path is None and killed.events == [{"epoch": 1}]
    assert store.load(done.run_id).state == "completed"


# --- resolve and delete -------------------------------------------------------------------


def test_resolve_by_id_or_folder(studio_home: Path, tmp_path: Path) -> None:
    store = RunStore(studio_home)
    writer = new_run(store)
    assert store.resolve(writer.run_id) == writer.run_dir
    assert store.resolve(str(writer.run_dir)) == writer.run_dir.resolve()
    with pytest.raises(RunNotFoundError, match="python -m core runs"):
        store.resolve("20990101-000000-nothing-000000")
    with pytest.raises(RunNotFoundError, match="not a run"):
        store.resolve(tmp_path)
    with pytest.raises(RunNotFoundError, match="No run was given"):
        store.resolve("  ")
    with pytest.raises(RunNotFoundError):
        store.load("../studio-home")


def test_delete_removes_only_that_run(studio_home: Path, tmp_path: Path) -> None:
    store = RunStore(studio_home)
    keep, gone = new_run(store), new_run(store)
    finish(keep)
    finish(gone)
    store.delete(gone.run_id)
    assert not gone.run_dir.exists()
    assert [s.run_id for s in store.list()] == [keep.run_id]
    left = sorted(p.name for p in (studio_home / "runs").iterdir() if p.name != ".index.json")
    assert left == [keep.run_id]
    with pytest.raises(RunNotFoundError):
        store.delete(gone.run_id)


def test_delete_refuses_paths_outside_runs(studio_home: Path, tmp_path: Path) -> None:
    store = RunStore(studio_home)
    finish(new_run(store))
    victim = tmp_path / "precious"
    victim.mkdir()
    (victim / "status.json").write_text("{}")
    for attempt in ["..", ".", "../precious", str(victim), "runs/../..", "", "/"]:
        with pytest.raises(RunNotFoundError):
            store.delete(attempt)
    assert victim.exists() and (studio_home / "runs").exists()
    # A symlink in runs/ is removed itself, never what it points to.
    link = studio_home / "runs" / "20250101-000000-link-abcdef"
    link.symlink_to(victim, target_is_directory=True)
    store.delete(link.name)
    assert not link.exists() and victim.exists()
    assert len(store.list()) == 1


def test_delete_refuses_a_run_still_training(studio_home: Path) -> None:
    store = RunStore(studio_home)
    writer = new_run(store)  # status running, written by this (alive) process
    with pytest.raises(JobError, match="Cancel it first"):
        store.delete(writer.run_id)
    store.delete(writer.run_id, force=True)
    assert store.list() == []


# --- usable or not ------------------------------------------------------------------------


@pytest.mark.parametrize("labels", [{"labels": "abc"}, {"labels": [1, 2, 3]}, ["NA", "dogs"],
                                    {"labels": []}, {"labels": ["NA", "NA", "fish"]}])
def test_labels_of_the_wrong_shape_break_the_run(studio_home: Path, labels: object) -> None:
    store = RunStore(studio_home)
    writer = new_run(store)
    finish(writer)
    (writer.run_dir / "labels.json").write_text(json.dumps(labels))
    run = store.load(writer.run_id)
    assert run.state == "broken" and not run.usable and "labels.json" in run.error
    assert store.list()[0].status == "broken" and not store.list()[0].usable
    with pytest.raises(RunNotUsableError, match=r"broken and cannot predict.*labels\.json"):
        store.load_usable(writer.run_id, "predict")


@pytest.mark.parametrize("damage", ["truncated", "not a zip", "zip without a model"])
def test_a_damaged_model_breaks_a_completed_run(studio_home: Path, damage: str) -> None:
    store = RunStore(studio_home)
    writer = new_run(store)
    finish(writer)
    model = writer.run_dir / "model.keras"
    if damage == "truncated":
        model.write_bytes(model.read_bytes()[:-40])
    elif damage == "not a zip":
        model.write_bytes(b"x" * 2000)
    else:
        with zipfile.ZipFile(model, "w") as archive:
            archive.writestr("notes.txt", "no model here")
    run = store.load(writer.run_id)
    assert run.state == "broken" and "model.keras cannot be loaded" in run.error
    assert [s.status for s in store.list()] == ["broken"]
    with pytest.raises(RunNotUsableError, match="model.keras"):
        run.require_usable("be exported")


def test_a_whole_completed_run_is_usable(studio_home: Path) -> None:
    store = RunStore(studio_home)
    writer = new_run(store)
    with pytest.raises(RunNotUsableError, match=r"no trained model \(status: running\)"):
        store.load_usable(writer.run_id, "predict")
    finish(writer)
    run = store.load_usable(writer.run_id, "predict")
    assert run.usable and store.list()[0].usable
    assert run.labels_record() == {"labels": LABELS, "input_size": 32,
                                   "backbone": "mobilenet_v2", "hub_handle": None}


def test_temp_files_of_a_dead_writer_go_when_the_run_is_read(studio_home: Path) -> None:
    store = RunStore(studio_home)
    writer = new_run(store)
    leftovers = [".model-1a2b3c4d.tmp.keras", ".metrics.json.abc123.tmp",
                 ".history.csv.x9.tmp"]
    for name in leftovers:
        (writer.run_dir / name).write_bytes(b"half")
    (writer.run_dir / ".keep-me").write_text("not a temporary file")
    store.load(writer.run_id)  # its writer (this process) is alive: nothing is touched
    assert all((writer.run_dir / name).exists() for name in leftovers)

    path = writer.run_dir / "status.json"
    write_json_atomic(path, {**json.loads(path.read_text()), "pid": _dead_pid(),
                             "pid_started": None})
    run = store.load(writer.run_id)
    assert run.state == "interrupted"
    assert not any((writer.run_dir / name).exists() for name in leftovers)
    assert (writer.run_dir / ".keep-me").exists()


# --- the run index ------------------------------------------------------------------------


def test_the_index_follows_every_change(studio_home: Path) -> None:
    store = RunStore(studio_home)
    first, second = new_run(store), new_run(store)
    finish(first)
    assert {s.run_id: s.status for s in store.list()} == {first.run_id: "completed",
                                                          second.run_id: "running"}
    assert (studio_home / "runs" / ".index.json").is_file()

    second.set_status("cancelled")
    (first.run_dir / "metrics.json").write_text(json.dumps({"test_accuracy": 0.5}))  # in place
    summaries = {s.run_id: s for s in store.list()}
    assert summaries[second.run_id].status == "cancelled"
    assert summaries[first.run_id].test_accuracy == 0.5

    third = new_run(store)
    store.delete(second.run_id)
    assert [s.run_id for s in store.list()] == [third.run_id, first.run_id]

    (studio_home / "runs" / ".index.json").write_text("{torn")  # damaged: rebuilt
    assert [s.run_id for s in store.list()] == [third.run_id, first.run_id]
    (studio_home / "runs" / ".index.json").unlink()  # missing: rebuilt
    assert [s.status for s in store.list()] == ["running", "completed"]


def test_the_index_is_trusted_for_runs_that_did_not_change(studio_home: Path) -> None:
    store = RunStore(studio_home)
    done = new_run(store)
    finish(done)
    writing = new_run(store)
    # Files changed in the last seconds are not trusted (the same clock tick may hide a second
    # change): make both runs an hour old.
    for path in [*done.run_dir.iterdir(), done.run_dir, *writing.run_dir.iterdir(),
                 writing.run_dir]:
        os.utime(path, (time.time() - 3600, time.time() - 3600))
    store.list()
    read: list[str] = []
    store.index.summaries(lambda run_dir: read.append(run_dir.name) or RunStore(
        studio_home).load(run_dir.name).summary())
    assert read == [writing.run_id]  # running runs are always read again: their process may die
    index = studio_home / "runs" / ".index.json"
    before = index.read_bytes()
    writing.write_history(history(2))  # a new epoch every second while training...
    assert {s.run_id: s.epochs_run for s in store.list()}[writing.run_id] == 2
    assert index.read_bytes() == before  # ...does not rewrite the index each time
    path = writing.run_dir / "status.json"
    write_json_atomic(path, {**json.loads(path.read_text()), "pid": _dead_pid(),
                             "pid_started": None})
    assert {s.run_id: s.status for s in store.list()}[writing.run_id] == "interrupted"
