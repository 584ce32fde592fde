"""Checks an exported file the way a user loads it: in a separate, clean Python process.

The process runs core/export/client.py with `python -I` from a folder outside the project,
so neither the studio's code nor its folder is importable there (the client reports whether
`core` could be found, and a format loaded with it importable is not counted as verified).
It gets the test photos already decoded by the studio's own decoder, so the score measures
the format, not a second decoder.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

CLIENT = Path(__file__).with_name("client.py")
TIMEOUT_SECONDS = 900.0


@dataclass
class Measurement:
    """What one clean process measured for one format with one runtime.

    Attributes:
        runtime: "keras", "saved_model", "tf.lite" or "ai_edge_litert".
        test_accuracy: Share of test photos whose top-1 is their class.
        agreement: Share of test photos whose top-1 equals the Keras model's.
        max_probability_difference: Largest |p_format - p_keras| over photos and classes.
        latency_ms_p50: Median wall time of one single-photo call (after one warm-up call).
        load_seconds: Time to load the file.
        error: Why the file could not be loaded or run, else None.
    """

    runtime: str
    test_accuracy: float | None = None
    agreement: float | None = None
    max_probability_difference: float | None = None
    latency_ms_p50: float | None = None
    load_seconds: float | None = None
    error: str | None = None
    probabilities: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready figures (the probabilities left out)."""
        return {"runtime": self.runtime, "test_accuracy": self.test_accuracy,
                "agreement": self.agreement,
                "max_probability_difference": self.max_probability_difference,
                "latency_ms_p50": self.latency_ms_p50, "load_seconds": self.load_seconds,
                "error": self.error}


@functools.cache
def loader_available(loader: str) -> bool:
    """Whether a clean process of this Python can import what the loader needs."""
    done = subprocess.run([sys.executable, "-I", str(CLIENT), "--available", loader],
                          cwd=tempfile.gettempdir(), capture_output=True, timeout=120)
    return done.returncode == 0


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def measure(loader: str, model_path: Path, photos_npy: Path, labels: np.ndarray,
            reference: np.ndarray) -> Measurement:
    """Loads one exported file in a clean process and scores it on the test photos.

    Args:
        loader: A loader of core/export/client.py (an ExportFormat's `loaders`).
        model_path: The exported file or folder.
        photos_npy: uint8 [N, S, S, 3] test photos, decoded by core.data.images.
        labels: int [N] true class of each photo.
        reference: [N, C] probabilities of the studio's Keras model on the same photos.
    """
    name = loader
    with tempfile.TemporaryDirectory(prefix="tl-export-check-") as work:
        out = Path(work) / "probabilities.npy"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        command = [sys.executable, "-I", str(CLIENT), loader, str(Path(model_path).resolve()),
                   str(Path(photos_npy).resolve()), str(out)]
        try:
            done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True,
                                  timeout=TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            return Measurement(name, error=f"no answer within {TIMEOUT_SECONDS:.0f} s")
        if done.returncode != 0 or not out.is_file():
            return Measurement(name, error=f"loading it failed: {_last_line(done.stderr)}")
        facts = json.loads(_last_line(done.stdout))
        if facts.get("project_importable"):
            return Measurement(name, error="the check process could import the studio's "
                               "code, so it proves nothing; run the export from a checkout "
                               "that is not installed into the Python environment")
        probs = np.load(out)
    return score(name, probs, labels, reference, facts["latency_ms"], facts["load_seconds"])


def score(runtime: str, probs: np.ndarray, labels: np.ndarray, reference: np.ndarray,
          latency_ms: list[float], load_seconds: float | None = None) -> Measurement:
    """Accuracy, agreement with the Keras model and largest difference of probabilities."""
    if probs.shape != reference.shape:
        return Measurement(runtime, error=f"it returned shape {list(probs.shape)}, expected "
                           f"{list(reference.shape)}")
    if not np.all(np.isfinite(probs)):
        return Measurement(runtime, error="it returned non-finite probabilities")
    top = probs.argmax(axis=1)
    return Measurement(
        runtime=runtime,
        test_accuracy=float(np.mean(top == labels)),
        agreement=float(np.mean(top == reference.argmax(axis=1))),
        max_probability_difference=float(np.abs(probs - reference).max()),
        latency_ms_p50=float(np.median(latency_ms)) if latency_ms else None,
        load_seconds=load_seconds, probabilities=probs,
    )
