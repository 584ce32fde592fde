"""An exported TFLite file run inside the studio: the Predict page's "as it runs on a phone"."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from core.errors import RunNotFoundError
from core.features import tflite
from core.results.prediction import DEFAULT_THRESHOLD, Predictor


class TFLitePredictor(Predictor):
    """A Predictor whose model is an exported .tflite file (float or full-integer).

    Photos are decoded exactly as for the Keras model; uint8 pixels go into an int8 file as
    they are, and its output is dequantized with the tensor's scale and zero point.

    Args:
        path: The .tflite file.
        labels: Class names in output order.
        threshold: Top probability below which a prediction is flagged unsure.
    """

    def __init__(self, path: str | Path, labels: Sequence[str], *,
                 threshold: float = DEFAULT_THRESHOLD) -> None:
        try:
            self.interpreter = tflite.open_interpreter(path, litert=True)
        except Exception as exc:
            raise RunNotFoundError(f"The exported file {path} cannot be loaded "
                                   f"({type(exc).__name__}: {exc}); export the run again.") from exc
        self.path = Path(path)
        self._in = self.interpreter.get_input_details()[0]
        self._out = self.interpreter.get_output_details()[0]
        shape = tuple(int(n) for n in self._in["shape"])
        shim = SimpleNamespace(input_shape=(None, *shape[1:]),
                               output_shape=(None, int(self._out["shape"][-1])))
        super().__init__(shim, labels, threshold=threshold, batch_size=1)
        self._tflite_lock = threading.Lock()

    def features_and_probabilities(self, batch: np.ndarray) -> tuple[None, np.ndarray]:
        """(None: the file gives out no features, probabilities [B, C])."""
        return None, self.probabilities(batch)

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """Class probabilities [B, C] of uint8 images [B, S, S, 3], one photo per call."""
        with self._tflite_lock:
            probs = tflite.run(self.interpreter, np.asarray(batch))
        return np.asarray(probs, np.float64).reshape(len(probs), len(self.labels))
