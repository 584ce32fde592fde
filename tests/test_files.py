"""core.files: atomic writes that keep the old file on failure, plain JSON, torn JSON lines."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from core.files import read_events, write_json_atomic


def test_atomic_write_keeps_old_file_when_replace_fails(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "status.json"
    write_json_atomic(target, {"status": "running"})

    def failing_replace(src: str, dst: str) -> None:
        raise OSError("disk vanished")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk vanished"):
        write_json_atomic(target, {"status": "completed"})
    monkeypatch.undo()
    assert json.loads(target.read_text()) == {"status": "running"}
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]  # temp file cleaned up


def test_json_values_are_made_plain(tmp_path: Path) -> None:
    target = tmp_path / "m.json"
    write_json_atomic(target, {"a": np.float32(0.5), "b": np.int64(3), "c": float("nan"),
                               "d": (1, 2), "e": tmp_path, "f": np.array([1, 2])})
    assert json.loads(target.read_text()) == {"a": 0.5, "b": 3, "c": None, "d": [1, 2],
                                              "e": str(tmp_path), "f": [1, 2]}
    with pytest.raises(TypeError, match="cannot store"):
        write_json_atomic(target, {"x": object()})
    assert json.loads(target.read_text())["b"] == 3


def test_torn_and_foreign_lines_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    assert read_events(path) == []
    path.write_bytes(b'{"n": 1}\n[1, 2]\n\n{"n": 2}\n{"n": 3, "pha')
    assert read_events(path) == [{"n": 1}, {"n": 2}]
