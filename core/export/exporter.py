"""Every deployable format of a run, written together and each reloaded and measured.

`export_run` writes `<out>/<run id>/`: model.keras, saved_model/, model_float32.tflite,
model_float16.tflite, model_int8.tflite, labels.txt, metadata.json, predict.py, report.html
and per_class.csv. The folder is assembled under a hidden temporary name and renamed into
place at the end, so a killed or failed export leaves no half-written folder and an older
export of the same run is replaced only by a complete one. Each written format is loaded in
a separate clean process (core.export.verify) and scored on the run's test photos.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import logging
import os
import secrets
import shutil
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core import files
from core.data import images
from core.errors import AppError, Cancelled
from core.export import familiarity as export_familiarity
from core.export import formats as export_formats
from core.export import verify as export_verify
from core.status import COMPLETED

log = logging.getLogger(__name__)

CALIBRATION_PHOTOS = 200  # training photos the int8 file is calibrated on, at most
METADATA_VERSION = 1
OK, FAILED, UNAVAILABLE = "ok", "failed", "unavailable"
PREPROCESSING_WORDS = (
    "Decode the photo, turn it upright by its EXIF orientation, convert colour profiles to "
    "sRGB and transparency onto white, then squash the whole image (no crop, aspect ratio not "
    "kept) to S x S pixels with Pillow's bilinear filter with antialiasing (JPEGs decoded at "
    "a reduced scale no smaller than S first, Image.draft). Feed RGB pixel values 0..255 "
    "unscaled: the model scales them itself."
)
_STAGING = ".exporting-"
_OLD = ".replaced-"


class ExportError(AppError):
    """A run cannot be exported, or the export folder cannot be written."""


@dataclass
class FormatResult:
    """One format of an export: written or not, and how it measured reloaded.

    Attributes:
        name: Format key (FORMATS).
        file: File or folder name inside the export folder.
        status: "ok", "failed" (error says why) or "unavailable" (note says why).
        size_bytes: Size of the file (a folder: all its files).
        test_accuracy: Accuracy on the test photos, reloaded in a clean process (the worst
            of the runtimes that ran it).
        agreement: Share of test photos with the Keras model's top-1.
        max_probability_difference: Largest |p - p_keras| over photos and classes.
        latency_ms_p50: Median time of one single-photo call on this machine.
        recommended: False when it loses more accuracy than its limit.
        note: Why it is not recommended or unavailable, in words.
        error: Why it failed to convert or load.
        export_seconds: Time to write it.
        runtimes: Each runtime's own figures (TFLite: tf.lite and ai_edge_litert).
    """

    name: str
    file: str
    status: str = OK
    size_bytes: int | None = None
    test_accuracy: float | None = None
    agreement: float | None = None
    max_probability_difference: float | None = None
    latency_ms_p50: float | None = None
    recommended: bool = False
    note: str | None = None
    error: str | None = None
    export_seconds: float | None = None
    runtimes: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """metadata.json's entry of the format."""
        return files.to_jsonable(self.__dict__)


@dataclass
class ExportResult:
    """What export_run wrote.

    Attributes:
        run_id: The run exported.
        folder: The export folder, `<out>/<run id>`.
        formats: Each requested format's result, in FORMATS order.
        metadata: The content of metadata.json.
        seconds: Wall time of the whole export.
    """

    run_id: str
    folder: Path
    formats: dict[str, FormatResult]
    metadata: dict[str, Any]
    seconds: float
    status: str = COMPLETED

    @property
    def failed(self) -> list[str]:
        """Requested formats that were not exported and verified."""
        return [name for name, result in self.formats.items() if result.status != OK]

    def to_dict(self) -> dict[str, Any]:
        """The job's JSON summary: the folder and metadata.json's content."""
        return {"run_id": self.run_id, "folder": str(self.folder), "status": self.status,
                "failed": self.failed, "metadata": self.metadata}


def parse_formats(text: str | Iterable[str] | None) -> tuple[str, ...]:
    """Format names from "keras,tflite_int8" or a list; all formats for None or "all".

    Raises:
        ExportError: naming the valid formats, for an unknown one or none at all (an empty
            --formats '' is a mistake, not "all").
    """
    every = export_formats.NAMES
    if text is None:
        return every
    items = text.split(",") if isinstance(text, str) else list(text)
    names = [str(item).strip() for item in items if str(item).strip()]
    if not names:
        raise ExportError(f"No format given: name one or more of {', '.join(every)} "
                          "(comma-separated), or leave out --formats for all of them.")
    if names == ["all"]:
        return every
    unknown = [name for name in names if name not in every]
    if unknown:
        raise ExportError(f"Unknown format {', '.join(unknown)}: choose among "
                          f"{', '.join(every)} (comma-separated), or leave out --formats.")
    return tuple(name for name in every if name in names)


def check_exportable(run: Any) -> None:
    """Refuses a run that is not completed, has no model, labels or test photos.

    Raises:
        ExportError: saying why and what to do.
    """
    run.require_usable("be exported")  # broken, interrupted, failed: the store's words
    listing = "`python -m core runs` lists the runs and their status"
    if run.state != COMPLETED:
        why = f" ({run.error})" if run.error else ""
        raise ExportError(f"Run {run.run_id} is {run.state}{why}, so it has no test results "
                          f"to verify an export with. Export a completed run; {listing}.")
    if run.model_path is None or not run.labels or not run.input_size:
        raise ExportError(f"Run {run.run_id} is broken: its model or labels are missing. "
                          f"Train again, or export another run; {listing}.")
    split = run.split
    if split is None or "split" not in split.columns or not (split["split"] == "test").any():
        raise ExportError(f"Run {run.run_id} has no test photos in its split, so its export "
                          "cannot be measured. Train it again with a test share above 0.")


def _photos(run: Any, part: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [N, S, S, 3] photos of one split part, decoded by the studio's decoder."""
    rows = run.split[run.split["split"] == part]
    if limit is not None and len(rows) > limit:
        rows = rows.sample(n=limit, random_state=0).sort_index()
    position = {label: i for i, label in enumerate(run.labels)}
    pixels, classes = [], []
    for path, label in zip(rows["path"].astype(str), rows["label"].astype(str), strict=True):
        try:
            pixels.append(images.load_resized(path, run.input_size))
        except (AppError, OSError) as exc:
            log.warning("Photo %s left out of the export check: %s", path, exc)
            continue
        classes.append(position.get(label, -1))
    if not pixels:
        raise ExportError(f"None of the {part} photos of run {run.run_id} can be read any "
                          "more (moved or deleted?). Put the dataset back where it was trained.")
    return np.stack(pixels), np.asarray(classes, np.int64)


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _error_text(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text[:600]}"


def _disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def _licence(run: Any) -> str:
    config = run.config.to_dict() if run.config is not None else {}
    if config.get("hub_handle"):
        return (f"TF Hub model {config['hub_handle']}: see its model page for its licence; "
                "the trained head is yours.")
    if not config.get("weights"):
        return "Randomly initialised base (no pretrained weights): no third-party weights."
    return ("Pretrained weights from Keras Applications (Apache License 2.0), trained on "
            "ImageNet, whose photos have their own terms of use; the trained head is yours.")


class _Progress:
    """Sends ProgressEvents for the export's steps and honours should_stop."""

    def __init__(self, total: int, on_event: Callable[[Any], None] | None,
                 should_stop: Callable[[], bool] | None) -> None:
        self.total, self.done = total, 0
        self.on_event, self.should_stop = on_event, should_stop
        self.started = time.monotonic()

    def step(self, phase: str, message: str, advance: bool = True) -> None:
        if self.should_stop is not None and self.should_stop():
            raise Cancelled()
        if advance:
            self.done += 1
        if self.on_event is not None:
            from core.progress import ProgressEvent

            elapsed = time.monotonic() - self.started
            eta = elapsed / self.done * (self.total - self.done) if self.done else None
            self.on_event(ProgressEvent(phase=phase, step=self.done, total_steps=self.total,
                                        message=message, eta_seconds=eta))


def _write_formats(run: Any, model: Any, wanted: Sequence[str], staging: Path,
                   progress: _Progress) -> dict[str, FormatResult]:
    """Writes each format into staging; a failed one is recorded and leaves no file."""
    sources = export_formats.ExportSources(
        run, model, staging.parent / f"{staging.name}-saved-model",
        calibration=lambda: _photos(run, "train", CALIBRATION_PHOTOS)[0],
        on_step=lambda message: progress.step("exporting", message, advance=False))
    results: dict[str, FormatResult] = {}
    try:
        for name in wanted:
            fmt = export_formats.get(name)
            result = results[name] = FormatResult(name, fmt.file)
            progress.step("exporting", f"Writing {fmt.title}")
            target = staging / fmt.file
            started = time.monotonic()
            try:
                fmt.write(sources, target)
            except export_formats.FormatUnavailable as exc:
                result.status, result.note = UNAVAILABLE, str(exc)
                continue
            except Exception as exc:
                if _disk_full(exc):
                    raise
                log.warning("Export of %s failed", name, exc_info=True)
                _remove(target)
                result.status, result.error = FAILED, f"conversion failed: {_error_text(exc)}"
                continue
            result.export_seconds = time.monotonic() - started
            result.size_bytes = _size(target)
    finally:
        _remove(sources.scratch)
    return results


def _verify(results: dict[str, FormatResult], staging: Path, test: tuple[np.ndarray, np.ndarray],
            reference: np.ndarray, keras_accuracy: float, progress: _Progress) -> None:
    photos_npy = staging.parent / f"{staging.name}-test-photos.npy"
    np.save(photos_npy, test[0])
    try:
        for name, result in results.items():
            if result.status != OK:
                continue
            fmt = export_formats.get(name)
            progress.step("verifying", f"Loading {fmt.title} in a clean process and "
                          "scoring it on the test photos")
            loaders = [loader for loader in fmt.loaders
                       if loader == fmt.loaders[0] or export_verify.loader_available(loader)]
            found = [export_verify.measure(loader, staging / result.file, photos_npy, test[1],
                                           reference)
                     for loader in loaders]
            _judge(result, found, keras_accuracy)
            if result.status != OK:
                _remove(staging / result.file)  # never leave a file that does not load
    finally:
        photos_npy.unlink(missing_ok=True)


def _judge(result: FormatResult, found: list[export_verify.Measurement],
           keras_accuracy: float) -> None:
    result.runtimes = [m.to_dict() for m in found]
    broken = [m for m in found if m.error]
    if broken:
        result.status = FAILED
        result.error = "; ".join(f"{m.runtime}: {m.error}" for m in broken)
        return
    result.test_accuracy = min(m.test_accuracy for m in found)
    result.agreement = min(m.agreement for m in found)
    result.max_probability_difference = max(m.max_probability_difference for m in found)
    result.latency_ms_p50 = found[0].latency_ms_p50
    drop = (keras_accuracy - result.test_accuracy) * 100.0
    limit = export_formats.get(result.name).limit_points
    result.recommended = drop <= limit + 1e-9
    if not result.recommended:
        result.note = (f"not recommended: {drop:.1f} points below the Keras model's test "
                       f"accuracy (limit {limit:g})")


def _metadata(run: Any, results: dict[str, FormatResult], keras_accuracy: float,
              n_test: int, seconds: float) -> dict[str, Any]:
    from core.features import backbones

    size = run.input_size
    config = run.config.to_dict() if run.config is not None else {}
    try:
        display = backbones.get_spec(run.backbone).display_name if run.backbone else None
    except AppError:
        display = run.backbone
    return files.to_jsonable({
        "metadata_version": METADATA_VERSION,
        "made_by": "Transfer Learning Studio",
        "run_id": run.run_id,
        "exported": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "input": {"size": size, "shape": [None, size, size, 3], "layout": "NHWC",
                  "channels": "RGB", "color_space": "sRGB", "range": [0, 255],
                  "dtype": {fmt.name: fmt.input_dtype for fmt in export_formats.FORMATS},
                  "name": "images"},
        "preprocessing": {"words": PREPROCESSING_WORDS, "exif_upright": True,
                          "color_space": "sRGB", "alpha": "composited on white",
                          "resize": "squash", "crop": False, "keep_aspect_ratio": False,
                          "filter": "bilinear", "antialias": True, "jpeg_draft": True,
                          "library": "Pillow", "scaling_inside_model": True},
        "output": {"name": "probabilities", "shape": [None, len(run.labels)],
                   "meaning": "softmax probability of each class, in labels.txt order",
                   "int8": "uint8; probability = (value - zero_point) * scale, from the "
                           "output tensor's quantization"},
        "labels": run.labels,
        "unsure_threshold": run.unsure_threshold,
        "base": {"name": run.backbone, "display_name": display,
                 "weights": config.get("weights"), "hub_handle": config.get("hub_handle"),
                 "licence": _licence(run)},
        "test_photos": n_test,
        "keras_test_accuracy": keras_accuracy,
        "limits_points": {fmt.name: fmt.limit_points for fmt in export_formats.FORMATS},
        "formats": {name: result.to_dict() for name, result in results.items()},
        "machine": {"cpu_count": os.cpu_count(), "load_average": list(os.getloadavg()),
                    "device": (run.versions or {}).get("device", {}).get("summary")},
        "versions": {k: v for k, v in (run.versions or {}).items() if k != "device"},
        "export_seconds": seconds,
    })


def _clean_stale_staging(out: Path, run_id: str) -> None:
    """Removes temporary folders of this run's exports whose process has died."""
    for leftover in out.glob(f"{_STAGING}{run_id}-*"):
        pid = leftover.name.removeprefix(f"{_STAGING}{run_id}-").split("-")[0]
        if pid.isdigit() and files.process_alive({"pid": int(pid),
                                                  "hostname": socket.gethostname()}):
            continue
        _remove(leftover)
    for leftover in out.glob(f"{_OLD}{run_id}-*"):
        _remove(leftover)


def clean_leftovers(out_dir: str | Path, run_id: str) -> None:
    """Removes what exports of this run left in out_dir when their process died (an export
    job interrupted by a server stop): temporary and replaced folders. Never raises."""
    try:
        _clean_stale_staging(Path(out_dir), run_id)
    except OSError:
        log.warning("Cannot remove the leftovers of an export of %s in %s", run_id, out_dir,
                    exc_info=True)


def _publish(staging: Path, final: Path) -> None:
    """Renames the complete folder into place; an older export is replaced only now."""
    old = None
    files.replaceable_folder(final)  # never renames over a link, device or pipe
    if final.exists():
        old = final.with_name(f"{_OLD}{final.name}-{secrets.token_hex(3)}")
        os.rename(final, old)
    os.rename(staging, final)
    files.fsync_dir(final.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _write_extras(run: Any, staging: Path, metadata: dict[str, Any]) -> None:
    from core.results import report

    files.write_text_atomic(staging / "labels.txt", "\n".join(run.labels) + "\n")
    files.write_json_atomic(staging / "metadata.json", metadata)
    files.write_bytes_atomic(staging / "predict.py",
                             Path(__file__).with_name("predict.py").read_bytes())
    result = run.evaluation
    if result is not None:
        rows = [{"title": export_formats.title(name), **entry}
                for name, entry in metadata["formats"].items()]
        files.write_text_atomic(staging / "report.html",
                                report.report_html(run, result, formats=rows))
        files.write_bytes_atomic(staging / "per_class.csv", report.per_class_csv(result))


def export_stored_run(home: str, run_id: str, out_dir: str, formats: list[str], *,
                      on_event: Callable[[Any], None] | None = None,
                      should_stop: Callable[[], bool] | None = None) -> ExportResult:
    """The export job: loads the run from its home and exports it (export_run).

    Its arguments are plain strings, so a queued export survives a server restart
    (core.jobs.kinds.EXPORT).
    """
    from core.runs.store import RunStore

    return export_run(RunStore(home).load(run_id), out_dir, formats=formats,
                      on_event=on_event, should_stop=should_stop)


def export_run(run: Any, out_dir: str | Path, *, formats: Iterable[str] | str | None = None,
               on_event: Callable[[Any], None] | None = None,
               should_stop: Callable[[], bool] | None = None) -> ExportResult:
    """Writes every requested format of a completed run to `<out_dir>/<run id>/`, verified.

    Args:
        run: A core.runs.store.Run (RunStore.load), completed.
        out_dir: Folder to create the export folder in.
        formats: Format names (core.export.formats.NAMES), a comma-separated string, or None
            for all.
        on_event: Called with a ProgressEvent for each step (phases exporting, verifying).
        should_stop: Polled between steps; True cancels (raises core.errors.Cancelled) and
            leaves nothing behind.

    Returns:
        The ExportResult; a format that failed is in it with its error, the others exported.

    Raises:
        ExportError: when the run cannot be exported or the folder cannot be written.
    """
    wanted = parse_formats(formats)
    check_exportable(run)
    started = time.monotonic()
    progress = _Progress(2 * len(wanted) + 3, on_event, should_stop)
    progress.step("exporting", "Reading the test photos and the model", advance=False)
    out = files.folder_target(out_dir)
    files.replaceable_folder(out / run.run_id)
    try:
        out.mkdir(parents=True, exist_ok=True)
        _clean_stale_staging(out, run.run_id)
        staging = out / f"{_STAGING}{run.run_id}-{os.getpid()}-{secrets.token_hex(3)}"
        staging.mkdir()
    except OSError as exc:
        raise ExportError(f"Cannot write to {out}: {exc.strerror or exc}. Choose a folder you "
                          "can write to.") from exc
    try:
        from core.results.prediction import Predictor

        predictor = Predictor.for_run(run, warm_up=False)
        test = _photos(run, "test")
        reference = np.concatenate([predictor.probabilities(test[0][i:i + 32])
                                    for i in range(0, len(test[0]), 32)])
        keras_accuracy = float(np.mean(reference.argmax(axis=1) == test[1]))
        progress.step("exporting", f"Keras model: {keras_accuracy:.1%} on {len(test[1])} "
                      "test photos")
        results = _write_formats(run, predictor.model, wanted, staging, progress)
        _verify(results, staging, test, reference, keras_accuracy, progress)
        progress.step("saving", "Writing labels, metadata, predict.py and the report")
        metadata = _metadata(run, results, keras_accuracy, len(test[1]),
                             time.monotonic() - started)
        metadata["familiarity"] = export_familiarity.metadata_block(
            run, predictor, staging, [r.file for r in results.values()
                                      if r.status == OK and r.file.endswith(".tflite")],
            test[0][0])
        _write_extras(run, staging, metadata)
        progress.step("saving", "Publishing the export folder")
        final = out / run.run_id
        _publish(staging, final)
    except OSError as exc:
        raise ExportError(f"Cannot write the export to {out}: {exc.strerror or exc}. Free "
                          "some space or choose another folder; nothing was left behind.") \
            from exc
    finally:
        with contextlib.suppress(OSError):
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    log.info("Exported run %s to %s", run.run_id, final)
    return ExportResult(run.run_id, final, results, metadata, time.monotonic() - started)
