"""Frozen-base feature extraction: TFLite/XNNPACK on CPU when faithful, Keras otherwise.

Module-level state: the frozen Keras bases built last (the last 2 fingerprints), so a second
training on the same base skips building it and loading its weights. A frozen base is never
changed (fine-tuning builds its own), so sharing it cannot change a result; tests and long-
lived processes drop them with forget_built_bases(). The cached feature vectors live in
core.features.cache, augmented views in core.features.augmentation.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from core import device
from core.errors import Cancelled, ConfigError, ImageError
from core.features import augmentation, backbones, background_work, tflite
from core.features import cache as feature_cache
from core.features.backbones import BackboneSpec
from core.features.weights import ResolvedWeights

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
                f"{list(batch.shape)}. Resize them with core.data.images.load_resized."
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
        # the input tensor to the batch (docs/benchmarks.md, design choices).
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


def tflite_file(home: str | Path, fingerprint: str) -> Path:
    """<home>/cache/tflite/<fingerprint>.tflite: the converted frozen base."""
    return Path(home) / "cache" / "tflite" / f"{fingerprint}.tflite"


def verified_interpreters(spec: BackboneSpec, fingerprint: str, model: keras.Model,
                          home: str | Path, should_stop: Callable[[], bool] | None = None,
                          ) -> tuple[list[Any] | None, str]:
    """TFLite interpreters of the base whose features match the Keras model's.

    The base is converted once per fingerprint (tflite_file), then checked on a small
    deterministic batch: the largest difference must stay under TFLITE_TOLERANCE of the
    feature scale. With should_stop, a cancel does not wait for the conversion, which
    finishes in the background for the next run (core.features.background_work).

    Returns:
        (interpreters, why they were chosen), or (None, why not) when conversion, loading or
        the check failed.

    Raises:
        Cancelled: should_stop() turned True while the base was being converted.
    """
    path = tflite_file(home, fingerprint)
    if not path.is_file():
        started = time.monotonic()
        try:
            background_work.unless_stopped(f"tflite:{path}", lambda: tflite.convert(model, path),
                                           should_stop)
        except Cancelled:
            raise
        except Exception as exc:
            return None, f"TFLite conversion failed ({type(exc).__name__}: {exc})"
        log.info("Converted %s to TFLite in %.1f s: %s", spec.name,
                 time.monotonic() - started, path)
    try:
        interpreters = tflite.open_interpreters(path)
    except Exception as exc:
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


def _frozen_base(spec: BackboneSpec, resolved: ResolvedWeights,
                 should_stop: Callable[[], bool] | None = None) -> keras.Model:
    """The frozen Keras base, built once per process for the last few fingerprints.

    A second training on the same base (the app's usual case) skips rebuilding it and loading
    its weights. Sharing is safe because a frozen base is never changed: fine-tuning builds
    its own. With should_stop, a cancel does not wait for the weights to load.
    """
    key = resolved.fingerprint
    with _bases_lock:
        if key in _bases:
            _bases.move_to_end(key)
            return _bases[key]

    def build() -> keras.Model:
        model = backbones.build_base(spec, resolved)
        with _bases_lock:
            _bases[key] = model
            while len(_bases) > _BASES_KEPT:
                _bases.popitem(last=False)
        return model

    return background_work.unless_stopped(f"base:{key}", build, should_stop)


def forget_built_bases() -> None:
    """Drops the frozen bases kept in this process (their memory returns on next collection)."""
    with _bases_lock:
        _bases.clear()


def make_extractor(spec: BackboneSpec, resolved: ResolvedWeights, *, home: str | Path,
                   prefer_tflite: bool = True, device_info: device.DeviceInfo | None = None,
                   strategy: tf.distribute.Strategy | None = None,
                   defer_backend: bool = False,
                   should_stop: Callable[[], bool] | None = None) -> FeatureExtractor:
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
        should_stop: Polled while the base is built and converted; True raises Cancelled
            at once (the step finishes in the background for the next run).

    Raises:
        WeightsUnavailableError: The weights do not fit the base.
        Cancelled: should_stop() turned True while the base was built or converted.
    """
    info = device_info or device.detect()
    if strategy is None and info.kind == "gpu" and len(info.gpus) > 1:
        strategy = device.distribution_strategy(info)
    fingerprint = resolved.fingerprint
    if strategy is not None:
        with strategy.scope():
            model = backbones.build_base(spec, resolved)
    else:
        model = _frozen_base(spec, resolved, should_stop)
    feature_dim = int(model.output_shape[-1])

    def choose() -> tuple[str, str, list[Any]]:
        if not prefer_tflite:
            return "keras", "Keras (TFLite not requested)", []
        if info.kind == "gpu":
            return "keras", "Keras on GPU", []
        if strategy is not None:
            return "keras", "Keras under a distribution strategy", []
        interpreters, reason = verified_interpreters(spec, fingerprint, model, home,
                                                     should_stop)
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

    Cache: feature_cache.cache_root(home, extractor.fingerprint)/<view>/<sha[:2]>/<sha>.npy,
    one float32 vector per image and view, written atomically; the vectors read or computed last are also kept in
    memory (up to 128 MB), so a repeated call opens no files. Each image is decoded once for
    all its missing views. Decoding (core.data.images.load_resized) and augmentation run in a thread
    pool a bounded window ahead of inference, so memory holds the output plus a few batches of
    images, however many images there are.

    Args:
        extractor: From make_extractor.
        paths: Image files.
        sha256s: Content hash of each image (the dataset index's sha256 column).
        home: Studio home.
        views: 0 for the image itself; k > 0 for augmented copy k (augmentation.augment_view,
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
    started = time.monotonic()
    paths = [Path(p) for p in paths]
    shas = [str(s) for s in sha256s]
    views = [int(v) for v in views]
    _check_arguments(paths, shas, views, batch_size)
    cache = feature_cache.FeatureCache(home, extractor.fingerprint, extractor.feature_dim,
                                       views)
    out = np.empty((len(views), len(paths), extractor.feature_dim), np.float32)
    wanted = _read_cached(cache, shas, views, out)
    total = len(paths) * len(views)
    misses = sum(len(ks) for ks in wanted.values())
    if on_progress:
        on_progress(total - misses, total)
    if misses:
        _compute_missing(extractor, cache, paths, shas, views, wanted, out,
                         batch_size=int(batch_size), done=total - misses, total=total,
                         on_progress=on_progress, should_stop=should_stop or (lambda: False))
    return out, ExtractStats(total - misses, misses, time.monotonic() - started)


def _check_arguments(paths: list[Path], shas: list[str], views: list[int],
                     batch_size: int) -> None:
    """Raises ConfigError, saying what to pass, for arguments extract_views cannot use."""
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


def _read_cached(cache: feature_cache.FeatureCache, shas: list[str], views: list[int],
                 out: np.ndarray) -> dict[int, list[int]]:
    """Fills out[k, i] from the cache; returns image -> positions in views still missing."""
    wanted: dict[int, list[int]] = {}
    for i, sha in enumerate(shas):
        for k, view in enumerate(views):
            cached = cache.get(view, sha)
            if cached is None:
                wanted.setdefault(i, []).append(k)
            else:
                out[k, i] = cached
    return wanted


def _compute_missing(
    extractor: FeatureExtractor, cache: feature_cache.FeatureCache, paths: list[Path],
    shas: list[str], views: list[int], wanted: dict[int, list[int]], out: np.ndarray, *,
    batch_size: int, done: int, total: int, on_progress: Callable[[int, int], None] | None,
    should_stop: Callable[[], bool],
) -> None:
    """Runs the base on the missing (image, view) pairs, caching each vector.

    Decoding and augmentation run in a thread pool a bounded window of images ahead of
    inference, each image decoded once for all its missing views.
    """
    from core.data import images  # lazy: keeps this module importable on its own

    size = extractor.input_size

    def load(i: int) -> list[np.ndarray]:
        try:
            img = images.load_resized(paths[i], size)
        except ImageError as exc:
            raise ImageError(f"{paths[i]}: {exc}") from exc
        return [img if views[k] == 0 else augmentation.augment_view(img, shas[i], views[k])
                for k in wanted[i]]

    workers = max(1, os.cpu_count() or 1)
    window = max(2 * batch_size // len(views), 2 * workers)  # images decoded ahead
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
                cache.put(views[k], shas[i], feats[row])
            done += len(batch)
            if on_progress:
                on_progress(done, total)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
