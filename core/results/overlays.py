"""Heatmaps as pictures: stretched to a photo, coloured, laid over it, saved as PNG."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image

from core.data import images
from core.errors import ConfigError

DEFAULT_OPACITY = 0.45
ORIGINAL_MAX_SIDE = 1024  # the original photo is shown at most this big
_ANCHORS = np.array([0.0, 0.125, 0.375, 0.625, 0.875, 1.0])
_ANCHOR_RGB = np.array([(0, 0, 128), (0, 0, 255), (0, 255, 255), (255, 255, 0),
                        (255, 0, 0), (128, 0, 0)], np.float64)
COLORMAP = np.stack([np.interp(np.linspace(0, 1, 256), _ANCHORS, _ANCHOR_RGB[:, c])
                     for c in range(3)], axis=1).round().astype(np.uint8)


def resize_map(values: np.ndarray, width: int, height: int) -> np.ndarray:
    """A heatmap stretched to width x height (bilinear), as float32 in [0, 1].

    The model saw the whole upright photo squashed to a square, so stretching the square map
    back to the upright photo's size puts every value over the pixels it came from.
    """
    stretched = Image.fromarray(np.asarray(values, np.float32), mode="F").resize(
        (int(width), int(height)), Image.Resampling.BILINEAR)
    return np.clip(np.asarray(stretched, np.float32), 0.0, 1.0)


def colorize(values: np.ndarray) -> np.ndarray:
    """uint8 RGB colours of heatmap values in [0, 1] (dark blue: none, dark red: most)."""
    levels = np.clip(np.nan_to_num(np.asarray(values, np.float32)), 0.0, 1.0)
    return COLORMAP[(levels * 255).round().astype(np.uint8)]


def overlay(photo: np.ndarray, values: np.ndarray, opacity: float = DEFAULT_OPACITY
            ) -> np.ndarray:
    """The photo with the coloured heatmap over it (the map is resized to the photo).

    Args:
        photo: uint8 (H, W, 3).
        values: Heatmap in [0, 1], any size.
        opacity: 0 shows only the photo, 1 only the heatmap.
    """
    if not 0.0 <= float(opacity) <= 1.0:
        raise ConfigError(f"Opacity must be between 0 and 1; got {opacity}.")
    pixels = np.asarray(photo, np.uint8)
    height, width = pixels.shape[:2]
    if np.shape(values) != (height, width):
        values = resize_map(values, width, height)
    colours = colorize(values).astype(np.float32)
    mixed = (1.0 - opacity) * pixels.astype(np.float32) + float(opacity) * colours
    return np.clip(mixed.round(), 0, 255).astype(np.uint8)


def original_photo(source: Any, max_side: int = ORIGINAL_MAX_SIDE) -> np.ndarray:
    """The photo upright (EXIF rotation applied, as the model saw it), at most max_side.

    Raises:
        ImageError: The photo cannot be read.
    """
    picture = images.open_rgb(source, max_pixels=images.DEFAULT_MAX_PIXELS, min_side=1)
    if max(picture.size) > max_side:
        picture.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    return np.asarray(picture, np.uint8)


def png_bytes(pixels: np.ndarray) -> bytes:
    """uint8 RGB pixels as PNG file bytes."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(pixels, np.uint8), "RGB").save(buffer, "PNG", optimize=False)
    return buffer.getvalue()
