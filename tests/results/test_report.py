"""The model zip's README: its loading recipe gives the pixels the studio gives."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from conftest import patterned_image
from PIL import Image

from core.data import images
from core.results.report import MODEL_README


def recipe_pixels(folder: Path, size: int) -> np.ndarray:
    """Runs the README's lines that read photo.jpg, as a user would paste them."""
    text = MODEL_README.format(size=size, tf="2", keras="3")
    lines = [line.strip() for line in text.splitlines()
             if line.strip().startswith(("from PIL", "photo"))]
    namespace: dict = {}
    here = Path.cwd()
    os.chdir(folder)
    try:
        exec("\n".join(lines), namespace)
    finally:
        os.chdir(here)
    return np.asarray(namespace["photo"])


@pytest.mark.parametrize("orientation", [1, 6])
def test_the_readme_recipe_sees_the_pixels_the_studio_sees(tmp_path: Path,
                                                           orientation: int) -> None:
    photo = patterned_image(1, 5, size=400).resize((640, 400))  # large, not square: draft works
    exif = Image.Exif()
    exif[0x0112] = orientation  # rotated 90 degrees by the camera
    photo.save(tmp_path / "photo.jpg", "JPEG", quality=92, exif=exif.tobytes())
    studio = images.load_resized(tmp_path / "photo.jpg", 96)
    np.testing.assert_array_equal(recipe_pixels(tmp_path, 96), studio)


@pytest.mark.parametrize(("config", "shown"), [
    ({"weights": "/srv/models/base.h5"}, "file base.h5"),
    ({"weights": "imagenet"}, "imagenet"),
    ({"weights": None}, "random"),
    ({"weights": None, "hub_handle": "/srv/hub/efficientnet"}, "TF Hub"),
])
def test_the_report_names_the_weights_without_the_servers_path(config: dict, shown: str
                                                              ) -> None:
    """Issue 20: the report keeps only what a reader needs (no paths of the server)."""
    from types import SimpleNamespace

    from core.results import report

    run = SimpleNamespace(config=SimpleNamespace(to_dict=lambda: config, augments=False),
                          metrics={}, averaged_epochs=1, backbone="mobilenet_v2",
                          input_size=224, dataset={}, fine_tune_rate_text=None)
    table = report._settings(run)
    assert dict(zip(table["Setting"], table["Value"], strict=True))["Weights"] == shown
    assert "/srv" not in table.to_string()
