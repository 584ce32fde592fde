"""Frozen-base feature extraction (TFLite/XNNPACK on CPU, Keras otherwise) with an on-disk cache."""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import re
import shutil
import threading
import time
import uuid
import warnings
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from core import backbones, device
from core.backbones import BackboneSpec, ResolvedWeights
from core.errors import Cancelled, ConfigError, ImageError

log = logging.getLogger(__name__)

# TFLite must match Keras within this fraction of the feature scale (max |feature|).
TFLITE_TOLERANCE = 1e-4
_SHA_RE = re.compile(r"^[0-9a-fA-F]{8,128}$")


@dataclass(frozen=True)
class ExtractStats:
    """What one extract() call did.

    Attributes:
        hits: Images whose features came from the cache.
        misses: Images run through the base (then cached).
        seconds: Wall time of the call.
    """

    hits: int
    misses: int
    seconds: float

    @property
    def images_per_second(self) -> float:
        """Images handled per second, cache hits included."""
        return (self.hits + self.misses) / self.seconds if self.seconds > 0 else 0.0


class FeatureExtractor:
    """Runs a frozen base on batches of raw RGB images.

    Attributes:
        spec: The base.
        fingerprint: Base + weights + input size; names the feature cache folder.
        backend: "tflite" (XNNPACK on CPU; a batch is split over a few interpreters run in
            parallel threads) or "keras"; "pending" while a deferred choice (make_extractor's
            defer_backend) has not been needed yet.
        feature_dim: Length of one feature vector.
        input_size: Square image size the base takes.
        reason: Why this backend was chosen, for logs and the run record.
    """

    def __init__(self, spec: BackboneSpec, fingerprint: str, backend: str, feature_dim: int,
                 reason: str, *, keras_model: keras.Model | None = None,
                 interpreters: Sequence[Any] = (),
                 choose_backend: Callable[[], tuple[str, str, list[Any]]] | None = None) -> None:
        self.spec = spec
        self.fingerprint = fingerprint
        self.backend = backend
        self.feature_dim = int(feature_dim)
        self.input_size = spec.input_size
        self.reason = reason
        self._model = keras_model
        self._use_interpreters(interpreters)
        self._choose_backend = choose_backend
        self._choose_lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def _use_interpreters(self, interpreters: Sequence[Any]) -> None:
        # Each interpreter serves one thread at a time (they are not thread-safe).
        self._slots: list[tuple[Any, threading.Lock, int, int]] = [
            (it, threading.Lock(), it.get_input_details()[0]["index"],
             it.get_output_details()[0]["index"]) for it in interpreters]

    def ensure_backend(self) -> None:
        """Makes a deferred backend choice now (TFLite conversion, loading and check)."""
        with self._choose_lock:
            if self._choose_backend is None:
                return
            self.backend, self.reason, interpreters = self._choose_backend()
            self._use_interpreters(interpreters)
            self._choose_backend = None

    @property
    def keras_model(self) -> keras.Model | None:
        """The frozen Keras base (raw RGB in, pooled features out) the features come from."""
        return self._model

    def __repr__(self) -> str:
        return (f"FeatureExtractor({self.spec.name}, backend={self.backend}, "
                f"dim={self.feature_dim}, fingerprint={self.fingerprint})")

    def extract_batch(self, images: np.ndarray) -> np.ndarray:
        """Features of a batch.

        Args:
            images: [B, S, S, 3] RGB, uint8 or float with values 0..255.

        Returns:
            float32 [B, feature_dim].
        """
        batch = np.asarray(images)
        size = self.input_size
        if batch.ndim != 4 or batch.shape[1:] != (size, size, 3):
            raise ConfigError(
                f"Images for {self.spec.name} must be shaped [batch, {size}, {size}, 3]; got "
                f"{list(batch.shape)}. Resize them with core.images.load_resized."
            )
        batch = batch.astype(np.float32, copy=False)
        if len(batch) == 0:
            return np.zeros((0, self.feature_dim), np.float32)
        self.ensure_backend()
        if self.backend == "tflite":
            return self._run_tflite(batch)
        # predict (not predict_on_batch) splits the batch over replicas under MirroredStrategy.
        out = self._model.predict(batch, batch_size=len(batch), verbose=0)
        return np.asarray(out, dtype=np.float32)

    def _run_tflite(self, batch: np.ndarray) -> np.ndarray:
        out = np.empty((len(batch), self.feature_dim), np.float32)
        chunks = [c for c in np.array_split(np.arange(len(batch)), len(self._slots)) if len(c)]
        if len(chunks) == 1:
            self._run_chunk(self._slots[0], batch, chunks[0], out)
            return out
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(len(self._slots), thread_name_prefix="tl-tflite")
        futures = [self._pool.submit(self._run_chunk, slot, batch, chunk, out)
                   for slot, chunk in zip(self._slots, chunks)]
        for future in futures:
            future.result()
        return out

    @staticmethod
    def _run_chunk(slot: tuple[Any, threading.Lock, int, int], batch: np.ndarray,
                   rows: np.ndarray, out: np.ndarray) -> None:
        # One image per invoke with a fixed [1,S,S,3] input: measured faster than resizing
        # the input tensor to the batch (68 ms vs 84 ms for 32 MobileNetV2 images).
        interpreter, lock, in_index, out_index = slot
        with lock:
            for i in rows:
                interpreter.set_tensor(in_index, batch[i:i + 1])
                interpreter.invoke()
                out[i] = interpreter.get_tensor(out_index)[0]


# --------------------------------------------------------------------------- building


def _probe_images(size: int) -> np.ndarray:
    """A small deterministic batch: noise, a smooth gradient and a flat grey image."""
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (size, size, 3))
    yy, xx = np.mgrid[0:size, 0:size]
    gradient = np.stack([xx * 255 / max(size - 1, 1), yy * 255 / max(size - 1, 1),
                         np.full_like(xx, 128)], axis=-1)
    grey = np.full((size, size, 3), 120)
    return np.stack([noise, gradient, grey]).astype(np.float32)


def _convert_to_tflite(model: keras.Model, target: Path) -> None:
    """Converts the Keras base to a float32 TFLite file, written atomically."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.stem}.{uuid.uuid4().hex}.tmp.tflite")
    size = model.input_shape[1]
    signature = tf.TensorSpec([None, size, size, 3], tf.float32)
    try:
        try:
            function = tf.function(lambda x: model(x, training=False)).get_concrete_function(
                signature)
            converter = tf.lite.TFLiteConverter.from_concrete_functions([function], model)
            # Convert the traced graph directly. By default the converter first writes a
            # SavedModel: 6 of the 7 s it took for MobileNetV2, against 1.2 s this way.
            converter.experimental_lower_to_saved_model = False
            tmp.write_bytes(converter.convert())
        except Exception as exc:  # noqa: BLE001 - the slower standard path may still work
            log.info("Direct TFLite conversion failed (%s: %s); trying model.export",
                     type(exc).__name__, exc)
            model.export(str(tmp), format="litert", verbose=False, input_signature=[signature])
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _interpreters(path: Path) -> list[Any]:
    """Interpreters for parallel use: up to 4, sharing the cores between them.

    On the 2-core dev machine two single-threaded interpreters, each running half of a batch,
    beat one interpreter with two threads (128 MobileNetV2 images: 0.42 s vs 0.60 s; one
    thread alone 0.47 s): small models scale poorly across threads within one image.
    """
    cores = os.cpu_count() or 1
    count = min(cores, 4)
    interpreters = []
    with warnings.catch_warnings():
        # tf.lite.Interpreter warns it will move to ai_edge_litert; it works in TF 2.21.
        warnings.simplefilter("ignore")
        for _ in range(count):
            # XNNPACK is TFLite's default delegate for float models on CPU.
            interpreter = tf.lite.Interpreter(model_path=str(path),
                                              num_threads=max(1, cores // count))
            interpreter.allocate_tensors()
            interpreters.append(interpreter)
    return interpreters


def _try_tflite(spec: BackboneSpec, fingerprint: str, model: keras.Model, home: Path
                ) -> tuple[list[Any] | None, str]:
    """Interpreters whose features match the Keras model's, or (None, reason)."""
    path = Path(home) / "cache" / "tflite" / f"{fingerprint}.tflite"
    if not path.is_file():
        started = time.monotonic()
        try:
            _convert_to_tflite(model, path)
        except Exception as exc:  # noqa: BLE001 - any conversion failure means: use Keras
            return None, f"TFLite conversion failed ({type(exc).__name__}: {exc})"
        log.info("Converted %s to TFLite in %.1f s: %s", spec.name,
                 time.monotonic() - started, path)
    try:
        interpreters = _interpreters(path)
    except Exception as exc:  # noqa: BLE001 - a broken cached file: convert again next time
        path.unlink(missing_ok=True)
        return None, f"the TFLite model could not be loaded ({type(exc).__name__}: {exc})"
    probe = _probe_images(spec.input_size)
    want = np.asarray(model(probe, training=False), np.float32)
    candidate = FeatureExtractor(spec, fingerprint, "tflite", want.shape[-1], "",
                                 interpreters=interpreters)
    got = candidate.extract_batch(probe)
    scale = float(np.abs(want).max())
    diff = float(np.abs(got - want).max()) if got.shape == want.shape else float("inf")
    if not np.isfinite(diff) or diff > TFLITE_TOLERANCE * max(scale, 1e-30):
        return None, (f"TFLite features differ from Keras by {diff:.3g} (feature scale "
                      f"{scale:.3g}, limit {TFLITE_TOLERANCE:g} of it)")
    return interpreters, (f"TFLite with XNNPACK on CPU ({len(interpreters)} interpreters); "
                          f"matches Keras within {diff / max(scale, 1e-30):.1e} of the feature "
                          "scale")


_BASES_KEPT = 2
_bases: OrderedDict[str, keras.Model] = OrderedDict()
_bases_lock = threading.Lock()


def _frozen_base(spec: BackboneSpec, resolved: ResolvedWeights) -> keras.Model:
    """The frozen Keras base, built once per process for the last few fingerprints.

    A second training on the same base (the app's usual case) skips rebuilding it and loading
    its weights. Sharing is safe because a frozen base is never changed: fine-tuning builds
    its own.
    """
    key = resolved.fingerprint
    with _bases_lock:
        if key in _bases:
            _bases.move_to_end(key)
            return _bases[key]
    model = backbones.build_base(spec, resolved)
    with _bases_lock:
        _bases[key] = model
        while len(_bases) > _BASES_KEPT:
            _bases.popitem(last=False)
    return model


def forget_built_bases() -> None:
    """Drops the frozen bases kept in this process (their memory returns on next collection)."""
    with _bases_lock:
        _bases.clear()


def make_extractor(spec: BackboneSpec, resolved: ResolvedWeights, *, home: str | Path,
                   prefer_tflite: bool = True, device_info: device.DeviceInfo | None = None,
                   strategy: tf.distribute.Strategy | None = None,
                   defer_backend: bool = False) -> FeatureExtractor:
    """Builds the frozen base and picks the fastest faithful way to run it.

    On CPU the base is converted once per fingerprint to a float32 TFLite model cached at
    <home>/cache/tflite/<fingerprint>.tflite and run through XNNPACK, after checking on a small
    deterministic batch that its features match Keras' (max abs difference under 1e-4 of the
    feature scale); on any failure, or on GPU, Keras runs it (the reason is logged and kept in
    .reason). With several GPUs the Keras model is built under MirroredStrategy.

    Args:
        spec: The base.
        resolved: Its weights (resolve_weights).
        home: Studio home holding the caches.
        prefer_tflite: Try TFLite on CPU.
        device_info: From device.detect(); detected when None.
        strategy: Build the Keras model under this strategy (e.g. a MirroredStrategy over
            split CPU devices in tests); chosen from the devices when None.
        defer_backend: Choose the backend (and convert, load and check a TFLite model) only
            when the first batch needs it, so a run whose features are all cached skips it.

    Raises:
        WeightsUnavailableError: The weights do not fit the base.
    """
    info = device_info or device.detect()
    if strategy is None and info.kind == "gpu" and len(info.gpus) > 1:
        strategy = device.distribution_strategy(info)
    fingerprint = resolved.fingerprint
    if strategy is not None:
        with strategy.scope():
            model = backbones.build_base(spec, resolved)
    else:
        model = _frozen_base(spec, resolved)
    feature_dim = int(model.output_shape[-1])

    def choose() -> tuple[str, str, list[Any]]:
        if not prefer_tflite:
            return "keras", "Keras (TFLite not requested)", []
        if info.kind == "gpu":
            return "keras", "Keras on GPU", []
        if strategy is not None:
            return "keras", "Keras under a distribution strategy", []
        interpreters, reason = _try_tflite(spec, fingerprint, model, Path(home))
        if interpreters is not None:
            log.info("Features of %s: %s", spec.name, reason)
            return "tflite", reason, interpreters
        log.warning("Features of %s fall back to Keras: %s", spec.name, reason)
        return "keras", f"Keras, because {reason}", []

    if defer_backend:
        return FeatureExtractor(spec, fingerprint, "pending", feature_dim,
                                "chosen when the first image needs the base",
                                keras_model=model, choose_backend=choose)
    backend, reason, interpreters = choose()
    return FeatureExtractor(spec, fingerprint, backend, feature_dim, reason, keras_model=model,
                            interpreters=interpreters)


# --------------------------------------------------------------------------- augmentation


def make_augmenter(seed: int) -> keras.Sequential:
    """Random flip, rotation, zoom and contrast as Keras preprocessing layers.

    Works on RGB values 0..255 and is active only when called with training=True, so it is
    never applied to validation or test images. Seeded for reproducible training.
    """
    seed = int(seed)
    return keras.Sequential([
        keras.layers.RandomFlip("horizontal", seed=seed),
        keras.layers.RandomRotation(0.1, fill_mode="reflect", seed=seed + 1),
        keras.layers.RandomZoom(0.1, fill_mode="reflect", seed=seed + 2),
        keras.layers.RandomContrast(0.1, value_range=(0, 255), seed=seed + 3),
    ], name="augmentation")


def _view_seed(sha: str, view: int) -> int:
    digest = hashlib.sha256(f"{sha.lower()}:{view}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x3FFFFFFF


class _ViewMaker:
    """make_augmenter's layers compiled for one S×S image, seeded per call.

    Eager Keras layers cost 12.7 ms per image on the dev CPU, almost all of it dispatch; the
    compiled function costs 3.6 ms for the same pixels.
    """

    def __init__(self, size: int) -> None:
        self._layers = make_augmenter(0).layers
        # Layers take an int or a SeedGenerator as seed, not a tensor. A generator whose state
        # is set to [seed, 0] draws what the int seed would, without retracing per seed.
        self._seeds = [keras.random.SeedGenerator(0) for _ in self._layers]
        # No autograph: the loop is over Python layers, and autograph's rewrite of the layers'
        # code failed in the app tests (a TypeError in its generated code).
        self._augment = tf.function(self._augment_one, autograph=False, input_signature=[
            tf.TensorSpec([size, size, 3], tf.float32), tf.TensorSpec([], tf.int64)])

    def _augment_one(self, image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        x = image[None]
        for i, (layer, generator) in enumerate(zip(self._layers, self._seeds)):
            state = tf.stack([seed + 7919 * i, tf.constant(0, tf.int64)])
            generator.state.assign(tf.cast(state, generator.state.dtype))
            transform = layer.get_random_transformation(x, training=True, seed=generator)
            x = layer.transform_images(x, transform, training=True)
        return tf.clip_by_value(x[0], 0.0, 255.0)

    def __call__(self, image: np.ndarray, seed: int) -> np.ndarray:
        return self._augment(np.asarray(image, np.float32), np.int64(seed)).numpy()


# Compiled view makers by image size, reused across calls and threads (one user at a time:
# their seed variables are per maker).
_view_makers: dict[int, list[_ViewMaker]] = {}
_view_makers_lock = threading.Lock()


def augment_view(image: np.ndarray, sha: str, view: int) -> np.ndarray:
    """Augmented copy `view` (>= 1) of one S×S RGB image, float32 0..255.

    make_augmenter's flip, rotation, zoom and contrast, each drawing its random transformation
    from a seed derived from the image hash and the view number: the same (sha, view) always
    gives the same pixels, whatever the batch or call order.
    """
    image = np.asarray(image)
    size = int(image.shape[0])
    with _view_makers_lock:
        free = _view_makers.setdefault(size, [])
        maker = free.pop() if free else None
    if maker is None:
        maker = _ViewMaker(size)
    try:
        return maker(image, _view_seed(sha, view))
    finally:
        with _view_makers_lock:
            _view_makers[size].append(maker)


# --------------------------------------------------------------------------- extraction


class _RecentVectors:
    """The cached vectors this process read or wrote last, kept in memory up to a byte budget.

    A second run on the same photos then opens no files: reading 1,500 took 0.06-0.1 s of a
    1.5 s second run on the dev machine. A cache file never changes once written (its path
    names the base, the decoder, the view and the photo's content), so a kept vector is always
    what the file holds.
    """

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self._vectors: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, folder: str, sha: str) -> np.ndarray | None:
        key = (folder, sha.lower())
        with self._lock:
            vector = self._vectors.get(key)
            if vector is not None:
                self._vectors.move_to_end(key)
            return vector

    def put(self, folder: str, sha: str, vector: np.ndarray) -> None:
        vector = np.array(vector, np.float32)  # a copy the caller cannot change
        vector.flags.writeable = False
        key = (folder, sha.lower())
        with self._lock:
            old = self._vectors.pop(key, None)
            self._bytes += vector.nbytes - (old.nbytes if old is not None else 0)
            self._vectors[key] = vector
            while self._bytes > self.budget_bytes and self._vectors:
                _, dropped = self._vectors.popitem(last=False)
                self._bytes -= dropped.nbytes

    def clear(self) -> None:
        with self._lock:
            self._vectors.clear()
            self._bytes = 0


# 128 MB: the features of 25,000 photos for a 1,280-wide base.
_recent_vectors = _RecentVectors(128 * 2**20)


def forget_recent_features() -> None:
    """Drops the feature vectors kept in memory: the next read goes to the disk cache."""
    _recent_vectors.clear()


def _cache_file(folder: Path, sha: str) -> Path:
    sha = sha.lower()
    return folder / sha[:2] / f"{sha}.npy"


def _npy_header(dim: int) -> bytes:
    """The exact .npy header _write_cached produces for a float32 vector of length dim."""
    buffer = io.BytesIO()
    np.save(buffer, np.zeros(dim, np.float32), allow_pickle=False)
    return buffer.getvalue()[: -dim * 4]


def _read_cached(path: Path, dim: int, header: bytes | None = None) -> np.ndarray | None:
    if header is not None:
        # Fast path: our own files have a known header, and np.load's header parsing costs
        # 20x more than the read (0.7 s for 3,600 vectors); anything else goes to np.load.
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError:
            data = b""
        if len(data) == len(header) + 4 * dim and data.startswith(header):
            return np.frombuffer(data, np.float32, offset=len(header))
    try:
        arr = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("Ignoring unreadable cached features %s: %s", path, exc)
        return None
    if arr.shape != (dim,) or arr.dtype != np.float32:
        log.warning("Ignoring cached features %s of shape %s", path, arr.shape)
        return None
    return arr


def _write_cached(path: Path, vector: np.ndarray, header: bytes | None = None,
                  made: set[Path] | None = None) -> None:
    """Writes one vector as .npy atomically (temp file, then rename).

    header: _npy_header(len(vector)), which spares np.save's header building; made: folders
    already created by this caller, which spares a mkdir per file. Both matter at thousands of
    vectors per run.
    """
    folder = path.parent
    if made is None or folder not in made:
        folder.mkdir(parents=True, exist_ok=True)
        if made is not None:
            made.add(folder)
    vector = np.ascontiguousarray(vector, np.float32)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as fh:
            if header is not None:
                fh.write(header)
                fh.write(vector.tobytes())
            else:
                np.save(fh, vector, allow_pickle=False)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def extract(
    extractor: FeatureExtractor,
    paths: Sequence[str | Path],
    sha256s: Sequence[str],
    *,
    home: str | Path,
    view: int = 0,
    batch_size: int = 32,
    on_progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[np.ndarray, ExtractStats]:
    """Features of every image for one view: extract_views with views=(view,).

    Returns:
        (features float32 [N, feature_dim] in the order of paths, ExtractStats).
    """
    matrices, stats = extract_views(
        extractor, paths, sha256s, home=home, views=(view,), batch_size=batch_size,
        on_progress=on_progress, should_stop=should_stop,
    )
    return matrices[0], stats


def feature_cache_root(home: Path, extractor: FeatureExtractor) -> Path:
    """<home>/cache/features/<fingerprint>-d<decoder version>: the extractor's cached features.

    The decoder's version is in the name because the same photo decoded another way gives
    other pixels, so features cached before a decoding change must not be reused.
    """
    from core import images  # lazy, as in extract_views

    return (Path(home) / "cache" / "features"
            / f"{extractor.fingerprint}-d{images.DECODER_VERSION}")


def remove_stale_caches(home: Path, extractor: FeatureExtractor) -> list[Path]:
    """Deletes the extractor's feature caches from earlier decoder versions.

    No version of the code reads them again (feature_cache_root names the current one), so
    they would only fill the disk: about 5 KB per photo and view for a 1,280-wide base.

    Returns:
        The folders removed.
    """
    root = feature_cache_root(home, extractor)
    stale = re.compile(rf"{re.escape(extractor.fingerprint)}(-d\d+)?")
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for folder in root.parent.iterdir():
            if folder != root and folder.is_dir() and stale.fullmatch(folder.name):
                shutil.rmtree(folder, ignore_errors=True)
                log.info("Removed features cached by an earlier decoder: %s", folder)
                removed.append(folder)
    return removed


def extract_views(
    extractor: FeatureExtractor,
    paths: Sequence[str | Path],
    sha256s: Sequence[str],
    *,
    home: str | Path,
    views: Sequence[int] = (0,),
    batch_size: int = 32,
    on_progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[np.ndarray, ExtractStats]:
    """Features of every image in every view, from the cache or by running the base.

    Cache: feature_cache_root(home, extractor)/<view>/<sha[:2]>/<sha>.npy, one float32 vector
    per image and view, written atomically; the vectors read or computed last are also kept in
    memory (up to 128 MB), so a repeated call opens no files. Each image is decoded once for
    all its missing views. Decoding (core.images.load_resized) and augmentation run in a thread
    pool a bounded window ahead of inference, so memory holds the output plus a few batches of
    images, however many images there are.

    Args:
        extractor: From make_extractor.
        paths: Image files.
        sha256s: Content hash of each image (the dataset index's sha256 column).
        home: Studio home.
        views: 0 for the image itself; k > 0 for augmented copy k (make_augmenter's layers,
            deterministic per (sha, k)).
        batch_size: Images per inference batch (and per progress report / cancel check).
        on_progress: Called as on_progress(done, total) after the cache pass and every batch,
            counting (image, view) pairs.
        should_stop: Polled before every batch; True raises core.errors.Cancelled.

    Returns:
        (features float32 [len(views), N, feature_dim] in the order of views and paths,
        ExtractStats counting (image, view) pairs).

    Raises:
        Cancelled: should_stop() returned True (what was computed is cached).
        ConfigError: Mismatched lengths, a malformed hash, bad views or batch size.
        ImageError: An image cannot be decoded.
    """
    from core import images  # lazy: keeps this module importable on its own

    started = time.monotonic()
    paths = [Path(p) for p in paths]
    shas = [str(s) for s in sha256s]
    views = [int(v) for v in views]
    if len(paths) != len(shas):
        raise ConfigError(f"Got {len(paths)} image paths but {len(shas)} hashes; pass one "
                          "sha256 per image (the dataset index's sha256 column).")
    bad = next((s for s in shas if not _SHA_RE.match(s)), None)
    if bad is not None:
        raise ConfigError(f"{bad!r} is not a content hash; pass the dataset index's sha256 "
                          "column.")
    if not views or min(views) < 0 or len(set(views)) != len(views):
        raise ConfigError("views must be distinct: 0 (the image) or positive augmented "
                          f"copies; got {views}.")
    if int(batch_size) < 1:
        raise ConfigError(f"batch_size must be at least 1; got {batch_size}.")
    should_stop = should_stop or (lambda: False)
    total, dim = len(paths) * len(views), extractor.feature_dim
    root = feature_cache_root(home, extractor)
    if not root.exists():
        remove_stale_caches(home, extractor)
    folders = [root / str(v) for v in views]
    out = np.empty((len(views), len(paths), dim), np.float32)

    header = _npy_header(dim)
    wanted: dict[int, list[int]] = {}  # image -> positions in views still to compute
    folder_keys = [str(folder) for folder in folders]
    for i, sha in enumerate(shas):
        for k, folder in enumerate(folders):
            cached = _recent_vectors.get(folder_keys[k], sha)
            if cached is None:
                cached = _read_cached(_cache_file(folder, sha), dim, header)
                if cached is not None:
                    _recent_vectors.put(folder_keys[k], sha, cached)
            if cached is None:
                wanted.setdefault(i, []).append(k)
            else:
                out[k, i] = cached
    misses = sum(len(ks) for ks in wanted.values())
    hits = total - misses
    if on_progress:
        on_progress(hits, total)
    if not misses:
        return out, ExtractStats(hits, 0, time.monotonic() - started)

    size = extractor.input_size

    def load(i: int) -> list[np.ndarray]:
        try:
            img = images.load_resized(paths[i], size)
        except ImageError as exc:
            raise ImageError(f"{paths[i]}: {exc}") from exc
        return [img if views[k] == 0 else augment_view(img, shas[i], views[k])
                for k in wanted[i]]

    workers = max(1, os.cpu_count() or 1)
    window = max(2 * int(batch_size) // len(views), 2 * workers)  # images decoded ahead
    done = hits
    made: set[Path] = set()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tl-decode")
    pending: deque[tuple[int, Future[list[np.ndarray]]]] = deque()
    todo = iter(wanted)
    ready: deque[tuple[int, int, np.ndarray]] = deque()  # (view position, image, pixels)
    try:
        for i in todo:
            pending.append((i, pool.submit(load, i)))
            if len(pending) >= window:
                break
        while pending or ready:
            if should_stop():
                raise Cancelled()
            while pending and len(ready) < batch_size:
                i, future = pending.popleft()
                ready.extend((k, i, pixels) for k, pixels in zip(wanted[i], future.result()))
                nxt = next(todo, None)
                if nxt is not None:
                    pending.append((nxt, pool.submit(load, nxt)))
            batch = [ready.popleft() for _ in range(min(batch_size, len(ready)))]
            feats = extractor.extract_batch(np.stack([pixels for _, _, pixels in batch]))
            for row, (k, i, _) in enumerate(batch):
                out[k, i] = feats[row]
                _write_cached(_cache_file(folders[k], shas[i]), feats[row], header, made)
                _recent_vectors.put(folder_keys[k], shas[i], feats[row])
            done += len(batch)
            if on_progress:
                on_progress(done, total)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return out, ExtractStats(hits, misses, time.monotonic() - started)
