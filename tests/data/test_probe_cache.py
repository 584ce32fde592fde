"""Reading a folder again does not decode its unchanged photos again (core.data.probe_cache),
and a changed photo, a changed rule or a damaged cache file never gives a stale answer."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from dataset_helpers import img_bytes, two_classes, write_files

from core.config import IngestConfig
from core.data import datasets, images


@pytest.fixture
def probed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The files images.probe_file decoded (in this process: the folders are small)."""
    seen: list[str] = []
    real = images.probe_file

    def counting(path: str, **kwargs):
        seen.append(Path(path).name)
        return real(path, **kwargs)

    monkeypatch.setattr(images, "probe_file", counting)
    return seen


def _cache_files(home: Path) -> list[Path]:
    return sorted((home / "cache" / "probes").glob("*.json"))


def test_a_second_read_decodes_nothing_and_reports_the_same(tmp_path: Path,
                                                             probed: list[str]) -> None:
    home, data = tmp_path / "home", write_files(tmp_path / "data", two_classes(4))
    first = datasets.ingest(data, home=home)
    assert len(probed) == 8 and len(_cache_files(home)) == 1
    probed.clear()
    second = datasets.ingest(data, home=home)
    assert probed == []
    assert second.report.to_dict() == first.report.to_dict()
    assert second.index.equals(first.index)  # the same hashes, sizes and labels


def test_a_changed_photo_is_checked_again_and_its_new_content_counts(
        tmp_path: Path, probed: list[str]) -> None:
    home, data = tmp_path / "home", write_files(tmp_path / "data", two_classes(3))
    first = datasets.ingest(data, home=home)
    changed = data / "a" / "0.png"
    stat = changed.stat()
    changed.write_bytes(img_bytes(5, 9))
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    probed.clear()
    second = datasets.ingest(data, home=home)
    assert probed == ["0.png"]
    old = dict(zip(first.index["path"].map(str), first.index["sha256"], strict=True))
    new = dict(zip(second.index["path"].map(str), second.index["sha256"], strict=True))
    assert new[str(changed)] != old[str(changed)]


def test_a_photo_broken_since_the_last_read_is_rejected(tmp_path: Path,
                                                        probed: list[str]) -> None:
    home, data = tmp_path / "home", write_files(tmp_path / "data", two_classes(3))
    datasets.ingest(data, home=home)
    (data / "b" / "1.png").write_bytes(b"not an image any more")
    report = datasets.ingest(data, home=home).report
    assert [r["file"] for r in report.rejected] == ["b/1.png"]


def test_other_rules_check_every_photo_again(tmp_path: Path, probed: list[str]) -> None:
    home, data = tmp_path / "home", write_files(tmp_path / "data", two_classes(3))
    datasets.ingest(data, home=home)
    probed.clear()
    report = datasets.ingest(data, home=home, config=IngestConfig(min_side=40)).report
    assert len(probed) == 6
    assert len(report.rejected) == 6  # the 32-pixel photos are now too small


@pytest.mark.parametrize("damage", [
    b"{not json", b"[]", b'{"version": 1, "rules": {}, "files": []}',
    b"\xff\xfe\x00",
])
def test_a_damaged_cache_file_is_ignored_and_rebuilt(tmp_path: Path, probed: list[str],
                                                     damage: bytes) -> None:
    home, data = tmp_path / "home", write_files(tmp_path / "data", two_classes(3))
    first = datasets.ingest(data, home=home)
    cache = _cache_files(home)[0]
    cache.write_bytes(damage)
    probed.clear()
    second = datasets.ingest(data, home=home)
    assert len(probed) == 6
    assert second.report.to_dict() == first.report.to_dict()
    probed.clear()
    datasets.ingest(data, home=home)
    assert probed == []  # rebuilt


def test_entries_of_wrong_types_are_checked_again(tmp_path: Path, probed: list[str]) -> None:
    import json

    home, data = tmp_path / "home", write_files(tmp_path / "data", two_classes(3))
    first = datasets.ingest(data, home=home)
    cache = _cache_files(home)[0]
    stored = json.loads(cache.read_text())
    name = str(data / "a" / "1.png")
    stored["files"][name][4] = "abc"  # a hash that is no hash
    cache.write_text(json.dumps(stored))
    probed.clear()
    second = datasets.ingest(data, home=home)
    assert probed == ["1.png"]
    assert second.index.equals(first.index)
