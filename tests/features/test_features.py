"""Feature extraction: TFLite vs Keras, the on-disk cache, views, progress, cancel, streaming."""

from __future__ import annotations

import dataclasses
import hashlib
import threading
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import make_class_folders, write_informative_weights

import core.features.tflite
from core.data import images
from core.errors import Cancelled, ConfigError, ImageError
from core.features import backbones
from core.features import cache as feature_cache
from core.features import extraction as features
from core.features import weights as base_weights

SIZE = 64


@pytest.fixture(scope="module")
def spec() -> backbones.BackboneSpec:
    return dataclasses.replace(backbones.get_spec("mobilenet_v2"), input_size=SIZE)


@pytest.fixture(scope="module")
def resolved(spec: backbones.BackboneSpec, tmp_path_factory: pytest.TempPathFactory
             ) -> base_weights.ResolvedWeights:
    folder = tmp_path_factory.mktemp("weights")
    return base_weights.resolve_weights(
        spec, write_informative_weights(spec, folder / "informative.h5", seed=1)
    )


@pytest.fixture(scope="module")
def shared_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One studio home per module, so the base is converted to TFLite once."""
    return tmp_path_factory.mktemp("studio")


@pytest.fixture(scope="module")
def tflite(spec, resolved, shared_home) -> features.FeatureExtractor:
    return features.make_extractor(spec, resolved, home=shared_home)


@pytest.fixture(scope="module")
def keras_ex(spec, resolved, shared_home) -> features.FeatureExtractor:
    return features.make_extractor(spec, resolved, home=shared_home, prefer_tflite=False)


@pytest.fixture
def photos(tmp_path: Path) -> tuple[list[Path], list[str]]:
    root = make_class_folders(tmp_path / "photos", {"a": 6, "b": 5}, size=48)
    paths = sorted(root.rglob("*.png"))
    shas = [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]
    return paths, shas


def _decoded(paths: list[Path]) -> np.ndarray:
    return np.stack([images.load_resized(p, SIZE) for p in paths])


# --------------------------------------------------------------------------- backends


def test_tflite_features_match_keras(tflite, keras_ex, shared_home, photos) -> None:
    assert tflite.backend == "tflite", tflite.reason
    assert keras_ex.backend == "keras"
    assert tflite.fingerprint == keras_ex.fingerprint  # one cache for both backends
    assert (shared_home / "cache" / "tflite" / f"{tflite.fingerprint}.tflite").is_file()
    batch = _decoded(photos[0])
    want = keras_ex.extract_batch(batch)
    got = tflite.extract_batch(batch)
    assert got.dtype == np.float32 and got.shape == (len(batch), tflite.feature_dim)
    scale = float(np.abs(want).max())
    assert scale > 1e-3  # informative weights: a real comparison, not of near-zeros
    assert float(np.abs(got - want).max()) < 1e-4 * scale


def test_converted_model_is_reused(spec, resolved, shared_home, tflite,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    def no_conversion(*_a, **_k):
        raise AssertionError("converted twice")

    monkeypatch.setattr(core.features.tflite, "convert", no_conversion)
    again = features.make_extractor(spec, resolved, home=shared_home)
    assert again.backend == "tflite"


def test_failed_conversion_falls_back_to_keras_with_reason(
    spec, resolved, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_a, **_k):
        raise RuntimeError("unsupported op")

    monkeypatch.setattr(core.features.tflite, "convert", broken)
    ex = features.make_extractor(spec, resolved, home=tmp_path)
    assert ex.backend == "keras"
    assert "conversion failed" in ex.reason and "unsupported op" in ex.reason


def test_conversion_falls_back_to_the_standard_export(
    spec, resolved, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def direct_path_broken(*_a, **_k):
        raise RuntimeError("no direct conversion")

    exports: list[str] = []
    original_export = keras.Model.export

    def recording_export(self, filepath, *args, **kwargs):
        exports.append(kwargs.get("format"))
        return original_export(self, filepath, *args, **kwargs)

    monkeypatch.setattr(tf.lite.TFLiteConverter, "from_concrete_functions", direct_path_broken)
    monkeypatch.setattr(keras.Model, "export", recording_export)
    ex = features.make_extractor(spec, resolved, home=tmp_path)
    assert ex.backend == "tflite", ex.reason
    assert exports == ["litert"]


def test_mismatching_tflite_falls_back_to_keras(
    spec, resolved, shared_home, tflite, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = features.FeatureExtractor._run_tflite

    def off_by_a_bit(self, batch):
        out = original(self, batch)
        return out + 1e-3 * np.abs(out).max()

    monkeypatch.setattr(features.FeatureExtractor, "_run_tflite", off_by_a_bit)
    ex = features.make_extractor(spec, resolved, home=shared_home)
    assert ex.backend == "keras"
    assert "differ" in ex.reason


def test_deferred_backend_is_chosen_only_when_an_image_needs_the_base(
    spec, resolved, tmp_path: Path, photos, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths, shas = photos
    lazy = features.make_extractor(spec, resolved, home=tmp_path, defer_backend=True)
    assert lazy.backend == "pending"
    assert not (tmp_path / "cache" / "tflite").exists()  # nothing converted yet
    first, _ = features.extract(lazy, paths, shas, home=tmp_path)
    assert lazy.backend == "tflite", lazy.reason

    def no_check(*_a, **_k):
        raise AssertionError("the backend was prepared although every feature was cached")

    monkeypatch.setattr(features, "verified_interpreters", no_check)
    again = features.make_extractor(spec, resolved, home=tmp_path, defer_backend=True)
    cached, stats = features.extract(again, paths, shas, home=tmp_path)
    assert again.backend == "pending" and stats.misses == 0
    np.testing.assert_array_equal(cached, first)
    # The frozen base is built once per process and shared.
    assert again.keras_model is lazy.keras_model


def test_extract_batch_checks_the_shape(tflite) -> None:
    with pytest.raises(ConfigError, match="load_resized"):
        tflite.extract_batch(np.zeros((2, 32, 32, 3), np.uint8))


# --------------------------------------------------------------------------- cache


def test_features_are_cached_and_reused_without_inference(
    tflite, photos, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths, shas = photos
    home = tmp_path / "home"
    first, stats = features.extract(tflite, paths, shas, home=home, batch_size=4)
    assert (stats.hits, stats.misses) == (0, len(paths))
    # Same numbers as running the decoded images directly, in the order given.
    np.testing.assert_allclose(first, tflite.extract_batch(_decoded(paths)), rtol=0, atol=1e-6)
    for sha in shas:
        assert (feature_cache.cache_root(home, tflite.fingerprint) / "0" / sha[:2]
                / f"{sha}.npy").is_file()
    assert not list(home.rglob("*.tmp"))

    def forbidden(*_a, **_k):
        raise AssertionError("cache hit expected: no decoding, no inference")

    monkeypatch.setattr(tflite, "extract_batch", forbidden)
    monkeypatch.setattr(images, "load_resized", forbidden)
    again, stats2 = features.extract(tflite, list(reversed(paths)), list(reversed(shas)),
                                     home=home)
    assert (stats2.hits, stats2.misses) == (len(paths), 0)
    np.testing.assert_array_equal(again, first[::-1])


def test_caches_of_earlier_decoders_are_removed_and_others_kept(
    tflite, photos, tmp_path: Path
) -> None:
    paths, shas = photos
    home = tmp_path / "home"
    root = feature_cache.cache_root(home, tflite.fingerprint)
    fingerprint = tflite.fingerprint
    stale = [root.parent / fingerprint, root.parent / f"{fingerprint}-d1"]
    kept = [root.parent / f"{fingerprint}x-d1", root.parent / "other-base-d1"]
    for folder in stale + kept:
        (folder / "0" / "ab").mkdir(parents=True)
        (folder / "0" / "ab" / f"{'ab' * 32}.npy").write_bytes(b"old")
    features.extract(tflite, paths, shas, home=home, batch_size=4)
    assert not any(folder.exists() for folder in stale)
    assert all(folder.exists() for folder in kept)
    assert root.is_dir()


def test_partial_cache_runs_only_the_missing_images(tflite, photos, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    paths, shas = photos
    home = tmp_path / "home"
    features.extract(tflite, paths[:4], shas[:4], home=home)
    decoded: list[Path] = []
    original = images.load_resized
    monkeypatch.setattr(images, "load_resized",
                        lambda p, s: decoded.append(Path(p)) or original(p, s))
    _, stats = features.extract(tflite, paths, shas, home=home, batch_size=32)
    assert (stats.hits, stats.misses) == (4, len(paths) - 4)
    assert sorted(decoded) == sorted(paths[4:])


def test_broken_cache_entry_is_recomputed(tflite, photos, tmp_path: Path) -> None:
    paths, shas = photos
    home = tmp_path / "home"
    want, _ = features.extract(tflite, paths, shas, home=home)
    victim = feature_cache.cache_root(home, tflite.fingerprint) / "0" / shas[0][:2] / f"{shas[0]}.npy"
    victim.write_bytes(b"garbage")
    feature_cache.forget_recent_features()  # as a new process finds the cache
    got, stats = features.extract(tflite, paths, shas, home=home)
    assert (stats.hits, stats.misses) == (len(paths) - 1, 1)
    np.testing.assert_array_equal(got, want)
    assert np.load(victim).shape == (tflite.feature_dim,)


def test_features_read_or_written_before_come_from_memory(tflite, photos, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    paths, shas = photos
    home = tmp_path / "home"
    features.extract(tflite, paths[6:], shas[6:], home=home)
    feature_cache.forget_recent_features()
    features.extract(tflite, paths[6:], shas[6:], home=home)  # read from disk: kept
    want, _ = features.extract(tflite, paths[:6], shas[:6], home=home)  # computed: kept
    opened: list[Path] = []
    read_vector = feature_cache.read_vector
    monkeypatch.setattr(feature_cache, "read_vector",
                        lambda path, *args: opened.append(path) or read_vector(path, *args))
    got, stats = features.extract(tflite, paths, shas, home=home)
    assert (stats.hits, stats.misses, opened) == (len(paths), 0, [])
    np.testing.assert_array_equal(got[:6], want)
    # Within the byte budget only: the oldest vectors go first.
    monkeypatch.setattr(feature_cache.recent_vectors, "budget_bytes", 4 * 4 * tflite.feature_dim)
    feature_cache.recent_vectors.put("elsewhere", "ab" * 32, np.zeros(tflite.feature_dim))
    features.extract(tflite, paths, shas, home=home)
    assert len(opened) == len(paths)


def test_views_are_cached_apart_and_deterministic(tflite, photos, tmp_path: Path) -> None:
    paths, shas = photos
    home = tmp_path / "home"
    plain, _ = features.extract(tflite, paths, shas, home=home, view=0)
    one, s1 = features.extract(tflite, paths, shas, home=home, view=1, batch_size=3)
    two, _ = features.extract(tflite, paths, shas, home=home, view=2)
    assert s1.misses == len(paths)  # view 0's cache does not answer for view 1
    assert not np.allclose(one, plain) and not np.allclose(one, two)
    folder = feature_cache.cache_root(home, tflite.fingerprint)
    assert sorted(p.name for p in folder.iterdir()) == ["0", "1", "2"]
    # Another home, another batch size and order: the same view gives the same features.
    again, _ = features.extract(tflite, paths[::-1], shas[::-1], home=tmp_path / "other",
                                view=1, batch_size=5)
    np.testing.assert_allclose(again[::-1], one, rtol=0, atol=1e-6)


def test_all_views_of_an_image_in_one_pass_match_one_view_at_a_time(
        tflite, photos, tmp_path: Path) -> None:
    paths, shas = photos
    together, stats = features.extract_views(tflite, paths, shas, home=tmp_path / "a",
                                             views=(0, 2, 1), batch_size=5)
    assert together.shape == (3, len(paths), tflite.feature_dim)
    assert (stats.hits, stats.misses) == (0, 3 * len(paths))
    for k, view in enumerate((0, 2, 1)):
        alone, _ = features.extract(tflite, paths, shas, home=tmp_path / "b", view=view)
        np.testing.assert_allclose(together[k], alone, rtol=0, atol=1e-5)
    # Half cached: only the missing (image, view) pairs run.
    _, partly = features.extract_views(tflite, paths, shas, home=tmp_path / "b",
                                       views=(1, 4))
    assert (partly.hits, partly.misses) == (len(paths), len(paths))


# --------------------------------------------------------------------------- progress/cancel


def test_progress_after_every_batch(tflite, photos, tmp_path: Path) -> None:
    paths, shas = photos
    seen: list[tuple[int, int]] = []
    features.extract(tflite, paths, shas, home=tmp_path, batch_size=4,
                     on_progress=lambda d, t: seen.append((d, t)))
    n = len(paths)
    assert seen == [(0, n), (4, n), (8, n), (n, n)]


def test_cancel_takes_effect_within_one_batch(tflite, photos, tmp_path: Path) -> None:
    paths, shas = photos
    checks = {"n": 0}
    batches: list[int] = []

    def stop_after_first_batch() -> bool:
        checks["n"] += 1
        return checks["n"] > 1

    with pytest.raises(Cancelled):
        features.extract(tflite, paths, shas, home=tmp_path, batch_size=4,
                         on_progress=lambda d, t: batches.append(d),
                         should_stop=stop_after_first_batch)
    assert batches == [0, 4]
    cached = list((tmp_path / "cache" / "features").rglob("*.npy"))
    assert len(cached) == 4 and not list(tmp_path.rglob("*.tmp"))
    _, stats = features.extract(tflite, paths, shas, home=tmp_path)
    assert (stats.hits, stats.misses) == (4, len(paths) - 4)


@pytest.mark.parametrize("backend", ["tflite", "keras"])
def test_decoding_streams_a_bounded_window(backend, tflite, keras_ex, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    extractor = tflite if backend == "tflite" else keras_ex
    n, batch = 60, 4
    paths = [tmp_path / f"img{i}.png" for i in range(n)]
    shas = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(n)]
    loads: list[int] = []
    monkeypatch.setattr(images, "load_resized",
                        lambda p, s: loads.append(1) or np.zeros((s, s, 3), np.uint8))
    ahead: list[int] = []
    features.extract(extractor, paths, shas, home=tmp_path, batch_size=batch,
                     on_progress=lambda done, _total: ahead.append(len(loads) - done))
    # The decoding window plus the batch being run.
    bound = max(2 * batch, 2 * (features.os.cpu_count() or 1)) + batch
    assert len(ahead) >= n // batch  # progress came every batch, not only at the end
    assert max(ahead) <= bound  # never decodes far ahead of inference, whatever n is
    assert len(loads) == n


# --------------------------------------------------------------------------- bad input


def test_bad_arguments_say_what_to_pass(tflite, photos, tmp_path: Path) -> None:
    paths, shas = photos
    with pytest.raises(ConfigError, match="one sha256 per image"):
        features.extract(tflite, paths, shas[:-1], home=tmp_path)
    with pytest.raises(ConfigError, match="not a content hash"):
        features.extract(tflite, paths[:1], ["../../etc/passwd"], home=tmp_path)
    with pytest.raises(ConfigError, match="view"):
        features.extract(tflite, paths, shas, home=tmp_path, view=-1)
    with pytest.raises(ConfigError, match="batch_size"):
        features.extract(tflite, paths, shas, home=tmp_path, batch_size=0)
    with pytest.raises(ConfigError, match="distinct"):
        features.extract_views(tflite, paths, shas, home=tmp_path, views=(0, 1, 1))
    with pytest.raises(ConfigError, match="views"):
        features.extract_views(tflite, paths, shas, home=tmp_path, views=())


def test_undecodable_image_names_the_file(tflite, tmp_path: Path) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(ImageError, match="broken.jpg"):
        features.extract(tflite, [bad], ["ab" * 32], home=tmp_path)


def test_empty_input_gives_an_empty_matrix(tflite, tmp_path: Path) -> None:
    out, stats = features.extract(tflite, [], [], home=tmp_path)
    assert out.shape == (0, tflite.feature_dim) and (stats.hits, stats.misses) == (0, 0)


def test_extract_batch_is_safe_from_several_threads(tflite, photos) -> None:
    from concurrent.futures import ThreadPoolExecutor

    batch = _decoded(photos[0])
    batches = [batch, batch[::-1], batch[:3], batch[2:]]
    want = [tflite.extract_batch(b) for b in batches]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(tflite.extract_batch, batches * 3))
    for i, result in enumerate(got):
        np.testing.assert_array_equal(result, want[i % 4])


def test_cancel_does_not_wait_for_the_conversion_which_finishes_for_the_next_run(
    spec, resolved, tmp_path: Path, photos, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Converting a base cannot be interrupted; a cancel must not wait for it (issue 20 #13)."""
    paths, shas = photos
    real_convert = core.features.tflite.convert
    converting = threading.Event()

    def slow_convert(model, path):
        converting.set()
        time.sleep(3)  # a loaded server: minutes
        return real_convert(model, path)

    monkeypatch.setattr(core.features.tflite, "convert", slow_convert)
    ex = features.make_extractor(spec, resolved, home=tmp_path, defer_backend=True,
                                 should_stop=converting.is_set)
    started = time.monotonic()
    with pytest.raises(Cancelled):
        features.extract(ex, paths, shas, home=tmp_path, should_stop=converting.is_set)
    assert time.monotonic() - started < 2.5
    assert ex.backend == "pending"  # chosen again by whoever runs next
    tflite_path = features.tflite_file(tmp_path, resolved.fingerprint)
    deadline = time.monotonic() + 60
    while not tflite_path.is_file() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert tflite_path.is_file()  # the conversion went on and was kept

    again = features.make_extractor(spec, resolved, home=tmp_path, defer_backend=True,
                                    should_stop=lambda: False)
    monkeypatch.setattr(core.features.tflite, "convert", lambda *_a: pytest.fail("converted twice"))
    feats, stats = features.extract(again, paths, shas, home=tmp_path)
    assert again.backend == "tflite" and stats.misses == len(paths) and feats.shape[0] == len(paths)
