"""The Train page driven by Streamlit's AppTest: options, background training, live progress,
queue, cancel from another session, failures."""

from __future__ import annotations

import dataclasses
import json
import queue
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from app_helpers import (
    TIMEOUT,
    all_text,
    chart_titled,
    current_dataset,
    page,
    share_caches,
    texts,
    trace_lengths,
    values,
)
from conftest import zip_folder
from streamlit.testing.v1 import AppTest

from core.config import HIDDEN_LAYER_PRESETS, TrainConfig
from core.errors import Cancelled
from core.features import backbones
from core.features import weights as base_weights
from core.jobs import manager as jobs
from core.progress import ProgressEvent
from core.runs.store import RunStore
from core.training.callback import ProgressCallback
from ui import resources, state, train_form, train_monitor

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def studio_home(studio_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    share_caches(studio_home, tmp_path_factory)
    return studio_home


@pytest.fixture
def offline_empty_keras_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No weights cached, and no downloads."""
    keras_home = tmp_path / "keras-home"
    (keras_home / "models").mkdir(parents=True)
    monkeypatch.setenv("KERAS_HOME", str(keras_home))
    monkeypatch.setenv(base_weights.OFFLINE_ENV_VAR, "1")
    return keras_home


def train_page(current: state.CurrentDataset | None = None) -> AppTest:
    at = page("2_Train")
    if current is not None:
        at.session_state[state.CURRENT] = current
    return at.run()


def choose_quick_settings(at: AppTest, epochs: int = 2) -> AppTest:
    at.radio(key=state.TRAIN_WEIGHTS_KIND).set_value(train_form.WEIGHTS_RANDOM)
    at.number_input(key=f"{state.TRAIN_PREFIX}.epochs").set_value(epochs)
    at.number_input(key=f"{state.TRAIN_PREFIX}.batch_size").set_value(8)
    at.slider(key=f"{state.TRAIN_PREFIX}.early_stopping_patience").set_value(0)
    return at.run()


def manager() -> jobs.JobManager:
    """The job manager the pages use for the current $TL_STUDIO_HOME (one per server)."""
    return resources.job_manager()


def progress_texts(at: AppTest) -> list[str]:
    return [p.proto.text for p in at.get("progress")]


def test_without_a_dataset_the_page_sends_you_to_the_dataset_page(studio_home: Path) -> None:
    at = train_page()
    assert not at.exception, at.exception
    assert "No dataset chosen yet" in all_text(at)
    links = {link.proto.label: link.proto.page for link in at.get("page_link")}
    assert links["Go to the Dataset page"] == "Dataset"
    assert not at.button  # nothing to start
    assert "Training jobs" not in all_text(at)


def test_bases_show_their_facts_and_missing_weights_say_where_to_put_the_file(
    studio_home: Path, small_dataset: Path, offline_empty_keras_home: Path
) -> None:
    at = train_page(current_dataset(small_dataset, studio_home))
    assert not at.exception, at.exception
    table = at.dataframe[0].value
    assert len(table) == len(backbones.BACKBONES)
    row = table.set_index("Base").loc["MobileNetV2 (default)"]
    assert row["Input size"] == "224 px"
    assert row["Parameters (M)"] == pytest.approx(2.257984)
    assert row["Weights file (MB)"] == pytest.approx(9.4)
    assert row["Relative speed"] == 1.0
    assert row["Weights available"] == "missing: see below"
    base = at.selectbox(key=state.TRAIN_BASE)
    assert base.options[-1].startswith("TF Hub model")
    assert "224 px" in base.options[0] and "2.3 M parameters" in base.options[0]

    spec = backbones.BACKBONES["mobilenet_v2"]
    warning = " ".join(texts(at.warning))
    assert spec.weights_file in warning
    assert str(offline_empty_keras_home / "models") in warning

    # Starting with missing weights fails at once, naming the file; nothing is queued.
    at.button(key=state.TRAIN_START).click().run()
    assert not at.exception, at.exception
    assert any(spec.weights_file in e and "Cannot start training" in e for e in texts(at.error))
    assert manager().jobs() == []

    # With the file in Keras' cache folder the page says it is there.
    (offline_empty_keras_home / "models" / spec.weights_file).write_bytes(b"h5")
    at.run()
    assert not at.warning
    assert any(spec.weights_file in c and "is in" in c for c in texts(at.caption))
    assert at.dataframe[0].value.set_index("Base").loc[
        "MobileNetV2 (default)", "Weights available"] == "yes, on this machine"


def test_every_option_comes_from_train_config_with_bounds_and_help(
    studio_home: Path, small_dataset: Path
) -> None:
    at = train_page(current_dataset(small_dataset, studio_home))
    key = f"{state.TRAIN_PREFIX}."
    epochs = at.number_input(key=key + "epochs")
    assert (epochs.min, epochs.max, epochs.value) == (1, 500, 30)
    assert "(from 1 to 500)" in epochs.help
    dropout = at.slider(key=key + "dropout")
    assert (dropout.min, dropout.max, dropout.step, dropout.label) == (0.0, 0.9, 0.05, "Dropout")
    for name in ("batch_size", "learning_rate", "l2", "seed", "fine_tune_layers",
                 "fine_tune_epochs", "fine_tune_learning_rate"):
        assert at.number_input(key=key + name).help, name
    assert at.selectbox(key=key + "class_weights").options == ["off", "balanced"]
    assert at.selectbox(key=key + "augment").label == "Augmentation"
    assert at.slider(key=key + "augment_views").max == 20
    assert at.slider(key=key + "early_stopping_patience").max == 100
    head = at.selectbox(key=key + "head")
    assert (head.options, head.value) == (
        ["the usual settings", "search the head's settings"], "manual")
    assert at.number_input(key=key + "search_seconds").value == 20.0
    assert at.slider(key=key + "label_smoothing").max == 0.5
    hidden = at.selectbox(key=state.TRAIN_HIDDEN_PRESET)
    assert hidden.options == [*HIDDEN_LAYER_PRESETS, train_form.CUSTOM_HIDDEN]

    hidden.set_value(train_form.CUSTOM_HIDDEN).run()
    at.text_input(key=key + "hidden_units").input("512, lots").run()
    assert any("whole numbers separated by commas" in e for e in texts(at.error))
    assert at.button(key=state.TRAIN_START).disabled

    at.text_input(key=key + "hidden_units").input("64, 32").run()
    at.number_input(key=key + "fine_tune_layers").set_value(20).run()
    # Left empty, the fine-tune rate is a tenth of the head's the run uses: never refused,
    # whether the search or the user sets the head's rate (issue 27).
    assert at.number_input(key=key + "fine_tune_learning_rate").value is None
    assert not at.error
    at.selectbox(key=key + "head").set_value("manual").run()
    at.number_input(key=key + "learning_rate").set_value(1e-4).run()
    assert not at.error, texts(at.error)
    # A rate the user set that breaks the relation with their own head's rate is refused
    # here, before any job starts.
    at.number_input(key=key + "fine_tune_learning_rate").set_value(0.001).run()
    assert any("too large" in e for e in texts(at.error)), texts(at.error)
    assert at.button(key=state.TRAIN_START).disabled
    at.number_input(key=key + "learning_rate").set_value(1e-3).run()
    at.number_input(key=key + "fine_tune_learning_rate").set_value(1e-5).run()
    assert not at.error
    assert not at.button(key=state.TRAIN_START).disabled
    assert any("64, 32" in str(v) for v in [at.text_input(key=key + "hidden_units").value])
    # Automatic augmentation turns on with fine-tuning, and the summary says so.
    assert any("+ 8 fine-tune · augmented" in c for c in texts(at.caption))

    at.selectbox(key=state.TRAIN_BASE).set_value(backbones.HUB_BACKBONE).run()
    assert not at.radio  # TF Hub models bring their own weights
    assert any("TF Hub image feature-vector handle" in e for e in texts(at.error))
    at.text_input(key=key + "hub_handle").input("/models/my_feature_vector").run()
    assert not at.error
    assert at.number_input(key=key + "hub_input_size").value == 224


def test_training_from_upload_to_result_with_live_progress(
    studio_home: Path, small_dataset: Path, tmp_path: Path
) -> None:
    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=TIMEOUT).run()
    at.switch_page("app_pages/1_Dataset.py").run()
    zip_path = zip_folder(small_dataset, tmp_path / "small.zip")
    at.file_uploader(key=state.UPLOAD).upload(zip_path.name, zip_path.read_bytes(),
                                               "application/zip")
    at.run()
    at.button(key=state.USE_DATASET).click().run()
    at.switch_page("app_pages/2_Train.py").run()
    assert not at.exception, at.exception
    assert "In use for training: small.zip" in all_text(at)

    choose_quick_settings(at, epochs=2)
    assert any("small.zip · MobileNetV2 · random weights · 2 epochs" in c
               for c in texts(at.caption))
    # 30 photos: the page suggests searching the head's settings, and this run does.
    assert any("searching the head's settings" in i for i in texts(at.info)), texts(at.info)
    at.selectbox(key=f"{state.TRAIN_PREFIX}.head").set_value("search").run()
    assert not any("searching the head's settings" in i for i in texts(at.info))
    # Augmented views make the job last long enough to watch its phases go by.
    at.selectbox(key=f"{state.TRAIN_PREFIX}.augment").set_value("on").run()
    at.button(key=state.TRAIN_START).click().run()
    assert not at.exception, at.exception
    job_id = at.session_state[state.JOB_ID]
    assert "**small.zip · MobileNetV2 · random weights · 2 epochs · augmented**" in texts(
        at.markdown)

    seen: list[str] = []
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        status = manager().status(job_id)
        at.run()
        assert not at.exception, at.exception
        seen += progress_texts(at)
        if status.done:
            break
        time.sleep(0.5)
    final = manager().wait(job_id, timeout=60)
    assert final.state == jobs.COMPLETED, final.error
    assert seen, "no progress bar while the job was running"
    assert any(text.split(":")[0] in train_monitor.PHASE_TEXT.values() for text in seen), seen

    at.run()
    assert not at.exception, at.exception
    assert not at.get("progress")
    success = " ".join(texts(at.success))
    assert "Finished" in success and (
        f"test accuracy **{final.result.test_accuracy:.0%} "
        f"({final.result.evaluation.num_samples} photos: ") in success
    tried = final.result.head_search["tried"]
    assert any(f"cross-validation among {tried} settings" in c for c in texts(at.caption))
    links = {link.proto.label: link.proto.page for link in at.get("page_link")}
    assert links["See how it does, class by class"] == "Evaluate"
    assert links["Try it on your own photos"] == "Predict"
    curves = chart_titled(at, "Learning curves")
    assert values(curves["data"][0]["x"]) == [1, 2]
    assert at.session_state[state.LAST_RUN] == final.result.run_id

    run = RunStore(studio_home).load(final.result.run_id)
    assert run.state == "completed"
    assert run.dataset["name"] == "small.zip"
    assert run.config == TrainConfig(weights=None, epochs=2, batch_size=8,
                                     early_stopping_patience=0, augment="on", head="search")


def scripted_job(on_event, should_stop, steps: queue.Queue):
    """A job whose progress the test hands over event by event; None ends it."""
    while True:
        if should_stop():
            raise Cancelled()
        try:
            item = steps.get(timeout=0.02)
        except queue.Empty:
            continue
        if item is None:
            return SimpleNamespace(status="completed", run_dir=None, test_accuracy=0.5,
                                   epochs_run=2, run_id=None)
        on_event(item)


def epoch_event(epoch: int, val_accuracy: float, eta: float) -> ProgressEvent:
    return ProgressEvent(
        phase="training head", step=epoch, total_steps=3, epoch=epoch, total_epochs=3,
        metrics={"loss": 1.0 / epoch, "accuracy": 0.4 * epoch, "val_loss": 1.1 / epoch,
                 "val_accuracy": val_accuracy},
        eta_seconds=eta, message=f"Epoch {epoch}/3", epoch_end=True)


def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_live_progress_queue_and_cancel_from_another_session(
    studio_home: Path, small_dataset: Path
) -> None:
    current = current_dataset(small_dataset, studio_home)
    first_steps: queue.Queue = queue.Queue()
    second_steps: queue.Queue = queue.Queue()
    first = manager().submit(scripted_job, title="pets · first", steps=first_steps)
    second = manager().submit(scripted_job, title="pets · second", steps=second_steps)
    wait_for(lambda: manager().status(first).state == jobs.RUNNING)

    one = page("2_Train")
    one.session_state[state.CURRENT] = current
    one.session_state[state.JOB_ID] = first
    one.run()
    assert not one.exception, one.exception
    assert progress_texts(one) == ["Starting: Starting..."]
    table = next(d.value for d in one.dataframe if "Job" in d.value.columns)
    assert table[["Job", "State"]].values.tolist() == [["pets · first", "running"],
                                                      ["pets · second", "queued"]]
    assert table["Queue position"].tolist() == ["", "1"]

    first_steps.put(epoch_event(1, 0.40, eta=65))
    wait_for(lambda: manager().status(first).latest_event is not None)
    one.run()
    assert progress_texts(one) == [
        "Training the head: Epoch 1/3 · about 1 min 05 s left in this phase"]
    assert one.get("progress")[0].proto.value == 33  # percent of the phase
    metrics = {m.label: m.value for m in one.metric}
    assert metrics["Epoch"] == "1" and metrics["Validation accuracy"] == "40.0%"
    assert trace_lengths(chart_titled(one, "Learning curves")) == [1] * 4

    first_steps.put(epoch_event(2, 0.60, eta=30))
    wait_for(lambda: manager().status(first).latest_event.epoch == 2)
    one.run()
    curves = chart_titled(one, "Learning curves")
    assert trace_lengths(curves) == [2] * 4  # the curves grow by epoch
    val = next(m for m in one.metric if m.label == "Validation accuracy")
    assert val.value == "60.0%" and "+20.0%" in str(val.proto.delta)

    # Another session (a refreshed browser) finds the running job without knowing its id.
    other = page("2_Train").run()
    assert not other.exception, other.exception
    assert progress_texts(other)[0].startswith("Training the head: Epoch 2/3")
    other.selectbox(key=state.TRAIN_WATCH).set_value(second).run()
    assert any("Waiting in the queue: position 1" in i for i in texts(other.info))
    other.button(key=f"{state.TRAIN_CANCEL}.{second}").click().run()
    assert manager().status(second).state == jobs.CANCELLED
    assert any("had not started yet" in w for w in texts(other.warning))

    # ... and cancels the first session's job.
    other.selectbox(key=state.TRAIN_WATCH).set_value(first).run()
    other.button(key=f"{state.TRAIN_CANCEL}.{first}").click().run()
    assert manager().wait(first, timeout=10).state == jobs.CANCELLED
    one.run()
    assert not one.exception, one.exception
    assert any("Training was cancelled" in w for w in texts(one.warning))
    assert not one.get("progress")


def test_a_job_just_started_is_the_one_shown(studio_home: Path, small_dataset: Path) -> None:
    def quick(on_event, should_stop):
        return SimpleNamespace(status="completed", run_dir=None, test_accuracy=0.5,
                               epochs_run=1, run_id=None)

    earlier = [manager().submit(quick, title=f"earlier {n}") for n in (1, 2)]
    for job_id in earlier:
        manager().wait(job_id, timeout=10)
    at = train_page(current_dataset(small_dataset, studio_home))
    assert at.selectbox(key=state.TRAIN_WATCH).value == earlier[-1]  # newest first
    choose_quick_settings(at, epochs=1)
    at.button(key=state.TRAIN_START).click().run()
    assert not at.exception, at.exception
    started = at.session_state[state.JOB_ID]
    assert started not in earlier
    assert at.selectbox(key=state.TRAIN_WATCH).value == started
    assert at.selectbox(key=state.TRAIN_WATCH).options[0].startswith("small.zip · MobileNetV2")
    assert "**small.zip · MobileNetV2 · random weights · 1 epoch**" in texts(at.markdown)
    # Its progress shows where the Start button was, not at the top out of view (issue 27).
    assert "Training jobs" not in [h.value for h in at.header]  # not at the top
    assert [h.value for h in at.subheader][-1] == "3. Start"
    manager().cancel(started)
    assert manager().wait(started, timeout=60).done


def test_the_job_chosen_stays_chosen_when_its_state_changes(
    studio_home: Path, small_dataset: Path
) -> None:
    """Running -> finished must not move the "Show job" choice to another job.

    The browser sends a select box's value back as its label, and the label holds the job's
    state; were it matched by label alone, the choice would fall back to the newest job and a
    person watching their own training would see someone else's.
    """
    first_steps: queue.Queue = queue.Queue()
    second_steps: queue.Queue = queue.Queue()
    first = manager().submit(scripted_job, title="pets · first", steps=first_steps)
    second = manager().submit(scripted_job, title="pets · second", steps=second_steps)
    wait_for(lambda: manager().status(first).state == jobs.RUNNING)
    at = train_page(current_dataset(small_dataset, studio_home))
    at.selectbox(key=state.TRAIN_WATCH).set_value(first).run()
    assert at.selectbox(key=state.TRAIN_WATCH).value == first

    first_steps.put(None)
    wait_for(lambda: manager().status(second).state == jobs.RUNNING)
    at.run()
    assert not at.exception, at.exception
    assert at.selectbox(key=state.TRAIN_WATCH).value == first
    assert any("Finished in" in s for s in texts(at.success))
    # The picker names no state that can still change: drawn while a job runs, "(running)"
    # stayed on screen after it had finished or failed (issue 27). Ended states are final.
    labels = at.selectbox(key=state.TRAIN_WATCH).options
    assert not any("running" in label or "queued" in label for label in labels), labels
    assert any(label.startswith("pets · first") and label.endswith("(finished)")
               for label in labels), labels
    manager().cancel(second)
    assert manager().wait(second, timeout=10).done


def test_a_failed_job_shows_its_error_not_a_traceback(
    studio_home: Path, small_dataset: Path, tmp_path: Path
) -> None:
    at = train_page(current_dataset(small_dataset, studio_home))
    at.radio(key=state.TRAIN_WEIGHTS_KIND).set_value(train_form.WEIGHTS_FILE).run()
    assert any("Type the path of the weights file" in e for e in texts(at.error))
    missing = tmp_path / "nowhere" / "weights.h5"
    at.text_input(key=state.TRAIN_WEIGHTS_FILE).input(str(missing)).run()
    at.button(key=state.TRAIN_START).click().run()
    job_id = at.session_state[state.JOB_ID]
    final = manager().wait(job_id, timeout=120)
    assert final.state == jobs.FAILED
    at.run()
    assert not at.exception, at.exception
    error = " ".join(texts(at.error))
    assert "Training failed" in error and f"{missing} does not exist" in error
    assert "Traceback" not in all_text(at)
    assert RunStore(studio_home).list() == []  # checked before a run folder was made

    at.button(key=f"{state.TRAIN_FORGET}.{job_id}").click().run()
    assert state.JOB_ID not in at.session_state
    assert not at.error  # hidden; the job list of the server still has it
    assert "Training jobs" in all_text(at)


def test_history_from_events_keeps_epoch_ends_of_both_phases() -> None:
    events: list[ProgressEvent] = []
    head = ProgressCallback(events.append, phase="training head", total_epochs=2)
    head.on_train_begin()
    for epoch in range(2):
        head.on_epoch_begin(epoch)
        head.on_epoch_end(epoch, {"loss": 1.0 - epoch / 4, "accuracy": 0.5, "val_loss": 0.9,
                                  "val_accuracy": 0.5 + epoch / 10})
    tune = ProgressCallback(events.append, phase="fine-tuning", total_epochs=1,
                            steps_per_epoch=4, batch_event_every=2)
    tune.set_model(SimpleNamespace(stop_training=False))
    tune.on_train_begin()
    tune.on_epoch_begin(0)
    for batch in range(4):
        tune.on_train_batch_end(batch, {"loss": 0.3, "accuracy": 0.9})
    tune.on_epoch_end(0, {"loss": 0.3, "accuracy": 0.9, "val_loss": 0.4, "val_accuracy": 0.8})

    history = train_monitor.history_from_events(events)
    assert history["epoch"].tolist() == [1, 2, 3]
    assert history["phase"].tolist() == ["head", "head", "fine-tune"]
    assert history["val_accuracy"].tolist() == pytest.approx([0.5, 0.6, 0.8])
    # Events as stored in events.jsonl (dicts) read the same.
    as_dicts = [json.loads(json.dumps(e.to_dict())) for e in events]
    pd.testing.assert_frame_equal(train_monitor.history_from_events(as_dicts), history)


def test_durations_read_like_people_write_them() -> None:
    assert train_monitor.duration_text(None) == "unknown"
    assert train_monitor.duration_text(4.4) == "4 s"
    assert train_monitor.duration_text(65) == "1 min 05 s"
    assert train_monitor.duration_text(3725) == "1 h 02 min"


def test_every_training_option_is_on_the_page_or_deliberately_left_out() -> None:
    on_page = {name for _title, names in train_form.OPTION_GROUPS for name in names}
    elsewhere, hidden = set(train_form.PICKED_ELSEWHERE), set(train_form.HIDDEN_OPTIONS)
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert not (on_page & elsewhere) and not (on_page & hidden) and not (elsewhere & hidden)
    missing = fields - on_page - elsewhere - hidden
    assert not missing, f"TrainConfig fields with no widget and no reason: {sorted(missing)}"
    assert not (on_page | elsewhere | hidden) - fields, "a widget for a field that is gone"
