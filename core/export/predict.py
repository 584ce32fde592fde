"""Prints the top-3 classes of photos with an exported model (copied as predict.py), and
"none of these" when a photo looks like none of the classes (metadata.json's "familiarity").

Standalone: needs only numpy, Pillow and either ai_edge_litert or TensorFlow; reads
metadata.json and labels.txt from its own folder. Photos are decoded as the studio decodes
them: EXIF orientation applied, colour profiles converted to sRGB, transparency on white, the
whole image squashed to S x S with Pillow's antialiased bilinear filter (JPEGs first decoded
at a reduced scale no smaller than S, as the studio does).

    python predict.py photo.jpg [more.jpg ...] [--model model_int8.tflite] [--top 3] [--json]

"None of these" needs the feature vector the model's head reads: model.keras and the TFLite
files give it (metadata.json names the tensor); the SavedModel's signature does not, and its
rows say "unknown": null.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageCms, ImageOps

HERE = Path(__file__).resolve().parent
# Preferred files when --model is not given: the most faithful small file first.
DEFAULT_ORDER = ("model_float32.tflite", "model_float16.tflite", "model_int8.tflite",
                 "saved_model", "model.keras")
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
_HIGH_BIT_MODES = {"I", "I;16", "I;16L", "I;16B", "I;16N", "F"}
_RGB_FAMILY_MODES = {"RGB", "RGBA", "RGBX", "RGBa", "P", "PA"}


def _srgb_transform(icc: bytes, mode: str) -> Any:
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        space = profile.profile.xcolor_space.strip()
        if (mode, space) not in (("RGB", "RGB"), ("CMYK", "CMYK")):
            return None
        if space == "RGB" and "srgb" in profile.profile.profile_description.lower():
            return None
        return ImageCms.buildTransform(profile, ImageCms.createProfile("sRGB"), mode, "RGB")
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return None


def _to_srgb(pixels: Image.Image, icc: bytes | None) -> Image.Image:
    transform = _srgb_transform(icc, pixels.mode) if icc else None
    if transform is None:
        return pixels if pixels.mode == "RGB" else pixels.convert("RGB")
    return ImageCms.applyTransform(pixels, transform)


def _high_bit_to_l(img: Image.Image) -> Image.Image:
    arr = np.asarray(img)
    if img.mode.startswith("I;16"):
        scaled = arr.astype(np.float32) / 257.0
    else:
        values = arr.astype(np.float64)
        lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        if img.mode == "F" and lo >= 0.0 and hi <= 1.0:
            scaled = values * 255.0
        elif lo >= 0.0 and hi <= 65535.0 and img.mode == "I":
            scaled = values / 257.0
        elif lo >= 0.0 and hi <= 255.0:
            scaled = values
        else:
            scaled = (values - lo) * (255.0 / (hi - lo)) if hi > lo else values * 0.0
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "L")


def _to_rgb(img: Image.Image, icc: bytes | None) -> Image.Image:
    mode = img.mode
    if mode not in _RGB_FAMILY_MODES and mode != "CMYK":
        icc = None
    if mode in _HIGH_BIT_MODES:
        return _high_bit_to_l(img).convert("RGB")
    if mode in _ALPHA_MODES or "transparency" in img.info:
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return _to_srgb(background, icc)
    return _to_srgb(img if mode == "CMYK" else img.convert("RGB"), icc)


def load_photo(path: str | Path, size: int) -> np.ndarray:
    """The photo as the model expects it: uint8 [size, size, 3], upright, sRGB, squashed."""
    with Image.open(path) as img:
        if img.format in ("JPEG", "MPO"):
            img.draft("RGB", (size, size))
        img.load()
        icc = img.info.get("icc_profile")
        icc = bytes(icc) if icc else None
        try:
            upright = ImageOps.exif_transpose(img)
        except Exception:
            upright = img
        if upright.mode == "RGB" and icc:
            resized = upright.resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(_to_srgb(resized, icc), dtype=np.uint8)
        rgb = _to_rgb(upright, icc)
        return np.asarray(rgb.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


def _interpreter(path: Path, keep_tensors: bool = False) -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    if keep_tensors:  # the feature vector is an intermediate tensor
        return Interpreter(model_path=str(path), experimental_preserve_all_tensors=True)
    return Interpreter(model_path=str(path))


def _dequantized(interpreter: Any, detail: dict[str, Any]) -> np.ndarray:
    y = interpreter.get_tensor(detail["index"])
    scale, zero = detail["quantization"]
    if detail["dtype"] != np.float32 and scale:
        return (y.astype(np.float32) - zero) * scale  # int8 file: dequantize
    return y.astype(np.float32)


def make_model(path: Path, feature_tensor: int | None = None) -> Any:
    """A function: uint8 photos [N, S, S, 3] -> (probabilities [N, C], features [N, D] or
    None), for any exported file.

    Args:
        path: The model file or folder.
        feature_tensor: For a TFLite file, the index of its feature tensor (metadata.json's
            familiarity.features.<file>.tensor_index); None: no features.
    """
    if path.suffix == ".tflite":
        interpreter = _interpreter(path, keep_tensors=feature_tensor is not None)
        interpreter.allocate_tensors()
        inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
        feat = next((d for d in interpreter.get_tensor_details()
                     if d["index"] == feature_tensor), None) if feature_tensor is not None \
            else None

        def run_tflite(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
            rows, feats = [], []
            for photo in batch:  # the files take one photo at a time
                interpreter.set_tensor(inp["index"], photo[None].astype(inp["dtype"]))
                interpreter.invoke()
                rows.append(_dequantized(interpreter, out)[0])
                if feat is not None:
                    feats.append(_dequantized(interpreter, feat)[0])
            return np.stack(rows), (np.stack(feats) if feat is not None else None)

        return run_tflite
    import tensorflow as tf

    if path.is_dir():
        serve = tf.saved_model.load(str(path)).signatures["serving_default"]
        return lambda batch: (serve(images=tf.constant(batch, tf.float32))["probabilities"]
                              .numpy(), None)
    import keras

    model = keras.saving.load_model(str(path), compile=False)
    # The studio's layout: input -> base -> head (a nested model reading the feature vector).
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]

    def run_keras(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        x = batch.astype(np.float32)
        for layer in layers[:-1]:
            x = layer(x, training=False)
        return np.asarray(layers[-1](x, training=False)), np.asarray(x)

    return run_keras


class Familiarity:
    """'None of these' from metadata.json's familiarity block (its how_to_score steps)."""

    def __init__(self, block: dict[str, Any]) -> None:
        ref = block["reference"]
        self.k = int(block["k"])
        self.thresholds = np.asarray(block["class_thresholds"], np.float32)
        self.reference = np.fromfile(HERE / ref["file"], dtype="<f2").reshape(
            ref["shape"]).astype(np.float32)
        self.labels = np.asarray(ref["labels"], np.int64)

    def score(self, features: np.ndarray) -> tuple[float, float]:
        """(score, the threshold that applies) of one feature vector."""
        f = features.astype(np.float32)
        f = f / max(float(np.linalg.norm(f)), 1e-12)
        sims = self.reference @ f
        k = max(1, min(self.k, len(sims)))
        score = float(np.partition(sims, len(sims) - k)[len(sims) - k])
        return score, float(self.thresholds[self.labels[int(np.argmax(sims))]])


def _familiarity(metadata: dict[str, Any], path: Path) -> tuple[Any, int | None]:
    """(Familiarity or None, the file's feature tensor index) for the chosen model file."""
    block = metadata.get("familiarity")
    if not block:
        return None, None
    where = (block.get("features") or {}).get(path.name)
    if path.name not in (block.get("features") or {}) or (where is None):
        return None, None
    try:
        return Familiarity(block), where.get("tensor_index")
    except (OSError, ValueError, KeyError) as exc:
        print(f"note: no 'none of these' answers ({exc})", file=sys.stderr)
        return None, None


def _default_model(metadata: dict[str, Any]) -> Path:
    formats = metadata.get("formats", {})
    usable = {f.get("file") for f in formats.values() if f.get("status") == "ok"}
    for name in DEFAULT_ORDER:
        if name in usable and (HERE / name).exists():
            return HERE / name
    for name in DEFAULT_ORDER:
        if (HERE / name).exists():
            return HERE / name
    raise SystemExit(f"No model file next to {Path(__file__).name}; export again.")


def main(argv: list[str] | None = None) -> int:
    """Prints the top classes of each photo given on the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photos", nargs="+", help="image files")
    parser.add_argument("--model", help="model file in this folder (default: the float32 "
                        "TFLite file, or the best one exported)")
    parser.add_argument("--top", type=int, default=3, help="classes shown per photo")
    parser.add_argument("--json", action="store_true", help="print one JSON list")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    warnings.simplefilter("ignore")
    metadata = json.loads((HERE / "metadata.json").read_text(encoding="utf-8"))
    labels = (HERE / "labels.txt").read_text(encoding="utf-8").splitlines()
    size = int(metadata["input"]["size"])
    threshold = float(metadata.get("unsure_threshold", 0.5))
    path = (HERE / args.model) if args.model else _default_model(metadata)
    familiar, tensor = _familiarity(metadata, path)
    model = make_model(path, tensor)
    rows, failed = [], False
    for photo in args.photos:
        try:
            pixels = load_photo(photo, size)
        except Exception as exc:
            rows.append({"file": photo, "error": f"{type(exc).__name__}: {exc}"})
            failed = True
            continue
        probs, feats = model(pixels[None])
        probabilities = probs[0]
        best = np.argsort(-probabilities, kind="stable")[:max(1, args.top)]
        row = {"file": photo, "model": path.name,
               "top": [{"label": labels[i], "probability": float(probabilities[i])}
                       for i in best],
               "unsure": bool(probabilities[best[0]] < threshold),
               "unknown": None, "familiarity": None, "familiarity_threshold": None}
        if familiar is not None and feats is not None:
            score, line = familiar.score(feats[0])
            row.update(unknown=bool(score < line), familiarity=score,
                       familiarity_threshold=line)
        rows.append(row)
    if args.json:
        print(json.dumps(rows))
    for row in rows if not args.json else []:
        if "error" in row:
            print(f"{row['file']}: cannot read it ({row['error']})")
            continue
        guesses = ", ".join(f"{t['label']} {t['probability']:.1%}" for t in row["top"])
        if row["unknown"]:
            print(f"{row['file']}: none of these: it looks like none of the {len(labels)} "
                  f"classes this model knows (closest: {row['top'][0]['label']}; {guesses})")
            continue
        print(f"{row['file']}: {guesses}" + ("  (unsure)" if row["unsure"] else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
