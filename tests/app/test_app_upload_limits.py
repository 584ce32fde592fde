"""One visitor cannot take the server's memory: photo uploaders are limited per file (in the
browser, and again on the server for a client that ignores it) and in number."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from app_helpers import page, texts
from conftest import make_class_folders, patterned_image
from run_helpers import make_run, tiny_classifier

from ui import state, uploads


def png() -> bytes:
    buffer = io.BytesIO()
    patterned_image(0, 1, 32).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def run_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("limits")
    data = make_class_folders(root / "data", {"cats": 6, "dogs": 6}, size=32)
    make_run(root / "home", data, tiny_classifier(2), train=False)
    return root / "home"


def test_predict_refuses_photos_over_the_limit_and_too_many_at_once(
        run_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TL_STUDIO_HOME", str(run_home))
    at = page("4_Predict").run()
    uploader = at.file_uploader(key=state.PREDICT_UPLOAD)
    assert uploader.proto.max_upload_size_mb == uploads.PHOTO_MB  # the browser's limit
    uploader.upload("huge.png", b"\x89PNG" + b"0" * (uploads.PHOTO_MB * 2**20 + 1), "image/png")
    for n in range(uploads.PHOTOS_AT_ONCE + 1):
        uploader.upload(f"p{n}.png", png(), "image/png")
    at.run()
    assert not at.exception, at.exception
    errors = texts(at.error)
    assert any("huge.png" in e and f"over the limit of {uploads.PHOTO_MB} MB" in e
               for e in errors), errors
    assert sum(f"over {uploads.PHOTOS_AT_ONCE} photos at once" in e for e in errors) == 1
    assert len(texts(at.subheader)) == uploads.PHOTOS_AT_ONCE
