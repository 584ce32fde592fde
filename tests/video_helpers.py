"""A fake camera for Chromium: a Y4M clip made of photos, and the frames as the browser sees them.

Chromium's --use-file-for-fake-video-capture plays a .y4m file (I420) in a loop. The frames are
written with BT.601 limited-range YUV and read back the same way, so the server can predict on
the very pixels the clip holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

_RGB_TO_YUV = np.array([[0.257, 0.504, 0.098], [-0.148, -0.291, 0.439],
                        [0.439, -0.368, -0.071]])
_OFFSET = np.array([16.0, 128.0, 128.0])


def frame_of(photo: Image.Image, width: int, height: int) -> np.ndarray:
    """The photo squashed to the clip's size, RGB uint8 (what a camera would show)."""
    return np.asarray(photo.convert("RGB").resize((width, height), Image.Resampling.BILINEAR))


def to_i420(rgb: np.ndarray) -> bytes:
    """One frame as Y4M's I420 planes (chroma: mean of each 2 x 2 block)."""
    yuv = rgb.astype(np.float64) @ _RGB_TO_YUV.T + _OFFSET
    h, w = rgb.shape[:2]
    y = np.clip(np.rint(yuv[..., 0]), 0, 255).astype(np.uint8)
    chroma = yuv[..., 1:].reshape(h // 2, 2, w // 2, 2, 2).mean(axis=(1, 3))
    uv = np.clip(np.rint(chroma), 0, 255).astype(np.uint8)
    return y.tobytes() + uv[..., 0].tobytes() + uv[..., 1].tobytes()


def from_i420(data: bytes, width: int, height: int) -> np.ndarray:
    """The RGB frame a player shows for I420 planes (chroma repeated over its 2 x 2 block)."""
    n = width * height
    y = np.frombuffer(data[:n], np.uint8).reshape(height, width).astype(np.float64)
    u = np.frombuffer(data[n:n + n // 4], np.uint8).reshape(height // 2, width // 2)
    v = np.frombuffer(data[n + n // 4:n + n // 2], np.uint8).reshape(height // 2, width // 2)
    u = u.repeat(2, 0).repeat(2, 1).astype(np.float64) - 128.0
    v = v.repeat(2, 0).repeat(2, 1).astype(np.float64) - 128.0
    c = 1.164 * (y - 16.0)
    rgb = np.stack([c + 1.596 * v, c - 0.392 * u - 0.813 * v, c + 2.017 * u], axis=-1)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def write_y4m(path: Path, frames: Sequence[np.ndarray], repeat: int, fps: int = 10) -> list[np.ndarray]:
    """Writes each RGB frame `repeat` times; returns the frames as the clip holds them."""
    height, width = frames[0].shape[:2]
    shown = []
    with open(path, "wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for rgb in frames:
            planes = to_i420(rgb)
            shown.append(from_i420(planes, width, height))
            out.writelines(b"FRAME\n" + planes for _ in range(repeat))
    return shown


def signature(pixels: np.ndarray) -> np.ndarray:
    """4 x 4 block means of an S x S x 3 model input, as ui/live_camera_web/live.js computes."""
    size = pixels.shape[0]
    step = size / 4
    cells = []
    for by in range(4):
        for bx in range(4):
            block = pixels[int(by * step):int((by + 1) * step), int(bx * step):int((bx + 1) * step)]
            cells.extend(np.rint(block.reshape(-1, 3).astype(np.float64).mean(axis=0)))
    # live.js rounds per channel in the order y, x, channel: the same as above
    return np.array(cells)


def _browser_weights(in_size: int, out_size: int) -> np.ndarray:
    """ui/live_camera_web/resize.js's weights(), as a dense [out, in] matrix (float64)."""
    scale = in_size / out_size
    support = max(scale, 1.0)
    table = np.zeros((out_size, in_size))
    for o in range(out_size):
        center = (o + 0.5) * scale
        lo = max(0, int(np.floor(center - support + 0.5)))
        hi = min(in_size, int(np.floor(center + support + 0.5)))
        taps = np.maximum(0.0, 1.0 - np.abs((np.arange(lo, hi) - center + 0.5) / support))
        total = taps.sum()
        table[o, lo:hi] = taps / total if total else 0.0
    return table


def _round8(x: np.ndarray) -> np.ndarray:
    """resize.js's clamp8: Math.round (halves up) clamped to 0..255."""
    return np.clip(np.floor(x + 0.5), 0, 255)


def browser_squash(rgb: np.ndarray, size: int) -> np.ndarray:
    """The live camera's resize of a frame (uint8 [H, W, 3]) to uint8 [S, S, 3], as
    ui/live_camera_web/resize.js computes it: Pillow's antialiased bilinear filter in floating
    point, the horizontal pass first, each pass rounded to whole levels."""
    height, width = rgb.shape[:2]
    x = rgb.astype(np.float64)
    mid = _round8(np.einsum("ow,hwc->hoc", _browser_weights(width, size), x))
    out = _round8(np.einsum("oh,hxc->oxc", _browser_weights(height, size), mid))
    return out.astype(np.uint8)
