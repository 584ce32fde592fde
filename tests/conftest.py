"""Shared fixtures: generated image datasets, an isolated studio home, the offline assets."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = Path(__file__).resolve().parents[1]
ASSETS = Path(os.environ.get("TL_STUDIO_ASSETS", REPO_ROOT.parent / "shared" / "assets"))
MOBILENET_V2_NO_TOP = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"

# Distinct colours and stripe directions, so small models can tell classes apart.
CLASS_STYLES = [
    ((220, 40, 40), "h"), ((40, 200, 60), "v"), ((40, 80, 220), "d"),
    ((230, 200, 30), "h"), ((150, 40, 180), "v"), ((30, 190, 190), "d"),
]


def patterned_image(class_number: int, variant: int, size: int = 48) -> Image.Image:
    """A photo-like RGB image whose colour and stripes depend on the class; noise on variant."""
    colour, direction = CLASS_STYLES[class_number % len(CLASS_STYLES)]
    rng = np.random.default_rng(class_number * 10_000 + variant)
    yy, xx = np.mgrid[0:size, 0:size]
    coord = {"h": yy, "v": xx, "d": xx + yy}[direction]
    stripes = ((coord // max(size // 8, 1)) % 2).astype(np.float32)
    base = np.array(colour, np.float32)[None, None, :]
    img = base * (0.6 + 0.4 * stripes[..., None]) + rng.normal(0, 12, (size, size, 3))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


def make_class_folders(
    root: Path, counts: dict[str, int], size: int = 48, fmt: str = "PNG", start: int = 0
) -> Path:
    """Writes counts[class] distinct patterned images into root/<class>/; returns root."""
    ext = {"PNG": "png", "JPEG": "jpg", "BMP": "bmp", "WEBP": "webp"}[fmt]
    for class_number, (name, n) in enumerate(counts.items()):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(start, start + n):
            patterned_image(class_number, i, size).save(folder / f"img_{i:04d}.{ext}", fmt)
    return root


def zip_folder(folder: Path, zip_path: Path, arc_prefix: str = "") -> Path:
    """Zips every file under folder, names relative to it, optionally under arc_prefix/."""
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, arc_prefix + path.relative_to(folder).as_posix())
    return zip_path


@pytest.fixture
def studio_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty studio home in tmp_path, also set as $TL_STUDIO_HOME."""
    home = tmp_path / "studio-home"
    home.mkdir()
    monkeypatch.setenv("TL_STUDIO_HOME", str(home))
    return home


@pytest.fixture
def small_dataset(tmp_path: Path) -> Path:
    """Three classes of 12 distinct 48 px images each, as class folders."""
    return make_class_folders(tmp_path / "small", {"cats": 12, "dogs": 12, "fish": 12})


def require_asset(relative: str) -> Path:
    """Path to a file under ../shared/assets, or skip the test saying what is missing."""
    path = ASSETS / relative
    if not path.exists():
        pytest.skip(f"offline asset not found: {path} (see shared/assets/SOURCES.md)")
    return path


@pytest.fixture
def keras_home_with_mobilenet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A KERAS_HOME whose models/ links the shared MobileNetV2 no-top weights."""
    weights = require_asset(f"weights/{MOBILENET_V2_NO_TOP}")
    keras_home = tmp_path / "keras-home"
    (keras_home / "models").mkdir(parents=True)
    (keras_home / "models" / MOBILENET_V2_NO_TOP).symlink_to(weights)
    monkeypatch.setenv("KERAS_HOME", str(keras_home))
    return keras_home


def write_informative_weights(spec, path: Path, seed: int = 0) -> Path:
    """Writes random no-top weights for a core.features.backbones spec in Keras' legacy .h5 layout.

    Unlike a fresh random init (whose BatchNorm statistics make features vanish), the
    BatchNorm/Normalization statistics get non-trivial values, so features have scale ~1 and
    comparisons between two ways of running a base mean something.
    """
    import h5py
    import keras
    from keras.src.legacy.saving import legacy_h5_format

    keras.utils.set_random_seed(seed)
    constructor = getattr(keras.applications, spec.constructor)
    size = spec.input_size
    app = constructor(include_top=False, weights=None, input_shape=(size, size, 3),
                      pooling="avg", **dict(spec.constructor_kwargs))
    rng = np.random.default_rng(seed)
    for var in app.weights:
        name = var.path.split("/")[-1]
        if "int" in str(var.dtype):
            continue
        if "variance" in name or name == "gamma":
            var.assign(rng.uniform(0.5, 1.5, tuple(var.shape)).astype("float32"))
        elif "mean" in name:
            var.assign(rng.normal(0.0, 0.1, tuple(var.shape)).astype("float32"))
    with h5py.File(path, "w") as fh:
        legacy_h5_format.save_weights_to_hdf5_group(fh, app)
    return path
