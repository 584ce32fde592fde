"""One image decoder for every path (ingestion, training, prediction)."""

from __future__ import annotations

import functools
import hashlib
import io
import logging
import os
import stat
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from core.config import IngestConfig
from core.errors import ConfigError, ImageError

log = logging.getLogger(__name__)

# A path, the file's bytes, an open binary file (read, not closed) or a PIL image.
ImageSource = str | os.PathLike | bytes | bytearray | memoryview | Image.Image | BinaryIO

DEFAULT_MAX_PIXELS: int = IngestConfig.__dataclass_fields__["max_pixels"].default
DEFAULT_MIN_SIDE: int = IngestConfig.__dataclass_fields__["min_side"].default
DEFAULT_MAX_FILE_BYTES: int = IngestConfig.__dataclass_fields__["max_file_bytes"].default
NOT_REGULAR_FILE = ("not a regular file (a named pipe, device or socket), so it was not "
                    "read; put image files only in the dataset")

# Formats accepted by content; Pillow's JPEG opener also returns MPO (phones write it).
# Pillow sniffs formats with weak signatures too (TGA...), which would let arbitrary files
# pass as images, so the list is explicit.
SUPPORTED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF")
_SUPPORTED_TEXT = "JPEG, PNG, BMP, GIF, WebP or TIFF"
# JPEG-family formats that support Image.draft (DCT-domain downscaling while decoding).
_DRAFT_FORMATS = frozenset({"JPEG", "MPO"})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_HIGH_BIT_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
# Modes whose pixels an RGB colour profile describes (a palette holds RGB colours).
_RGB_FAMILY_MODES = frozenset({"RGB", "RGBA", "RGBX", "RGBa", "P", "PA"})
_WHITE = (255, 255, 255)
# Bumped whenever decoding changes the pixels a photo gives, so features cached from the old
# pixels are not reused (core.features.extraction names its cache folders with it). 2: colour profiles.
DECODER_VERSION = 2

# Leading bytes of formats people upload by mistake, with what to tell them.
_KNOWN_SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\xff\xd8\xff", "damaged JPEG"),
    (0, b"\x89PNG", "damaged PNG"),
    (0, b"GIF8", "damaged GIF"),
    (0, b"BM", "damaged BMP"),
    (0, b"II*\x00", "damaged TIFF"),
    (0, b"MM\x00*", "damaged TIFF"),
    (0, b"RIFF", "damaged WebP"),
)
_HEIF_BRANDS = (b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1", b"avif")


@dataclass(frozen=True)
class ImageInfo:
    """Size and format of an image that decoded cleanly.

    Attributes:
        width: Width in pixels, upright (after EXIF orientation).
        height: Height in pixels, upright (after EXIF orientation).
        format: Pillow's name of the format found in the content (JPEG, PNG, MPO...).
    """

    width: int
    height: int
    format: str


@dataclass(frozen=True)
class ProbeResult:
    """Outcome of checking one file: its identity when usable, else why not.

    Attributes:
        path: The file checked, as given.
        sha256: Hex sha256 of the file bytes ("" when the file could not be read).
        info: Size and format when the image is usable, else None.
        reason: Why the file is rejected, "" when usable.
        is_image: Whether the content looked like an image at all (a damaged or too-small
            image is still an image; a text file is not).
    """

    path: str
    sha256: str
    info: ImageInfo | None
    reason: str
    is_image: bool

    @property
    def ok(self) -> bool:
        """True when the image is usable."""
        return self.info is not None


class _NotAnImage(ImageError):
    """The content is not an image at all (as opposed to a damaged or unsuitable one)."""


def _format_name(head: bytes) -> str | None:
    """The image format suggested by the first bytes, when they match a known signature."""
    for offset, magic, what in _KNOWN_SIGNATURES:
        if head[offset:offset + len(magic)] == magic:
            if magic == b"RIFF" and head[8:12] != b"WEBP":
                continue
            return what
    return None


def _unidentified(head: bytes, detail: str = "") -> ImageError:
    """The error for content Pillow could not open, judged from its first bytes."""
    if len(head) >= 12 and head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS:
        return ImageError("HEIC/HEIF/AVIF photos are not supported; export it as JPEG or PNG")
    what = _format_name(head)
    if what is not None:
        detail = f" ({detail})" if detail else ""
        return ImageError(f"{what} file: its header cannot be read{detail}; re-export or "
                          "remove it")
    if detail:
        return ImageError(f"damaged image ({detail}); re-export or remove it")
    return _NotAnImage(f"not an image: the content is not {_SUPPORTED_TEXT}")


def _size_text(n: int) -> str:
    return f"{n / 2**20:,.1f} MB" if n >= 2**20 else f"{n:,} bytes"


def open_regular(path: str | os.PathLike, max_bytes: int | None = DEFAULT_MAX_FILE_BYTES
                 ) -> Any:
    """Opens a regular file for reading, refusing pipes, devices, sockets and huge files.

    The type is checked with stat before opening, then again on the opened file (the path
    may have changed in between). The open itself is non-blocking, so a named pipe put in
    the file's place cannot make it wait for a writer. Readers still must not read more
    than max_bytes (+ 1 to notice a file that grew).

    Args:
        path: The file.
        max_bytes: Larger files are refused; None for no limit.

    Returns:
        A binary file object (blocking reads).

    Raises:
        ImageError: Not a regular file, or too large (the reason says which).
        OSError: The file cannot be opened (missing, a folder, permissions).
    """
    mode = os.stat(path).st_mode
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(21, "Is a directory", str(path))
    if not stat.S_ISREG(mode):
        raise ImageError(NOT_REGULAR_FILE)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ImageError(NOT_REGULAR_FILE)
        if max_bytes is not None and info.st_size > max_bytes:
            raise ImageError(
                f"too large a file ({_size_text(info.st_size)}, over the limit of "
                f"{_size_text(max_bytes)}); no image needs that much, so it was not read"
            )
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


@contextmanager
def _opened(source: ImageSource) -> Iterator[tuple[Image.Image, bool]]:
    """Yields (lazily opened image, whether we own it); closes what it opened."""
    owns_fp = True
    if isinstance(source, Image.Image):
        yield source, False
        return
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise _NotAnImage("empty file (0 bytes); re-export or remove it")
        fp: Any = io.BytesIO(data)
        head = data[:16]
    elif isinstance(source, (str, os.PathLike)):
        path = source
        try:
            fp = open_regular(path)
        except FileNotFoundError as exc:
            raise ImageError(f"file not found: {path}") from exc
        except IsADirectoryError as exc:
            raise ImageError(f"{path} is a folder, not an image file") from exc
        except PermissionError as exc:
            raise ImageError(f"cannot read {path}: permission denied") from exc
        except OSError as exc:
            raise ImageError(f"cannot read {path}: {exc.strerror or exc}") from exc
        if os.fstat(fp.fileno()).st_size == 0:
            fp.close()
            raise _NotAnImage("empty file (0 bytes); re-export or remove it")
        head = fp.read(16)
        fp.seek(0)
    elif hasattr(source, "read") and hasattr(source, "seek"):  # a caller's open binary file
        fp = source
        owns_fp = False
        head = fp.read(16)
        fp.seek(0)
    else:
        raise ImageError(
            f"cannot read an image from a {type(source).__name__}; "
            "pass a file path, the file's bytes or a PIL image"
        )
    try:
        try:
            img = Image.open(fp, formats=SUPPORTED_FORMATS)
        except UnidentifiedImageError as exc:
            raise _unidentified(head) from exc
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            # Pillow's own hard guard fires before the size is known to us.
            raise ImageError(
                f"too large: {exc}. Use a smaller image (downscale it) or leave it out"
            ) from exc
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise _unidentified(head, str(exc) or type(exc).__name__) from exc
        try:
            yield img, True
        finally:
            img.close()
    finally:
        if owns_fp:
            fp.close()


def _check_size(img: Image.Image, max_pixels: int | None, min_side: int) -> None:
    """Rejects images outside the size limits from the header alone, before decoding."""
    width, height = img.size
    if max_pixels is not None and width * height > max_pixels:
        raise ImageError(
            f"too large: {width}x{height} = {width * height:,} pixels, over the limit of "
            f"{max_pixels:,}; downscale it, or raise the pixel limit if it is a real photo"
        )
    if min(width, height) < min_side:
        raise ImageError(
            f"too small: {width}x{height} pixels; each side must be at least {min_side} "
            "pixels, so use a larger image"
        )


def _decode(img: Image.Image) -> None:
    """Decodes all pixel data now, turning decoder failures into ImageError."""
    try:
        img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"too large: {exc}. Use a smaller image") from exc
    except MemoryError as exc:
        raise ImageError("too large to decode in the memory available; downscale it") from exc
    except (OSError, SyntaxError, ValueError, EOFError, IndexError) as exc:
        raise ImageError(
            f"truncated or damaged image ({exc}); re-export or remove it"
        ) from exc


def _upright(img: Image.Image, owned: bool) -> Image.Image:
    """Applies the EXIF orientation; a broken EXIF block leaves the image as stored."""
    try:
        if owned:
            ImageOps.exif_transpose(img, in_place=True)
            return img
        return ImageOps.exif_transpose(img)
    except Exception as exc:
        log.debug("EXIF orientation ignored: %s", exc)
        return img


def _high_bit_to_l(img: Image.Image) -> Image.Image:
    """Scales 16-bit, 32-bit integer and float grey images to 8 bits (Pillow would clip)."""
    arr = np.asarray(img)
    if img.mode.startswith("I;16"):
        scaled = arr.astype(np.float32) / 257.0
    else:
        values = arr.astype(np.float64)
        lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        if img.mode == "F" and lo >= 0.0 and hi <= 1.0:
            scaled = values * 255.0
        elif lo >= 0.0 and hi <= 65535.0 and img.mode == "I":
            scaled = values / 257.0  # 16-bit data stored in a 32-bit mode (older PNG path)
        elif lo >= 0.0 and hi <= 255.0:
            scaled = values
        else:
            scaled = (values - lo) * (255.0 / (hi - lo)) if hi > lo else values * 0.0
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "L")


_SRGB_PROFILE = ImageCms.createProfile("sRGB")


@functools.lru_cache(maxsize=8)
def _srgb_transform(icc: bytes, mode: str) -> ImageCms.ImageCmsTransform | None:
    """A transform from an embedded profile to sRGB, or None when none is needed or possible.

    Phones tag photos Display P3, cameras Adobe RGB, print JPEGs a CMYK profile: without the
    conversion their colours come out dull or shifted. Kept for a few profiles, since a
    dataset's photos mostly share one and building a transform costs milliseconds.
    """
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        space = profile.profile.xcolor_space.strip()
        if (mode, space) not in (("RGB", "RGB"), ("CMYK", "CMYK")):
            return None  # a profile that does not describe these pixels is ignored
        if space == "RGB" and "srgb" in profile.profile.profile_description.lower():
            return None  # already sRGB: spare the transform
        return ImageCms.buildTransform(profile, _SRGB_PROFILE, mode, "RGB")
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError) as exc:
        log.debug("Colour profile ignored: %s", exc)
        return None


def _icc_of(img: Image.Image) -> bytes | None:
    icc = img.info.get("icc_profile")
    return bytes(icc) if icc else None


def _to_srgb(pixels: Image.Image, icc: bytes | None) -> Image.Image:
    """RGB (or CMYK) pixels described by `icc` as sRGB RGB; unchanged without a usable profile."""
    transform = _srgb_transform(icc, pixels.mode) if icc else None
    if transform is None:
        return pixels if pixels.mode == "RGB" else pixels.convert("RGB")
    return ImageCms.applyTransform(pixels, transform)


def _to_rgb(img: Image.Image, icc: bytes | None = None) -> Image.Image:
    """Any Pillow mode -> sRGB RGB; transparency is composited on white.

    An embedded colour profile of the image's own kind (RGB, or CMYK) is converted to sRGB,
    the space ImageNet photos, and so the pretrained bases, are in.
    """
    mode = img.mode
    if mode not in _RGB_FAMILY_MODES and mode != "CMYK":
        icc = None  # a grey image's profile (or a mismatched one) changes no colour here
    if mode in _HIGH_BIT_MODES:
        return _high_bit_to_l(img).convert("RGB")
    if mode in _ALPHA_MODES or "transparency" in img.info:
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, _WHITE)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return _to_srgb(background, icc)
    # CMYK goes straight from ink to screen through its profile, not via a naive RGB.
    return _to_srgb(img if mode == "CMYK" else img.convert("RGB"), icc)


def _check_limits(max_pixels: int | None, min_side: int) -> None:
    if max_pixels is not None and max_pixels < 1:
        raise ConfigError(f"max_pixels must be at least 1; got {max_pixels}.")
    if min_side < 1:
        raise ConfigError(f"min_side must be at least 1; got {min_side}.")


def _decode_rgb(
    source: ImageSource, max_pixels: int | None, min_side: int, *, colour_profile: bool = True,
) -> tuple[Image.Image, str]:
    """open_rgb's work, also returning the format found in the content.

    colour_profile=False skips the conversion to sRGB, for callers that need only the size.
    """
    _check_limits(max_pixels, min_side)
    with _opened(source) as (img, owned):
        fmt = img.format or "UNKNOWN"
        _check_size(img, max_pixels, min_side)
        _decode(img)
        icc = _icc_of(img) if colour_profile else None
        # _to_rgb always returns a new image, so the result never shares the file's.
        return _to_rgb(_upright(img, owned), icc), fmt


def open_rgb(
    source: ImageSource, *, max_pixels: int | None = DEFAULT_MAX_PIXELS,
    min_side: int = DEFAULT_MIN_SIDE,
) -> Image.Image:
    """Decodes an image the one way the whole studio does: upright, sRGB, alpha on white.

    The format is judged by content, not by the file name. Sizes are checked from the header
    before any pixel is decoded, so decompression bombs cost nothing.

    Args:
        source: A file path, the file's bytes, or a PIL image (not modified).
        max_pixels: Largest accepted width x height; None for no limit of ours (Pillow's own
            hard guard still applies).
        min_side: Smallest accepted width or height.

    Returns:
        A fully decoded RGB image, detached from any file.

    Raises:
        ImageError: With a human reason (empty, not an image, damaged, too small, too large).
    """
    return _decode_rgb(source, max_pixels, min_side)[0]


def load_resized(
    source: ImageSource, size: int, *, max_pixels: int | None = None, min_side: int = 1,
) -> np.ndarray:
    """Decodes with open_rgb's rules and squashes the whole image to size x size.

    JPEGs are decoded at a reduced DCT scale first (Image.draft, never below size), then
    resized with Pillow's antialiased bilinear filter. Training, features and prediction
    all call this, so they see identical pixels.

    Args:
        source: A file path, the file's bytes, or a PIL image.
        size: Output width and height in pixels.
        max_pixels: Largest accepted width x height; None (default) because ingestion has
            already applied the studio's limit.
        min_side: Smallest accepted width or height (default 1: any image).

    Returns:
        uint8 array of shape (size, size, 3).

    Raises:
        ImageError: When the image cannot be decoded.
    """
    if int(size) < 1:
        raise ConfigError(f"Image size must be a positive number of pixels; got {size}.")
    _check_limits(max_pixels, min_side)
    with _opened(source) as (img, owned):
        _check_size(img, max_pixels, min_side)
        if owned and img.format in _DRAFT_FORMATS:
            # Draft works on stored (pre-EXIF) axes; asking for size x size keeps both
            # sides >= size whatever the orientation, so the squash below is unaffected.
            img.draft("RGB", (size, size))
        _decode(img)
        icc = _icc_of(img)
        upright = _upright(img, owned)
        if upright.mode == "RGB" and icc:
            # A colour transform works pixel by pixel: on the resized image it costs far less.
            resized = upright.resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(_to_srgb(resized, icc), dtype=np.uint8)
        rgb = _to_rgb(upright, icc)
        resized = rgb.resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(resized, dtype=np.uint8)


def probe_file(
    path: str, *, max_pixels: int | None = DEFAULT_MAX_PIXELS, min_side: int = DEFAULT_MIN_SIDE,
    max_bytes: int | None = DEFAULT_MAX_FILE_BYTES,
) -> ProbeResult:
    """Checks one file completely (hash, full decode) without keeping any pixels.

    Runs in ingestion's worker processes, so it returns only small picklable data and
    never raises for a bad file.

    Args:
        path: File to check.
        max_pixels: Largest accepted width x height.
        min_side: Smallest accepted width or height.
        max_bytes: Larger files are rejected unread (see open_regular); None: no limit.

    Returns:
        A ProbeResult: info set when usable, else reason set.
    """
    try:
        fh = open_regular(path, max_bytes)
    except ImageError as exc:
        return ProbeResult(path, "", None, str(exc), False)
    except OSError as exc:
        return ProbeResult(path, "", None, f"cannot read the file: {exc.strerror}", False)
    with fh:
        return _probe_open_file(path, fh, max_pixels, min_side, max_bytes)


def _probe_open_file(path: str, fh: Any, max_pixels: int | None, min_side: int,
                     max_bytes: int | None) -> ProbeResult:
    """probe_file on an opened file: hashed in blocks, then decoded from the file itself.

    The file's bytes are never held whole in memory; at most max_bytes are read.
    """
    digest = hashlib.sha256()
    size = 0
    try:
        while block := fh.read(1 << 20):
            size += len(block)
            if max_bytes is not None and size > max_bytes:
                return ProbeResult(path, "", None, f"too large a file (it grew past the limit "
                                   f"of {_size_text(max_bytes)} while being read)", False)
            digest.update(block)
        fh.seek(0)
    except OSError as exc:
        return ProbeResult(path, "", None, f"cannot read the file: {exc.strerror}", False)
    sha = digest.hexdigest()
    if size == 0:
        return ProbeResult(path, sha, None, "empty file (0 bytes); re-export or remove it",
                           False)
    try:
        # Checking needs the upright size, not the colours.
        rgb, fmt = _decode_rgb(fh, max_pixels, min_side, colour_profile=False)
    except _NotAnImage as exc:
        return ProbeResult(path, sha, None, str(exc), False)
    except ImageError as exc:
        return ProbeResult(path, sha, None, str(exc), True)
    except MemoryError:
        return ProbeResult(path, sha, None, "too large to decode in memory", True)
    return ProbeResult(path, sha, ImageInfo(rgb.width, rgb.height, fmt), "", True)


def quiet_worker() -> None:
    """Initialiser of ingestion's worker processes: silences Pillow's bomb warning.

    Too-large images are reported as rejections already. It lives here, not in datasets,
    so that worker processes import only this light module.
    """
    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
