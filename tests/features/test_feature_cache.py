"""core.features.cache: vectors on disk (exact, atomic, foreign files ignored) and in memory."""

from __future__ import annotations

import io

import numpy as np

from core.features import cache as feature_cache


def test_cached_vectors_read_back_exactly_and_foreign_files_are_ignored(tmp_path) -> None:
    header = feature_cache.npy_header(5)
    vector = np.array([0.5, -1.25, 3.0, 1e-7, 42.0], np.float32)
    path = tmp_path / "ab" / "v.npy"
    feature_cache.write_vector(path, vector)
    fast = feature_cache.read_vector(path, 5, header)
    np.testing.assert_array_equal(fast, vector)
    assert fast.dtype == np.float32
    # Written with the known header: byte for byte what np.save writes.
    feature_cache.write_vector(path, vector, header, made=set())
    saved = io.BytesIO()
    np.save(saved, vector, allow_pickle=False)
    assert path.read_bytes() == saved.getvalue()
    np.testing.assert_array_equal(np.load(path), vector)
    assert [p.name for p in path.parent.iterdir()] == ["v.npy"]  # no temp files left
    np.save(path, vector.astype(np.float64))  # not what the cache writes: recomputed
    assert feature_cache.read_vector(path, 5, header) is None
    path.write_bytes(header + b"\x00" * 7)  # truncated
    assert feature_cache.read_vector(path, 5, header) is None
    assert feature_cache.read_vector(tmp_path / "missing.npy", 5, header) is None


def test_cache_is_keyed_by_the_fingerprint_and_kept_in_memory(tmp_path) -> None:
    shas = ["ab" * 32, "cd" * 32]
    cache = feature_cache.FeatureCache(tmp_path, "base-64-none-123", 3, (0, 2))
    assert cache.root == feature_cache.cache_root(tmp_path, "base-64-none-123")
    assert cache.get(0, shas[0]) is None
    cache.put(2, shas[0], np.array([1.0, 2.0, 3.0]))
    file = cache.root / "2" / "ab" / f"{shas[0]}.npy"
    np.testing.assert_array_equal(np.load(file), [1.0, 2.0, 3.0])
    assert cache.get(0, shas[0]) is None and cache.get(2, shas[1]) is None
    file.unlink()  # still in memory: a cached file never changes once written
    np.testing.assert_array_equal(cache.get(2, shas[0]), [1.0, 2.0, 3.0])
    feature_cache.forget_recent_features()
    assert cache.get(2, shas[0]) is None
    # Another instance for the same fingerprint reads what this one wrote.
    cache.put(0, shas[1], np.zeros(3))
    feature_cache.forget_recent_features()
    again = feature_cache.FeatureCache(tmp_path, "base-64-none-123", 3, (0,))
    np.testing.assert_array_equal(again.get(0, shas[1]), np.zeros(3))


def test_stale_decoder_folders_of_the_fingerprint_are_removed(tmp_path) -> None:
    root = feature_cache.cache_root(tmp_path, "fp")
    stale = root.parent / "fp-d0"
    other = root.parent / "fpx-d0"
    for folder in (stale, other):
        folder.mkdir(parents=True)
    assert feature_cache.remove_stale_caches(tmp_path, "fp") == [stale]
    assert other.is_dir() and not stale.exists()
