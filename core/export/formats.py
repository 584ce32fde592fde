"""The export formats, one record each: file, title, input type, writer and clean-process loaders.

Adding a format means one `ExportFormat` row in FORMATS, its writer (a function of an
ExportSources and the target path) and a loader in core/export/client.py named in its
`loaders`; the exporter, the verification, metadata.json, the Export page and the command
line all read this table.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core import files
from core.errors import AppError


class FormatUnavailable(AppError):
    """A format that cannot be made for this run; the message says why in words."""


class ExportSources:
    """What the writers need, each made once per export and only when a writer asks for it.

    Args:
        run: The core.runs.store.Run exported.
        model: Its loaded Keras model.
        scratch: A folder path for the SavedModel the TFLite files are converted from.
        calibration: Returns uint8 [N, S, S, 3] training photos (int8 calibration).
        on_step: Called with a sentence when a writer starts a long preparation.
    """

    def __init__(self, run: Any, model: Any, scratch: Path,
                 calibration: Callable[[], np.ndarray],
                 on_step: Callable[[str], None] | None = None) -> None:
        self.run, self.model, self.scratch = run, model, scratch
        self.size = int(run.input_size)
        self._calibration, self._photos = calibration, None
        self.on_step = on_step or (lambda message: None)

    def conversion_source(self) -> Path:
        """The SavedModel that TFLite conversions read (written on first use)."""
        from core.export.saved_model import write_conversion_source

        if not self.scratch.is_dir():
            write_conversion_source(self.model, self.size, self.scratch)
        return self.scratch

    def calibration_photos(self) -> np.ndarray:
        """Training photos for int8 calibration (read on first use)."""
        if self._photos is None:
            self.on_step("Reading training photos to calibrate int8")
            self._photos = self._calibration()
        return self._photos

    def has_hub_layer(self) -> bool:
        """Whether the model holds a TF Hub layer (which only the studio's code can rebuild)."""
        stack = list(getattr(self.model, "layers", []))
        while stack:
            layer = stack.pop()
            if type(layer).__name__ == "HubFeatureVector":
                return True
            stack.extend(getattr(layer, "layers", []))
        return False


Writer = Callable[[ExportSources, Path], None]


@dataclass(frozen=True)
class ExportFormat:
    """One deployable format.

    Attributes:
        name: Key used on the command line, in metadata.json and on the Export page.
        file: File or folder name inside the export folder.
        title: Name for people.
        input_dtype: What the file takes: "float32" (pixels 0..255) or "uint8".
        write: Writes the file (raises FormatUnavailable when the run cannot have it).
        loaders: Runners of core/export/client.py that load and score it in a clean
            process; each is one verification.
        limit_points: Most accuracy points it may lose against the Keras model and stay
            recommended.
        phone: Whether the Predict page offers it as "as it runs on a phone".
    """

    name: str
    file: str
    title: str
    input_dtype: str
    write: Writer
    loaders: tuple[str, ...]
    limit_points: float = 1.0
    phone: bool = False


def _write_keras(sources: ExportSources, target: Path) -> None:
    if sources.has_hub_layer():
        raise FormatUnavailable("A TF Hub base is a layer of the studio's own code, which a "
                                "plain Keras cannot rebuild; use the SavedModel or a TFLite file.")
    shutil.copyfile(sources.run.model_path, target)


def _write_saved_model(sources: ExportSources, target: Path) -> None:
    from core.export.saved_model import write_saved_model

    write_saved_model(sources.model, sources.size, target)


def _tflite_writer(kind: str) -> Writer:
    def write(sources: ExportSources, target: Path) -> None:
        from core.export.tflite_files import tflite_bytes

        calibration = sources.calibration_photos() if kind == "int8" else None
        files.write_bytes_atomic(target, tflite_bytes(sources.conversion_source(),
                                                      sources.size, kind, calibration))

    write.__name__ = f"write_tflite_{kind}"
    return write


_TFLITE_LOADERS = ("tf.lite", "litert")


def _write_browser(sources: ExportSources, target: Path) -> None:
    from core.export import browser

    browser.write(sources.model, sources.size, target)

FORMATS: tuple[ExportFormat, ...] = (
    ExportFormat("keras", "model.keras", "Keras (.keras)", "float32", _write_keras,
                 ("keras",)),
    ExportFormat("saved_model", "saved_model", "TensorFlow SavedModel (TF Serving)", "float32",
                 _write_saved_model, ("saved_model",)),
    ExportFormat("tflite_float32", "model_float32.tflite", "TensorFlow Lite, float32",
                 "float32", _tflite_writer("float32"), _TFLITE_LOADERS),
    ExportFormat("tflite_float16", "model_float16.tflite", "TensorFlow Lite, float16",
                 "float32", _tflite_writer("float16"), _TFLITE_LOADERS, phone=True),
    # int8 may lose 2 points: full-integer quantisation of MobileNetV2 costs about 1.
    ExportFormat("tflite_int8", "model_int8.tflite", "TensorFlow Lite, int8 (full integer)",
                 "uint8", _tflite_writer("int8"), _TFLITE_LOADERS, limit_points=2.0,
                 phone=True),
    # The live camera's file (LiteRT.js in the visitor's browser, core.export.browser): the
    # float32 conversion with its batch fixed at one photo, which LiteRT.js needs.
    ExportFormat("browser", "model_browser.tflite",
                 "Browser (LiteRT.js: TensorFlow Lite float32, one photo per call)", "float32",
                 _write_browser, _TFLITE_LOADERS),
)
NAMES: tuple[str, ...] = tuple(fmt.name for fmt in FORMATS)
_BY_NAME = {fmt.name: fmt for fmt in FORMATS}


def get(name: str) -> ExportFormat:
    """The record of a format.

    Raises:
        KeyError: for a name not in NAMES.
    """
    return _BY_NAME[name]


def title(name: str) -> str:
    """A format's name for people (the key itself for an unknown one, e.g. from an old export)."""
    fmt = _BY_NAME.get(name)
    return fmt.title if fmt is not None else str(name)
