"""Block activations: the base cut at a block boundary, and its cached float16 tensors.

Training the top blocks of a base needs, per photo and view, the tensor that enters them.
The bottom of the base is frozen, so that tensor is computed once and cached on disk, like
the pooled vectors of core.features.cache:
<home>/cache/activations/<fingerprint>-d<decoder version>/<boundary>/<view>/<sha[:2]>/<sha>.npy,
one float16 array per photo, keyed by base, weights, input size (all in the fingerprint),
decoder, boundary layer, view and the photo's content hash. A run holds the tensors of its
photos in memory as float16 within ACTIVATION_BUDGET_BYTES; a dataset that does not fit is
refused before any work with a message saying what to change.

No module-level state.
"""

from __future__ import annotations

import io
import logging
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from core import files
from core.errors import ConfigError
from core.features import backbones, extraction
from core.features import cache as feature_cache
from core.features.backbones import BackboneSpec

log = logging.getLogger(__name__)

# 3 GiB of float16 tensors at most in one run: with the model, TensorFlow and the photos
# being decoded, a run stays under about 4 GB of RAM (20,000 photos at MobileNetV2's 7x7x160
# boundary with 2 augmented views of 70% of them take 0.70 GiB).
ACTIVATION_BUDGET_BYTES = 3 * 2**30
BUDGET_ENV_VAR = "TL_STUDIO_ACTIVATION_BUDGET_MB"  # overrides the budget (tests, big hosts)
STORED_DTYPE = np.float16
# A layer name's block: "block_16" of block_16_expand, "block6a" of EfficientNet's
# block6a_project_conv, "conv5_block3" of ResNet's conv5_block3_out, "expanded_conv_14" of
# MobileNetV3. Layers of no block (Conv_1, top_conv, the pooling) join the run before them.
_BLOCK_RE = re.compile(r"^(.*?(?:block_?|expanded_conv_)\d+[a-z]?)(?=_|$)")


class ActivationBudgetError(ConfigError):
    """The activations of a dataset would not fit the memory budget."""


# --------------------------------------------------------------------------- the graph


def _inbound_layers(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    found = []
    for node in getattr(layer, "_inbound_nodes", []):
        for tensor in node.input_tensors:
            history = getattr(tensor, "_keras_history", None)
            if history is not None:
                found.append(history[0])
    return found


def block_groups(app: keras.Model) -> list[tuple[str, list[str]]]:
    """The base's layers (topological order) grouped in blocks by name, bottom to top."""
    groups: list[tuple[str, list[str]]] = []
    for layer in app.layers:
        match = _BLOCK_RE.match(layer.name)
        key = match.group(1) if match else None
        if groups and (key is None or key == groups[-1][0]):
            groups[-1][1].append(layer.name)
        else:
            groups.append((key or layer.name, [layer.name]))
    return groups


def block_cuts(app: keras.Model) -> list[str]:
    """Layers at the end of a block whose output is the only tensor later layers read.

    Bottom to top; cutting the base there splits it into a bottom whose output can be cached
    and a top that needs nothing else from the bottom (no skip connection crosses the cut).
    A base whose layer names show no blocks (Inception's mixed5, NASNet's normal_concat_5)
    is cut after its merge layers (Add, Concatenate) instead.
    """
    index = {id(layer): i for i, layer in enumerate(app.layers)}
    # lowest[i]: the lowest layer index any layer from i on reads.
    lowest = [len(app.layers)] * (len(app.layers) + 1)
    for i in range(len(app.layers) - 1, -1, -1):
        reads = [index[id(src)] for src in _inbound_layers(app.layers[i]) if id(src) in index]
        lowest[i] = min([lowest[i + 1], *reads])
    def valid(i: int) -> bool:
        return 0 < i < len(app.layers) - 1 and lowest[i + 1] >= i

    groups = block_groups(app)
    if len(groups) > 2:
        return [names[-1] for _, names in groups[:-1]
                if valid(index[id(app.get_layer(names[-1]))])]
    merges = (keras.layers.Add, keras.layers.Concatenate)
    return [layer.name for i, layer in enumerate(app.layers)
            if isinstance(layer, merges) and valid(i)]


def boundary_layer(app: keras.Model, top_blocks: int) -> str:
    """The cut below the top `top_blocks` blocks (block_cuts counted from the top).

    Raises:
        ConfigError: The base has fewer blocks than asked for.
    """
    cuts = block_cuts(app)
    if top_blocks < 1 or top_blocks > len(cuts):
        raise ConfigError(f"This base can train between 1 and {len(cuts)} top blocks on cached "
                          f"activations; got {top_blocks}.")
    return cuts[-top_blocks]


def split_base(base: keras.Model, boundary: str) -> tuple[keras.Model, keras.Model]:
    """(bottom, top) of build_base's model, cut after the layer `boundary`.

    bottom: raw RGB 0..255 -> the boundary tensor, flattened (one vector per photo, the
    shape FeatureExtractor and the caches work with). top: the boundary tensor (unflattened)
    -> pooled features. Both share the base's layers: training the top trains the base.
    """
    app = backbones.nested_base(base)
    cut = app.get_layer(boundary).output
    try:
        inner_bottom = keras.Model(app.inputs, cut, name=f"bottom_{boundary}")
        top = keras.Model(cut, app.outputs, name=f"top_{boundary}")
    except ValueError as exc:  # a graph Keras cannot split there (ConvNeXt's nested stages)
        raise ConfigError(
            f"{app.name} cannot be cut at {boundary} to train its top blocks on cached "
            f"activations ({exc}). Set the top blocks to 0, fine-tune layers instead, or "
            "choose another base.") from exc
    # The preprocessing layers of build_base's model lead to the nested network.
    inputs = keras.Input(base.inputs[0].shape[1:], dtype="float32", name="image")
    x = inputs
    for layer in base.layers[1:]:
        if layer is app:
            break
        x = layer(x)
    x = inner_bottom(x, training=False)
    flat = keras.layers.Flatten(name="activation_vector")(x)
    return keras.Model(inputs, flat, name="bottom"), top


def activation_shape(base: keras.Model, boundary: str) -> tuple[int, ...]:
    """Shape of one photo's tensor at the boundary (without the batch axis)."""
    shape = backbones.nested_base(base).get_layer(boundary).output.shape[1:]
    return tuple(int(d) for d in shape)


def fingerprint_at(fingerprint: str, boundary: str) -> str:
    """The fingerprint of the base's bottom up to the boundary (the TFLite file's name)."""
    return f"{fingerprint}-cut-{re.sub(r'[^A-Za-z0-9_.]', '_', boundary)}"


# --------------------------------------------------------------------------- the budget


def budget_bytes() -> int:
    """ACTIVATION_BUDGET_BYTES, or $TL_STUDIO_ACTIVATION_BUDGET_MB when set."""
    override = os.environ.get(BUDGET_ENV_VAR)
    return int(float(override) * 2**20) if override else ACTIVATION_BUDGET_BYTES


def check_budget(tensors: int, shape: Sequence[int], *, top_blocks: int) -> int:
    """Bytes the tensors take in memory; raises when they exceed the budget.

    Args:
        tensors: (photo, view) pairs the run holds.
        shape: One tensor's shape.
        top_blocks: For the message.

    Raises:
        ActivationBudgetError: Over budget, with what to change.
    """
    per_photo = int(np.prod(shape)) * np.dtype(STORED_DTYPE).itemsize
    need = tensors * per_photo
    limit = budget_bytes()
    if need > limit:
        raise ActivationBudgetError(
            f"Training {top_blocks} top block(s) on cached activations would hold {tensors:,} "
            f"tensors of {per_photo / 1024:.0f} KB ({need / 2**30:.2f} GiB), more than the "
            f"{limit / 2**30:.2f} GiB memory budget. Use fewer augmented views or fewer "
            "photos, fewer top blocks (0: frozen head only), or fine-tune layers instead; a "
            f"host with more memory can raise the budget with {BUDGET_ENV_VAR}.")
    return need


# --------------------------------------------------------------------------- the cache


def cache_root(home: str | Path, fingerprint: str, boundary: str) -> Path:
    """<home>/cache/activations/<fingerprint>-d<decoder>/<boundary>: one cut's tensors."""
    from core.data import images  # lazy: images loads TensorFlow

    return (Path(home) / "cache" / "activations" / f"{fingerprint}-d{images.DECODER_VERSION}"
            / boundary)


class ActivationCache:
    """The cached float16 tensors (flattened) of one base cut, per view; disk only.

    Duck-types core.features.cache.FeatureCache (get, put) so extraction's cache pass and
    batched inference serve both.
    """

    def __init__(self, home: str | Path, fingerprint: str, boundary: str, dim: int,
                 views: Sequence[int]) -> None:
        self.root = cache_root(home, fingerprint, boundary)
        self.dim = int(dim)
        self._folders = {v: self.root / str(v) for v in views}
        buffer = io.BytesIO()
        np.save(buffer, np.zeros(self.dim, STORED_DTYPE), allow_pickle=False)
        self._header = buffer.getvalue()[: -self.dim * 2]
        self._made: set[Path] = set()

    def get(self, view: int, sha: str) -> np.ndarray | None:
        """The tensor of (view, photo) as float16, None when not cached (or unreadable)."""
        path = feature_cache.vector_file(self._folders[view], sha)
        try:
            data = path.read_bytes()
        except OSError:
            return None
        if len(data) != len(self._header) + 2 * self.dim or not data.startswith(self._header):
            log.warning("Ignoring unreadable cached activations %s", path)
            return None
        return np.frombuffer(data, STORED_DTYPE, offset=len(self._header))

    def put(self, view: int, sha: str, vector: np.ndarray) -> None:
        """Caches the tensor of (view, photo) as float16, atomically."""
        path = feature_cache.vector_file(self._folders[view], sha)
        if path.parent not in self._made:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._made.add(path.parent)
        data = self._header + np.ascontiguousarray(vector, STORED_DTYPE).tobytes()
        files.write_bytes_atomic(path, data, durable=False)


# --------------------------------------------------------------------------- extraction


def make_extractor(spec: BackboneSpec, base: keras.Model, fingerprint: str, boundary: str,
                   *, home: str | Path, prefer_tflite: bool = True,
                   should_stop: Callable[[], bool] | None = None,
                   ) -> extraction.FeatureExtractor:
    """A FeatureExtractor of the bottom (flattened boundary tensors), backend chosen lazily.

    The bottom goes through TFLite/XNNPACK when its outputs match Keras' (as for pooled
    features, its own .tflite file named by fingerprint_at), else Keras.
    """
    bottom, _ = split_base(base, boundary)
    cut_fingerprint = fingerprint_at(fingerprint, boundary)
    dim = int(bottom.output_shape[-1])

    def choose() -> tuple[str, str, list[Any]]:
        if not prefer_tflite:
            return "keras", "Keras (TFLite not requested)", []
        interpreters, reason = extraction.verified_interpreters(
            spec, cut_fingerprint, bottom, home, should_stop)
        if interpreters is None:
            log.warning("Activations of %s fall back to Keras: %s", spec.name, reason)
            return "keras", f"Keras, because {reason}", []
        return "tflite", reason, interpreters

    return extraction.FeatureExtractor(
        spec, cut_fingerprint, "pending", dim, "chosen when the first image needs the base",
        keras_model=bottom, choose_backend=choose)


@dataclass(frozen=True)
class ActivationStats:
    """Hits and misses (photo, view pairs) and wall time of one extract_activations call."""

    hits: int
    misses: int
    seconds: float


def extract_activations(
    extractor: extraction.FeatureExtractor, fingerprint: str, boundary: str,
    paths: Sequence[str | Path], sha256s: Sequence[str], *, home: str | Path,
    views: Sequence[int] = (0,), batch_size: int = 32,
    on_progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[np.ndarray, ActivationStats]:
    """Boundary tensors of every photo in every view, from the cache or by running the bottom.

    Args:
        extractor: From make_extractor (its feature_dim is the flattened tensor's size).
        fingerprint: The base's weights fingerprint (ResolvedWeights.fingerprint).
        boundary: The cut layer.
        paths, sha256s: Photos and their content hashes.
        home: Studio home.
        views: 0 for the photo, k > 0 for augmented copy k (as extraction.extract_views).
        batch_size, on_progress, should_stop: As extraction.extract_views.

    Returns:
        (float16 [len(views), N, dim], ActivationStats).

    Raises:
        Cancelled: should_stop() turned True (what was computed is cached).
    """
    started = time.monotonic()
    paths = [Path(p) for p in paths]
    shas = [str(s) for s in sha256s]
    views = [int(v) for v in views]
    extraction._check_arguments(paths, shas, views, batch_size)
    cache = ActivationCache(home, fingerprint, boundary, extractor.feature_dim, views)
    out = np.empty((len(views), len(paths), extractor.feature_dim), STORED_DTYPE)
    wanted = extraction._read_cached(cache, shas, views, out)
    total = len(paths) * len(views)
    misses = sum(len(ks) for ks in wanted.values())
    if on_progress:
        on_progress(total - misses, total)
    if misses:
        extraction._compute_missing(
            extractor, cache, paths, shas, views, wanted, out, batch_size=int(batch_size),
            done=total - misses, total=total, on_progress=on_progress,
            should_stop=should_stop or (lambda: False))
    return out, ActivationStats(total - misses, misses, time.monotonic() - started)
