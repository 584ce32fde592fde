"""Grad-CAM heatmaps: where in a photo a trained studio model found the evidence for a class.

A studio model is preprocessing layers, a nested pretrained base (a keras.Model built with
pooling="avg") and a head. Grad-CAM needs the base's last convolutional feature maps, which
the outer model never exposes, so the model is taken apart once: the layers before the base,
the base up to its last 4-D output ("the maps"), the rest of the base (its pooling) and the
head. The maps are computed, watched by a GradientTape, then pooled and sent through the head
to the class score; the gradient of that score, averaged over space, weighs each channel of
the maps, and the ReLU of the weighted sum, normalised to [0, 1], is the heatmap
(Selvaraju et al., 2017; the Keras Grad-CAM example, made to work with a nested base).

The class score is the head's pre-softmax logit whenever the head ends in a softmax Dense
layer (every studio head does): the probability's gradient shrinks towards zero as the model
grows sure (p(1-p)) and mixes in the other classes, which is why the paper and the Keras
example use the logit. Any other head falls back to the probability, and says so (`score`).

Module-level state: the explainers built per model (`_EXPLAINERS`, weakly keyed, so a model
that is dropped frees its explainer), a cache that cannot change a result;
`clear_explainer_cache()` empties it for tests.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from core.data import images
from core.errors import AppError
from core.results.overlays import (
    DEFAULT_OPACITY,
    ORIGINAL_MAX_SIDE,
    original_photo,
    overlay,
    png_bytes,
)

if TYPE_CHECKING:
    from core.runs.evaluation import EvalResult
    from core.runs.store import Run

log = logging.getLogger(__name__)

SCORE_LOGIT = "logit"
SCORE_PROBABILITY = "probability"
HUB_EXPLANATION = (
    "Explanations need the base's own feature maps, and a TF Hub base is one opaque layer "
    "that gives out only its pooled feature vector, so there is nothing inside it to weigh. "
    "Train the run on one of the studio's Keras bases (MobileNetV2, EfficientNet...) to see "
    "where the model looks."
)

_EXPLAINERS: weakref.WeakKeyDictionary[Any, Explainer] = weakref.WeakKeyDictionary()
_EXPLAINERS_LOCK = threading.Lock()

# A "jet"-like colour table: dark blue (no evidence) -> cyan -> yellow -> dark red (most).

class ExplainError(AppError):
    """A model, class or photo that cannot be explained; the message says what to do."""


@dataclass(frozen=True)
class Heatmap:
    """Where the model found the evidence for one class in one photo.

    Attributes:
        label: The explained class.
        index: Its position in the model's outputs.
        probability: The model's probability of that class for this photo.
        score: What was differentiated: "logit" (pre-softmax) or "probability".
        values: float32 (S, S) in [0, 1] at the model's input size; 1 is the strongest
            evidence. All zeros when nothing in the photo speaks for the class (see empty).
        image: The uint8 (S, S, 3) photo as the model saw it (upright, squashed).
        grid: Height and width of the feature maps the heatmap was computed on (7 x 7 for
            MobileNetV2 at 224 px): the heatmap's real resolution.
        layer: Name of the base's layer whose output are the feature maps.
    """

    label: str
    index: int
    probability: float
    score: str
    values: np.ndarray = field(repr=False, compare=False)
    image: np.ndarray = field(repr=False, compare=False)
    grid: tuple[int, int] = (0, 0)
    layer: str = ""

    @property
    def empty(self) -> bool:
        """True when no region of the photo counts in favour of the class."""
        return not bool(np.any(self.values > 0))


# ----------------------------------------------------------------------------- the model apart


def _is_hub_layer(layer: Any) -> bool:
    return type(layer).__name__ == "HubFeatureVector"


def _nested_models(model: Any) -> list[Any]:
    import keras

    found = []
    for layer in getattr(model, "layers", []):
        if isinstance(layer, keras.Model):
            found.append(layer)
            found.extend(_nested_models(layer))
    return found


def _steps(model: Any, base: Any) -> list[Any]:
    """The model's layers in call order, nested chains flattened, the base kept whole."""
    import keras

    steps: list[Any] = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, keras.Model) and layer is not base:
            steps.extend(_steps(layer, base))
        else:
            steps.append(layer)
    return steps


def _is_softmax(layer: Any) -> bool:
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", "") == "softmax"


class Explainer:
    """Grad-CAM for one model: taken apart once, the gradient function traced once.

    Args:
        model: A studio model (raw RGB (S, S, 3) 0..255 in, probabilities out) whose
            pretrained base is a nested keras.Model.
        labels: Class names in the model's output order.

    Raises:
        ExplainError: A TF Hub base, a model without a nested convolutional base, or one
            whose parts do not give back its own probabilities.
    """

    def __init__(self, model: Any, labels: Sequence[str]) -> None:
        import keras

        self.labels = [str(label) for label in labels]
        every = [model, *_nested_models(model)]
        if any(_is_hub_layer(layer) for m in every for layer in m.layers):
            raise ExplainError(f"This model cannot be explained. {HUB_EXPLANATION}")
        nested = every[1:]
        if not nested:
            raise ExplainError(
                "This model has no nested pretrained base to explain: explanations work on "
                "models trained by the studio (preprocessing, a Keras base, a head)."
            )
        # The pretrained network is the nested model with most layers (as in unfreeze_top).
        base = max(nested, key=lambda m: len(m.layers))
        conv = [layer for layer in base.layers if len(layer.output.shape) == 4
                and not isinstance(layer, keras.layers.InputLayer)]
        if not conv or len(base.output.shape) != 2:
            raise ExplainError(
                f"The base {base.name} has no 4-D feature maps followed by pooling, so there "
                "is no spatial map to explain. Use one of the studio's Keras bases."
            )
        last = conv[-1]
        steps = _steps(model, base)
        at = steps.index(base)
        self._before = steps[:at]
        self._maps = keras.Model(base.input, last.output, name="grad_cam_maps")
        self._pooling = keras.Model(last.output, base.output, name="grad_cam_pooling")
        head = steps[at + 1:]
        final = head[-1] if head else None
        self.score = SCORE_PROBABILITY
        self._dense: Any = None
        if isinstance(final, keras.layers.Dense) and _is_softmax(final):
            # The logit is the Dense layer without its softmax.
            self.score, self._dense, head = SCORE_LOGIT, final, head[:-1]
        elif isinstance(final, keras.layers.Softmax) or (
                isinstance(final, keras.layers.Activation) and _is_softmax(final)):
            self.score, head = SCORE_LOGIT, head[:-1]
        self._head = head
        self.layer = last.name
        self.grid = (int(last.output.shape[1]), int(last.output.shape[2]))
        shape = tuple(model.input_shape)
        if len(shape) != 4 or not shape[1] or shape[1] != shape[2]:
            raise ExplainError(f"The model takes {shape}, not square photos of a fixed size, "
                               "so it is not a studio model and cannot be explained.")
        self.input_size = int(shape[1])
        self._function: Any = None
        self._lock = threading.Lock()
        self._check_parts(model)

    # -- the forward pass in parts

    def _forward(self, images_f32: Any) -> tuple[Any, Any]:
        """(the feature maps as float32, a function: maps -> (class scores, probabilities))."""
        import keras
        import tensorflow as tf

        x = images_f32
        for layer in self._before:
            x = layer(x, training=False)
        maps = tf.cast(self._maps(x, training=False), tf.float32)

        def scores(watched: Any) -> tuple[Any, Any]:
            h = self._pooling(watched, training=False)
            for layer in self._head:
                h = layer(h, training=False)
            h = tf.cast(h, tf.float32)
            if self._dense is not None:
                kernel = tf.cast(self._dense.kernel, tf.float32)
                h = tf.matmul(h, kernel)
                if self._dense.bias is not None:
                    h = h + tf.cast(self._dense.bias, tf.float32)
            if self.score == SCORE_LOGIT:
                return h, keras.ops.softmax(h, axis=-1)
            return h, h

        return maps, scores

    def _check_parts(self, model: Any) -> None:
        """The parts must give the model's own probabilities, or the heatmap would lie."""
        import tensorflow as tf

        rng = np.random.default_rng(0)
        probe = rng.integers(0, 256, (1, self.input_size, self.input_size, 3)).astype(np.float32)
        maps, scores = self._forward(tf.constant(probe))
        _, probabilities = scores(maps)
        expected = np.asarray(model(probe, training=False), np.float64)
        got = np.asarray(probabilities, np.float64)
        if got.shape != expected.shape or not np.allclose(got, expected, atol=2e-3):
            raise ExplainError(
                "This model's layers do not form the layout explanations need (preprocessing, "
                "a nested base, a head, one after the other), so it cannot be explained. "
                "Models trained by the studio have it; train the run again if it is old."
            )

    def _compiled(self) -> Any:
        if self._function is None:
            import tensorflow as tf

            size = self.input_size
            signature = [tf.TensorSpec([None, size, size, 3], tf.float32),
                         tf.TensorSpec([None], tf.int32)]

            def grad_cam(batch: Any, classes: Any) -> tuple[Any, Any, Any, Any]:
                maps, scores = self._forward(batch)
                with tf.GradientTape() as tape:
                    tape.watch(maps)
                    logits, probabilities = scores(maps)
                    # A negative class asks for the most probable one.
                    top = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
                    classes = tf.where(classes < 0, top, classes)
                    chosen = tf.gather(logits, classes, axis=1, batch_dims=1)
                # Photos of a batch are independent (inference mode), so one gradient serves.
                grads = tape.gradient(chosen, maps)
                weights = tf.reduce_mean(grads, axis=(1, 2))            # [B, C]
                cam = tf.nn.relu(tf.einsum("bhwc,bc->bhw", maps, weights))
                peak = tf.reduce_max(cam, axis=(1, 2))
                # Normalised after resizing, so the map at the input size peaks at exactly 1.
                cam = tf.image.resize(cam[..., None], [size, size], method="bilinear")[..., 0]
                top_value = tf.reduce_max(cam, axis=(1, 2))
                cam = tf.math.divide_no_nan(cam, top_value[:, None, None])
                return tf.clip_by_value(cam, 0.0, 1.0), probabilities, peak, classes

            self._function = tf.function(grad_cam, input_signature=signature)
        return self._function

    # -- public

    def class_index(self, target: str | int) -> int:
        """The output position of a class name or index.

        Raises:
            ExplainError: An unknown class, naming the valid ones.
        """
        if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
            if 0 <= int(target) < len(self.labels):
                return int(target)
        elif str(target) in self.labels:
            return self.labels.index(str(target))
        raise ExplainError(
            f"The model has no class {target!r}. Its classes are: {', '.join(self.labels)}."
        )

    def heatmaps(self, batch: np.ndarray, classes: Sequence[int]
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Grad-CAM of uint8 photos [B, S, S, 3] for one class index each (-1: the top class).

        Returns:
            (maps float32 [B, S, S] in [0, 1], probabilities [B, C], peaks [B]: the largest
            value before normalising, 0 when nothing speaks for the class, and the class
            index explained for each photo).
        """
        import tensorflow as tf

        array = np.asarray(batch)
        if array.ndim != 4 or array.shape[1:] != (self.input_size, self.input_size, 3):
            raise ExplainError(
                f"Photos must be {self.input_size} x {self.input_size} RGB arrays as the model "
                f"takes them; got shape {array.shape}."
            )
        wanted = np.asarray(classes, np.int64).reshape(-1)
        if len(wanted) != len(array) or wanted.min(initial=0) < -1 \
                or wanted.max(initial=0) >= len(self.labels):
            raise ExplainError(
                f"Give one class index per photo, between 0 and {len(self.labels) - 1} (-1 for "
                f"the model's answer); got {wanted.tolist()} for {len(array)} photos."
            )
        wanted = tf.constant(wanted.astype(np.int32))
        with self._lock:  # Streamlit sessions share one explainer
            maps, probs, peaks, chosen = self._compiled()(tf.constant(array, tf.float32), wanted)
        return (np.asarray(maps, np.float32), np.asarray(probs, np.float64),
                np.asarray(peaks, np.float64), np.asarray(chosen, np.int64))

    def explain(self, image: np.ndarray, target: str | int | None = None) -> Heatmap:
        """The heatmap of one photo (uint8 (S, S, 3), as load_resized gives it) for a class.

        Args:
            image: The photo at the model's input size.
            target: A class name or index; None explains the most probable class.

        Raises:
            ExplainError: An unknown class (the message lists the valid ones).
        """
        batch = np.asarray(image, np.uint8)[None]
        wanted = -1 if target is None else self.class_index(target)
        maps, probs, _, chosen = self.heatmaps(batch, [wanted])
        index = int(chosen[0])
        return Heatmap(label=self.labels[index], index=index, probability=float(probs[0, index]),
                       score=self.score, values=maps[0], image=batch[0], grid=self.grid,
                       layer=self.layer)


def explainer_for(model: Any, labels: Sequence[str]) -> Explainer:
    """The model's Explainer, built on first use and kept while the model lives.

    Raises:
        ExplainError: The model cannot be explained (see Explainer).
    """
    with _EXPLAINERS_LOCK:
        explainer = _EXPLAINERS.get(model)
        if explainer is None or explainer.labels != [str(label) for label in labels]:
            explainer = Explainer(model, labels)
            _EXPLAINERS[model] = explainer
    return explainer


def clear_explainer_cache() -> None:
    """Forgets every kept Explainer (tests)."""
    with _EXPLAINERS_LOCK:
        _EXPLAINERS.clear()


def check_explainable(run: Run) -> None:
    """Raises ExplainError when a run cannot be explained, before its model is loaded."""
    from core.features import backbones

    if run.backbone == backbones.HUB_BACKBONE:
        raise ExplainError(f"Run {run.run_id} cannot be explained. {HUB_EXPLANATION}")
    if run.model_path is None:
        raise ExplainError(
            f"Run {run.run_id} has no trained model (status: {run.state}), so there is nothing "
            "to explain. Pick a completed run (`python -m core runs`) or train again."
        )


# ----------------------------------------------------------------------------- pictures


def on_original(heatmap: Heatmap, original: np.ndarray, opacity: float = DEFAULT_OPACITY
                ) -> np.ndarray:
    """The heatmap over the upright original photo (see original_photo)."""
    return overlay(original, heatmap.values, opacity)


def on_model_view(heatmap: Heatmap, opacity: float = DEFAULT_OPACITY) -> np.ndarray:
    """The heatmap over the photo as the model saw it."""
    return overlay(heatmap.image, heatmap.values, opacity)


# ----------------------------------------------------------------------------- from a run


def load_explainer(run: Run) -> Explainer:
    """The Explainer of a run's model (the model loaded as the Predict page loads it).

    Raises:
        ExplainError: A TF Hub run, a run without a model, or a model that cannot be
            explained.
        RunNotFoundError: The model or labels cannot be loaded.
    """
    from core.results.prediction import Predictor

    check_explainable(run)
    predictor = Predictor.for_run(run, warm_up=False)
    return explainer_for(predictor.model, predictor.labels)


def explain_file(explainer: Explainer, photo: str | Path | bytes, target: str | None = None,
                 max_side: int = ORIGINAL_MAX_SIDE) -> tuple[Heatmap, np.ndarray]:
    """The heatmap of a photo file for a class, and the upright original photo.

    Args:
        explainer: The model's Explainer.
        photo: A photo file (or its bytes).
        target: The class to explain; None: the model's answer.
        max_side: The original photo is scaled down to at most this many pixels a side.

    Raises:
        ExplainError: An unknown class, or a photo that cannot be read (saying why).
    """
    index = None if target is None else explainer.class_index(target)
    try:
        model_view = images.load_resized(photo, explainer.input_size,
                                         max_pixels=images.DEFAULT_MAX_PIXELS)
        original = original_photo(photo, max_side)
    except (AppError, OSError) as exc:
        raise ExplainError(f"Cannot read the photo {photo}: {exc}") from exc
    return explainer.explain(model_view, index), original


def write_explanation(run: Run, photo: str | Path, out: str | Path,
                      target: str | None = None, opacity: float = DEFAULT_OPACITY) -> Heatmap:
    """Writes the heatmap over the original photo to a PNG file (`python -m core explain`).

    Raises:
        ExplainError: The run, class or photo cannot be explained, or out cannot be written.
    """
    from core import files

    path = files.file_target(out)  # before the work: a device or pipe is refused at once
    explainer = load_explainer(run)
    heatmap, original = explain_file(explainer, photo, target)
    path = files.file_target(path)  # again: it may have changed meanwhile
    try:
        files.write_bytes_atomic(path, png_bytes(on_original(heatmap, original, opacity)))
    except OSError as exc:
        raise ExplainError(f"Cannot write {path}: {exc.strerror or exc}. Choose a file in a "
                           "folder you can write to with --out.") from exc
    return heatmap


@dataclass(frozen=True)
class ExplainedMistake:
    """A test photo the model got wrong, with its heatmaps over the upright photo.

    Attributes:
        path: The photo file.
        true: Its class.
        predicted: What the model answered.
        confidence: The probability of that answer.
        predicted_map: Where the model saw the class it answered.
        true_map: Where it saw the true class (None when the photo cannot be read).
        original: The upright photo, small (see worst_mistakes' max_side).
        error: Why the photo cannot be explained, else None.
    """

    path: str
    true: str
    predicted: str
    confidence: float
    predicted_map: Heatmap | None = field(default=None, repr=False)
    true_map: Heatmap | None = field(default=None, repr=False)
    original: np.ndarray | None = field(default=None, repr=False)
    error: str | None = None


def worst_mistakes(run: Run, result: EvalResult, limit: int = 6, max_side: int = 240
                   ) -> list[ExplainedMistake]:
    """The test photos the model got most confidently wrong, with both classes' heatmaps.

    Args:
        run: The run (its model explains).
        result: Its test evaluation.
        limit: How many mistakes, most confident first.
        max_side: Largest side of the photos kept (the report embeds them).

    Raises:
        ExplainError: The run cannot be explained (a TF Hub base, no model...).
        RunNotFoundError: Its model cannot be loaded.
    """
    frame = result.predictions
    rows = frame[~frame["correct"].astype(bool)].sort_values(
        "confidence", ascending=False, kind="stable").head(max(0, int(limit)))
    if rows.empty:
        return []
    explainer = load_explainer(run)
    explained = []
    for row in rows.itertuples(index=False):
        facts = {"path": str(row.path), "true": str(row.true), "predicted": str(row.predicted),
                 "confidence": float(row.confidence)}
        try:
            predicted_map, original = explain_file(explainer, row.path, str(row.predicted),
                                                   max_side)
            true_map = explainer.explain(predicted_map.image, str(row.true))
        except ExplainError as exc:
            explained.append(ExplainedMistake(**facts, error=str(exc)))
            continue
        explained.append(ExplainedMistake(**facts, predicted_map=predicted_map,
                                          true_map=true_map, original=original))
    return explained
