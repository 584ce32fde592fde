"""Top-k predictions for one photo or many with a trained run's model, and "none of these".

The model's pooled features and its probabilities come out of one forward pass: the saved
model is raw image -> base -> pooled features -> head, and the Predictor calls those parts
itself, so the familiarity score (core.results.familiarity) reads exactly the vector the head
reads, with no second pass over the base.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from core.config import studio_home
from core.data import batches, images
from core.errors import ConfigError, DatasetError, ImageError, RunNotUsableError
from core.runs import evaluation
from core.runs.store import RunStore

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.5
DEFAULT_BATCH_SIZE = 32


@dataclass(frozen=True)
class Prediction:
    """What the model says about one photo.

    Attributes:
        file: The path as given, an uploaded file's name, or "upload N" / "image N".
        top_k: (label, probability) pairs, most probable first; empty when error is set.
        unsure: True when the top probability is below the run's threshold.
        image: The uint8 (S, S, 3) array the model saw (upright, squashed), None on error.
        error: Why the photo could not be read (what to do included), else None.
        threshold: The unsure threshold that was applied.
        familiarity: How familiar the photo looks to the run (core.results.familiarity;
            higher is more familiar), None when the run has no familiarity.
        unknown: True when familiarity is below the run's familiarity threshold: the
            photo looks like none of the classes ("none of these"); None without one.
        familiarity_threshold: That threshold, None without one.
    """

    file: str
    top_k: list[tuple[str, float]]
    unsure: bool
    image: np.ndarray | None = field(default=None, repr=False, compare=False)
    error: str | None = None
    threshold: float = DEFAULT_THRESHOLD
    familiarity: float | None = None
    unknown: bool | None = None
    familiarity_threshold: float | None = None

    @property
    def ok(self) -> bool:
        """True when the photo was read and predicted."""
        return self.error is None

    @property
    def label(self) -> str | None:
        """The most probable class, or None on error."""
        return self.top_k[0][0] if self.top_k else None

    @property
    def probability(self) -> float | None:
        """Probability of the most probable class, or None on error."""
        return self.top_k[0][1] if self.top_k else None

    @property
    def closest(self) -> str | None:
        """The class the photo looks most like (the top label), said second when unknown."""
        return self.label

    def to_dict(self) -> dict[str, Any]:
        """The command line's JSON: file, top_k [{label, probability}], unsure, unknown,
        familiarity, familiarity_threshold, error."""
        return {
            "file": self.file,
            "top_k": [{"label": label, "probability": p} for label, p in self.top_k],
            "unsure": self.unsure,
            "unknown": self.unknown,
            "familiarity": self.familiarity,
            "familiarity_threshold": self.familiarity_threshold,
            "error": self.error,
        }


def _is_single(sources: Any) -> bool:
    return isinstance(sources, (str, os.PathLike, bytes, bytearray, memoryview, Image.Image)) or (
        hasattr(sources, "read"))


def _name_and_source(source: Any, number: int) -> tuple[str, Any]:
    """A display name for a source, and something core.data.images can decode."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source), source
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"upload {number}", source
    if isinstance(source, Image.Image):
        return getattr(source, "filename", "") or f"image {number}", source
    if hasattr(source, "read"):  # an open file or Streamlit's UploadedFile
        name = Path(str(getattr(source, "name", "") or f"upload {number}")).name
        getvalue = getattr(source, "getvalue", None)
        data = getvalue() if callable(getvalue) else source.read()
        return name, data
    return f"input {number}", source  # core.data.images explains what it cannot read


def split_model(model: Any) -> tuple[list[Any], Any] | None:
    """(the layers before the head, the head) of a studio model, or None for another layout.

    A studio model is a chain: image input -> [preprocessing] -> base -> head, the head being
    a nested model that takes the pooled feature vector (rank 2). Predictor checks on its
    warm-up photo that the parts give back the model's own probabilities.
    """
    import keras

    layers = [layer for layer in getattr(model, "layers", [])
              if not isinstance(layer, keras.layers.InputLayer)]
    if len(layers) < 2 or not isinstance(layers[-1], keras.Model):
        return None
    head = layers[-1]
    inputs = getattr(head, "inputs", None) or []
    if len(inputs) != 1 or len(inputs[0].shape) != 2:
        return None
    return layers[:-1], head


class Predictor:
    """A loaded model with its labels, unsure threshold and familiarity ("none of these").

    Args:
        model: Keras model: raw RGB (S, S, 3) float input in 0..255, probabilities out.
        labels: Class names in the model's output order.
        threshold: Top probability below which a prediction is flagged unsure.
        input_size: Image size S, when the model's input shape does not say it.
        run_dir: The run the model came from, if any.
        batch_size: Images per model call.
        familiarity: The run's core.results.familiarity.Familiarity, or None (no "none
            of these" answers).
    """

    def __init__(
        self,
        model: Any,
        labels: Sequence[str],
        *,
        threshold: float = DEFAULT_THRESHOLD,
        input_size: int | None = None,
        run_dir: Path | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        familiarity: Any = None,
    ) -> None:
        self.model = model
        self.familiarity = familiarity
        self.familiarity_problem: str | None = None  # why there is none, for pages
        self.labels = [str(label) for label in labels]
        self.threshold = float(threshold)
        self.run_dir = run_dir
        self.batch_size = max(1, int(batch_size))
        shape = tuple(model.input_shape)
        size = shape[1] if len(shape) == 4 and shape[1] and shape[1] == shape[2] else input_size
        if not size:
            raise ConfigError(
                f"The model's input shape {shape} does not give a square image size; pass "
                "input_size."
            )
        self.input_size = int(size)
        outputs = model.output_shape[-1]
        if outputs != len(self.labels):
            raise ConfigError(
                f"The model predicts {outputs} classes but {len(self.labels)} labels were "
                "given; use the labels.json saved with this model."
            )
        # Streamlit shares one cached Predictor between sessions (threads).
        self._lock = threading.Lock()
        self._forward: Any = None
        self._parts = split_model(model)
        self._parts_checked = False

    def _compiled(self) -> Any:
        """(features, probabilities) of a batch as one graph for any batch size.

        Traced once, not once per batch size. Features are None for a model whose layout
        split_model does not know.
        """
        if self._forward is None:
            import tensorflow as tf

            spec = tf.TensorSpec([None, self.input_size, self.input_size, 3], tf.float32)
            model, parts = self.model, self._parts

            def both(x: Any) -> Any:
                before, head = parts
                for layer in before:
                    x = layer(x, training=False)
                return x, head(x, training=False)

            if parts is None:
                self._forward = tf.function(lambda x: (None, model(x, training=False)),
                                            input_signature=[spec])
            else:
                self._forward = tf.function(both, input_signature=[spec])
        return self._forward

    def _check_parts(self, batch: np.ndarray, probs: np.ndarray) -> None:
        """Once: the parts must give the whole model's probabilities, else no features."""
        self._parts_checked = True
        if self._parts is None:
            return
        whole = np.asarray(self.model(batch, training=False), np.float64)
        if whole.shape != probs.shape or not np.allclose(whole, probs, atol=1e-4):
            log.warning("The model's parts do not give its own probabilities; predicting "
                        "with the whole model, without familiarity.")
            self._parts, self._forward = None, None
            self.familiarity = None
            self.familiarity_problem = "the model is not laid out as base and head"

    def warm_up(self) -> None:
        """Traces the model once on a blank photo, so the first real prediction is fast."""
        self.probabilities(np.zeros((1, self.input_size, self.input_size, 3), np.uint8))

    @classmethod
    def from_run(
        cls,
        run: str | Path,
        *,
        home: str | Path | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        warm_up: bool = True,
    ) -> Predictor:
        """Loads a usable run's model, class names and unsure threshold (0.5 when absent).

        Args:
            run: A run folder, or a run id in the studio home.
            home: Studio home for run ids; $TL_STUDIO_HOME or ~/.tl-studio when None.
            batch_size: Images per model call.
            warm_up: Trace the model now, so the first prediction is as fast as the rest.

        Raises:
            RunNotFoundError: when the run does not exist.
            RunNotUsableError: when it is not completed or is broken (its files damaged),
                saying why; also when its model cannot be loaded.
        """
        path = Path(run).expanduser()
        # A run folder is found without the studio home (which may not even be writable).
        store = RunStore(path.parent.parent if path.is_dir() else studio_home(home))
        return cls.for_run(store.load_usable(run, "predict"), batch_size=batch_size,
                           warm_up=warm_up)

    @classmethod
    def for_run(cls, stored: Any, *, batch_size: int = DEFAULT_BATCH_SIZE,
                warm_up: bool = True) -> Predictor:
        """The predictor of a run already loaded (core.runs.store.Run), usable.

        Raises:
            RunNotUsableError: when its model cannot be loaded, saying why.
        """
        stored.require_usable("predict")
        assert stored.model_path is not None  # a usable run has a model
        import keras

        import core.features.backbones  # noqa: F401  registers the custom layers saved in models

        try:
            model = keras.saving.load_model(stored.model_path, compile=False)
        except Exception as exc:  # unknown layer, version mismatch, damage the check missed
            raise RunNotUsableError(
                f"The model of run {stored.run_id} cannot be loaded ({type(exc).__name__}: "
                f"{exc}). It is damaged or was saved by an incompatible version; train again."
            ) from exc
        predictor = cls(model, stored.labels, threshold=stored.unsure_threshold,
                        input_size=stored.input_size, run_dir=stored.run_dir,
                        batch_size=batch_size)
        from core.results import familiarity

        # Stored with the run; an older run gets it now, from its cached features.
        predictor.familiarity, predictor.familiarity_problem = familiarity.for_run(
            stored, predictor, home=Path(stored.run_dir).parent.parent)
        if warm_up:
            predictor.warm_up()
        return predictor

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """Class probabilities [B, C] of uint8 images [B, S, S, 3]."""
        return self.features_and_probabilities(batch)[1]

    def features_and_probabilities(self, batch: np.ndarray
                                   ) -> tuple[np.ndarray | None, np.ndarray]:
        """(pooled features [B, D] the head read, or None; probabilities [B, C]), one pass."""
        x = np.asarray(batch, dtype=np.float32)
        with self._lock:
            feats, out = self._compiled()(x)
            probs = np.asarray(out, dtype=np.float64).reshape(len(batch), len(self.labels))
            if not self._parts_checked and len(x):
                self._check_parts(x, probs)
                if self._parts is None:
                    feats = None
        return (None if feats is None else np.asarray(feats, np.float32)), probs

    def familiarity_scores(self, features: np.ndarray | None
                           ) -> tuple[np.ndarray, np.ndarray] | None:
        """(familiarity of each feature row, the threshold that applies to it), or None
        without familiarity or features."""
        if self.familiarity is None or features is None:
            return None
        return self.familiarity.scores(features)

    def predict(self, sources: Any, top_k: int = 5) -> list[Prediction]:
        """Predicts one photo or many: file paths, bytes, PIL images, open files, or a mix.

        Every photo is decoded like the training photos (EXIF orientation, colour modes,
        squashed to the model's size). A photo that cannot be read gets a Prediction with
        error set; the others are still predicted.

        Args:
            sources: One source or an iterable of them.
            top_k: How many (label, probability) pairs per photo, capped at the class count.

        Returns:
            One Prediction per source, in the same order.
        """
        if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
            raise ConfigError(f"top-k must be a whole number of at least 1; got {top_k!r}.")
        k = min(int(top_k), len(self.labels))
        items: Iterable[Any] = [sources] if _is_single(sources) else sources
        results: list[Prediction | None] = []
        decoded: list[tuple[int, str, np.ndarray]] = []
        for number, source in enumerate(items, start=1):
            name = f"input {number}"
            try:
                name, readable = _name_and_source(source, number)
                array = images.load_resized(readable, self.input_size,
                                            max_pixels=images.DEFAULT_MAX_PIXELS)
            except (ImageError, OSError) as exc:
                results.append(Prediction(
                    file=name, top_k=[], unsure=True, error=_error_text(name, exc),
                    threshold=self.threshold,
                ))
                continue
            results.append(None)
            decoded.append((len(results) - 1, name, array))
        for start in range(0, len(decoded), self.batch_size):
            chunk = decoded[start:start + self.batch_size]
            feats, probs = self.features_and_probabilities(
                np.stack([array for _, _, array in chunk]))
            scored = self.familiarity_scores(feats)
            scores, limits = scored if scored is not None else (None, None)
            order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
            for i, ((slot, name, array), row, best) in enumerate(
                    zip(chunk, probs, order, strict=True)):
                pairs = [(self.labels[j], float(row[j])) for j in best]
                results[slot] = Prediction(
                    file=name, top_k=pairs, unsure=pairs[0][1] < self.threshold, image=array,
                    threshold=self.threshold,
                    familiarity=None if scores is None else float(scores[i]),
                    unknown=None if scores is None else bool(scores[i] < limits[i]),
                    familiarity_threshold=None if limits is None else float(limits[i]),
                )
        return [r for r in results if r is not None]


def _error_text(name: str, exc: BaseException) -> str:
    # core.data.images' reasons already say what to do (re-export, downscale, use JPEG...).
    reason = str(exc) or type(exc).__name__
    return f"Cannot read {name}: {reason}"


def evaluate_dataset(predictor: Predictor, index: pd.DataFrame) -> evaluation.EvalResult:
    """Measures a model on every image of an ingested dataset.

    Args:
        predictor: The loaded model.
        index: A DatasetIndex (path, label, ...) whose class names are among the model's.

    Raises:
        DatasetError: when the dataset has classes the model was not trained on, or no images.
    """
    unknown = sorted(set(index["label"]) - set(predictor.labels))
    if unknown:
        raise DatasetError(
            f"The model does not know the classes {unknown}; its classes are "
            f"{predictor.labels}. Rename or remove those folders."
        )
    if index.empty:
        raise DatasetError("The dataset has no usable images to evaluate on.")
    position = {label: i for i, label in enumerate(predictor.labels)}
    paths = index["path"].astype(str).tolist()
    photos = batches.make_tf_dataset(paths, None, predictor.input_size, predictor.batch_size)
    probs = np.concatenate([predictor.probabilities(batch.numpy()) for batch in photos])
    y_true = index["label"].map(position).to_numpy()
    return evaluation.evaluate_probabilities(probs, y_true, predictor.labels, paths)
