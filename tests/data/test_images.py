"""core.data.images: formats by content, colour modes, EXIF, rejections, resizing."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.data import images
from core.errors import ConfigError, ImageError

RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


def encode(img: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **options)
    return buf.getvalue()


def close(pixel, expected, tol: int = 6) -> bool:
    return all(abs(int(a) - int(b)) <= tol for a, b in zip(pixel, expected))


def noisy(size=(64, 48), seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8), "RGB")


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG structure claiming the given size, with (almost) no pixel data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + \
        chunk(b"IEND", b"")


# --- formats, judged by content ---------------------------------------------------------

FORMATS = [
    ("JPEG", {"quality": 95}, "JPEG"),
    ("PNG", {}, "PNG"),
    ("BMP", {}, "BMP"),
    ("GIF", {}, "GIF"),
    ("WEBP", {"lossless": True}, "WEBP"),
    ("TIFF", {}, "TIFF"),
]


@pytest.mark.parametrize(("fmt", "options", "expected"), FORMATS)
@pytest.mark.parametrize("misleading_name", ["photo.txt", "PHOTO.JPG", "noextension"])
def test_formats_are_judged_by_content_not_name(tmp_path, fmt, options, expected,
                                                misleading_name):
    path = tmp_path / misleading_name
    path.write_bytes(encode(Image.new("RGB", (32, 24), RED), fmt, **options))
    rgb = images.open_rgb(path)
    assert rgb.mode == "RGB" and rgb.size == (32, 24)
    assert close(rgb.getpixel((5, 5)), RED)
    probe = images.probe_file(str(path))
    assert probe.ok and probe.info == images.ImageInfo(32, 24, expected)


def test_gif_uses_first_frame():
    red = Image.new("P", (20, 20), 0)
    red.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    blue = red.copy()
    blue.paste(1, (0, 0, 20, 20))
    data = encode(red, "GIF", save_all=True, append_images=[blue])
    assert Image.open(io.BytesIO(data)).n_frames == 2
    assert images.open_rgb(data).getpixel((3, 3)) == RED


def test_mpo_from_phones_decodes_as_first_image(tmp_path):
    path = tmp_path / "phone.jpg"
    path.write_bytes(encode(Image.new("RGB", (32, 32), RED), "MPO", save_all=True,
                            append_images=[Image.new("RGB", (32, 32), BLUE)]))
    assert close(images.open_rgb(path).getpixel((4, 4)), RED)
    assert images.probe_file(str(path)).info == images.ImageInfo(32, 32, "MPO")
    assert images.load_resized(path, 8).shape == (8, 8, 3)


def test_multipage_tiff_uses_first_page():
    data = encode(Image.new("RGB", (20, 20), RED), "TIFF", save_all=True,
                  append_images=[Image.new("RGB", (20, 20), BLUE)])
    assert images.open_rgb(data).getpixel((1, 1)) == RED


# --- colour modes -----------------------------------------------------------------------

def test_grey_l_becomes_rgb():
    rgb = images.open_rgb(encode(Image.new("L", (20, 20), 77), "PNG"))
    assert rgb.mode == "RGB" and rgb.getpixel((0, 0)) == (77, 77, 77)


def test_bilevel_1_becomes_rgb():
    rgb = images.open_rgb(encode(Image.new("1", (20, 20), 1), "PNG"))
    assert rgb.getpixel((0, 0)) == WHITE


def test_la_alpha_is_composited_on_white():
    img = Image.new("LA", (20, 20), (0, 0))  # black, fully transparent
    img.paste((0, 255), (0, 0, 10, 20))  # left half opaque black
    rgb = images.open_rgb(encode(img, "PNG"))
    assert rgb.getpixel((2, 2)) == (0, 0, 0)
    assert rgb.getpixel((15, 2)) == WHITE


def test_palette_without_transparency():
    img = Image.new("P", (20, 20), 1)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    assert images.open_rgb(encode(img, "PNG")).getpixel((3, 3)) == RED


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_transparency_becomes_white(fmt):
    img = Image.new("P", (20, 20), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.paste(1, (0, 0, 10, 20))  # left half red, right half index 0 (transparent black)
    data = encode(img, fmt, transparency=0)
    assert "transparency" in Image.open(io.BytesIO(data)).info
    rgb = images.open_rgb(data)
    assert rgb.getpixel((2, 2)) == RED
    assert rgb.getpixel((15, 2)) == WHITE  # not black


def test_rgba_alpha_is_blended_on_white():
    img = Image.new("RGBA", (20, 20), (255, 0, 0, 0))
    img.paste((255, 0, 0, 255), (0, 0, 10, 20))
    img.paste((0, 0, 0, 128), (10, 0, 20, 20))
    rgb = images.open_rgb(encode(img, "PNG"))
    assert rgb.getpixel((2, 2)) == RED
    assert close(rgb.getpixel((15, 2)), (127, 127, 127), tol=2)  # half black over white


def test_fully_transparent_rgba_webp_is_white():
    data = encode(Image.new("RGBA", (20, 20), (0, 0, 0, 0)), "WEBP", lossless=True)
    assert images.open_rgb(data).getpixel((5, 5)) == WHITE


@pytest.mark.parametrize("fmt", ["JPEG", "TIFF"])
def test_cmyk_becomes_rgb(fmt):
    data = encode(Image.new("CMYK", (20, 20), (0, 255, 255, 0)), fmt)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    assert close(images.open_rgb(data).getpixel((5, 5)), RED)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16_bit_grey_is_scaled_not_clipped(fmt):
    values = np.array([[0, 1000, 32768, 65535]] * 20, dtype=np.uint16).repeat(5, axis=1)
    data = encode(Image.fromarray(values), fmt)
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    rgb = np.asarray(images.open_rgb(data))
    assert rgb[0, [0, 5, 10, 15], 0].tolist() == [0, 4, 128, 255]
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()


# --- EXIF orientation -------------------------------------------------------------------

def sideways_photo(fmt: str = "JPEG") -> bytes:
    """A 40x20 photo stored sideways (left red, right blue) whose EXIF says rotate 90 CW."""
    img = Image.new("RGB", (40, 20), RED)
    img.paste(BLUE, (20, 0, 40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(img, fmt, exif=exif, **({"quality": 95} if fmt == "JPEG" else {}))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_exif_orientation_is_applied(fmt):
    rgb = images.open_rgb(sideways_photo(fmt))
    assert rgb.size == (20, 40)  # upright: tall
    assert close(rgb.getpixel((10, 3)), RED) and close(rgb.getpixel((10, 36)), BLUE)


def test_exif_orientation_applied_in_load_resized_with_draft():
    big = Image.new("RGB", (800, 400), RED)
    big.paste(BLUE, (400, 0, 800, 400))
    exif = Image.Exif()
    exif[0x0112] = 6
    arr = images.load_resized(encode(big, "JPEG", exif=exif, quality=95), 16)
    assert close(arr[2, 8], RED) and close(arr[13, 8], BLUE)


def test_pil_image_input_is_not_modified():
    src = Image.open(io.BytesIO(sideways_photo()))
    before = (src.mode, src.size, src.getexif().get(0x0112))
    rgb = images.open_rgb(src)
    assert rgb.size == (20, 40) and rgb is not src
    assert (src.mode, src.size, src.getexif().get(0x0112)) == before
    rgba = Image.new("RGBA", (20, 20), (0, 0, 0, 0))
    assert images.open_rgb(rgba).getpixel((0, 0)) == WHITE and rgba.mode == "RGBA"


def test_broken_exif_block_does_not_reject_a_good_image():
    data = bytearray(sideways_photo())
    pos = data.find(b"Exif\x00\x00")
    data[pos + 6:pos + 14] = b"XXXXXXXX"  # wreck the TIFF header inside the EXIF block
    rgb = images.open_rgb(bytes(data))
    assert rgb.mode == "RGB" and rgb.size in {(40, 20), (20, 40)}


# --- rejections, each with a human reason -------------------------------------------------

def reason_for(source, **limits) -> str:
    with pytest.raises(ImageError) as info:
        images.open_rgb(source, **limits)
    return str(info.value)


def test_zero_byte_file_and_bytes(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    assert "empty file (0 bytes)" in reason_for(empty)
    assert "empty file (0 bytes)" in reason_for(b"")
    probe = images.probe_file(str(empty))
    assert not probe.ok and "empty" in probe.reason and not probe.is_image


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_image(fmt):
    data = encode(noisy((200, 150)), fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    reason = reason_for(data[: len(data) // 2])
    assert "truncated or damaged" in reason and "remove" in reason


def test_damaged_header_is_named_as_damaged_image_not_text():
    reason = reason_for(b"\xff\xd8\xff\xe0" + b"\x00garbage" * 10)
    assert "damaged JPEG" in reason


def test_text_and_random_bytes_are_not_images(tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("these are my notes, not a photo\n" * 10)
    assert reason_for(text).startswith("not an image")
    rng = np.random.default_rng(1)
    assert reason_for(rng.integers(0, 256, 5000, dtype=np.uint8).tobytes()).startswith(
        "not an image")
    probe = images.probe_file(str(text))
    assert not probe.ok and not probe.is_image and len(probe.sha256) == 64


def test_heic_gets_an_export_hint():
    fake_heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 100
    assert "HEIC" in reason_for(fake_heic) and "JPEG" in reason_for(fake_heic)


def test_too_small_uses_min_side():
    assert "too small" in reason_for(encode(Image.new("RGB", (10, 100)), "PNG"))
    assert images.open_rgb(encode(Image.new("RGB", (16, 16)), "PNG")).size == (16, 16)
    assert "at least 32" in reason_for(encode(Image.new("RGB", (20, 100)), "PNG"), min_side=32)


def test_too_large_is_checked_from_the_header_before_decoding():
    # 10,000 x 10,000 claimed with no pixel data: decoding would fail as truncated, so a
    # "too large" reason proves the size was judged from the header alone.
    with pytest.warns(Image.DecompressionBombWarning):
        reason = reason_for(png_header_only(10_000, 10_000))
    assert reason.startswith("too large") and "100,000,000" in reason
    assert "truncated" in reason_for(png_header_only(300, 300))  # what decoding would say
    assert reason_for(encode(Image.new("RGB", (40, 40)), "PNG"), max_pixels=1000).startswith(
        "too large")


def test_decompression_bomb_beyond_pillows_guard_is_rejected_not_raised():
    reason = reason_for(png_header_only(20_000, 20_000), max_pixels=None)
    assert reason.startswith("too large")


def test_missing_file_and_folder(tmp_path):
    assert "not found" in reason_for(tmp_path / "missing.png")
    assert "folder" in reason_for(tmp_path)


def test_unsupported_source_type():
    with pytest.raises(ImageError, match="file path"):
        images.open_rgb(12345)  # type: ignore[arg-type]


# --- load_resized: the one resize rule ------------------------------------------------------

def test_load_resized_squashes_whole_image_without_crop():
    img = Image.new("RGB", (100, 50), RED)
    img.paste(BLUE, (50, 0, 100, 50))
    arr = images.load_resized(encode(img, "PNG"), 32)
    assert arr.shape == (32, 32, 3) and arr.dtype == np.uint8
    assert tuple(arr[16, 2]) == RED and tuple(arr[16, 29]) == BLUE  # both halves kept


def test_load_resized_matches_pil_bilinear_on_png(tmp_path):
    img = noisy((90, 70), seed=3)
    path = tmp_path / "a.png"
    img.save(path)
    expected = np.asarray(img.resize((24, 24), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(images.load_resized(path, 24), expected)


def test_load_resized_jpeg_draft_stays_close_to_full_decode():
    yy, xx = np.mgrid[0:600, 0:800]
    smooth = np.stack([xx * 255 // 800, yy * 255 // 600, (xx + yy) * 255 // 1400], -1)
    data = encode(Image.fromarray(smooth.astype(np.uint8)), "JPEG", quality=92)
    drafted = images.load_resized(data, 64).astype(int)
    full = np.asarray(images.open_rgb(data).resize((64, 64), Image.Resampling.BILINEAR))
    assert np.abs(drafted - full.astype(int)).mean() < 3.0


def test_load_resized_accepts_small_images_by_default_and_rejects_bad_size():
    assert images.load_resized(encode(Image.new("RGB", (4, 4), RED), "PNG"), 8).shape == \
        (8, 8, 3)
    with pytest.raises(ConfigError):
        images.load_resized(encode(Image.new("RGB", (4, 4)), "PNG"), 0)


def test_load_resized_is_the_same_for_path_bytes_and_pil(tmp_path):
    data = sideways_photo()
    path = tmp_path / "p.jpg"
    path.write_bytes(data)
    from_path = images.load_resized(path, 20)
    np.testing.assert_array_equal(from_path, images.load_resized(data, 20))
    np.testing.assert_array_equal(from_path, images.load_resized(str(path), 20))


def test_probe_file_reports_upright_size_and_hash(tmp_path):
    path = tmp_path / "side.jpg"
    data = sideways_photo()
    path.write_bytes(data)
    probe = images.probe_file(str(path))
    import hashlib

    assert probe.ok and probe.info == images.ImageInfo(20, 40, "JPEG")
    assert probe.sha256 == hashlib.sha256(data).hexdigest()


def test_probe_file_never_raises_for_unreadable(tmp_path):
    probe = images.probe_file(str(tmp_path / "gone.png"))
    assert not probe.ok and "cannot read" in probe.reason


def test_bad_limits_raise_config_error():
    with pytest.raises(ConfigError):
        images.open_rgb(b"x", min_side=0)
    with pytest.raises(ConfigError):
        images.open_rgb(b"x", max_pixels=0)


def test_importing_core_images_does_not_import_tensorflow():
    import subprocess
    import sys

    code = "import sys, core.data.images; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[2], check=True)
    assert out.stdout.strip() == "False"


# ----------------------------------------------------------------------------- colour profiles

# sRGB's primaries adapted to D50, as an ICC matrix/TRC profile stores them.
_SRGB_RED, _SRGB_GREEN, _SRGB_BLUE = (0.4361, 0.2225, 0.0139), (0.3851, 0.7169, 0.0971), \
    (0.1431, 0.0606, 0.7141)


def rgb_profile(red, green, blue, description: str = "test primaries") -> bytes:
    """A minimal ICC v2 RGB display profile: these primaries, gamma 2.2, D50 white."""

    def fixed(v: float) -> bytes:
        return struct.pack(">i", round(v * 65536))

    def xyz(values) -> bytes:
        return b"XYZ " + b"\0" * 4 + b"".join(fixed(v) for v in values)

    text = description.encode("ascii") + b"\0"
    desc = (b"desc" + b"\0" * 4 + struct.pack(">I", len(text)) + text
            + b"\0" * 8 + b"\0" * 3 + b"\0" * 67)
    curve = b"curv" + b"\0" * 4 + struct.pack(">IH", 1, 0x0233) + b"\0\0"
    tags = [(b"desc", desc), (b"wtpt", xyz((0.9642, 1.0, 0.8249))), (b"rXYZ", xyz(red)),
            (b"gXYZ", xyz(green)), (b"bXYZ", xyz(blue)), (b"rTRC", curve), (b"gTRC", curve),
            (b"bTRC", curve), (b"cprt", b"text" + b"\0" * 4 + b"none\0\0\0\0")]
    offset = 128 + 4 + 12 * len(tags)
    table, body = b"", b""
    for signature, data in tags:
        data += b"\0" * (-len(data) % 4)
        table += signature + struct.pack(">II", offset + len(body), len(data))
        body += data
    size = offset + len(body)
    header = (struct.pack(">I", size) + b"\0" * 4 + struct.pack(">I", 0x02100000) + b"mntr"
              + b"RGB " + b"XYZ " + b"\0" * 12 + b"acsp" + b"\0" * 24
              + struct.pack(">I", 0) + fixed(0.9642) + fixed(1.0) + fixed(0.8249)
              + b"\0" * 48)
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + body


# Red and green swapped: a pixel stored as pure red means sRGB's pure green.
SWAPPED = rgb_profile(_SRGB_GREEN, _SRGB_RED, _SRGB_BLUE)
GREEN = (0, 255, 0)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF"])
def test_embedded_colour_profile_is_converted_to_srgb(fmt):
    data = encode(Image.new("RGB", (40, 30), RED), fmt, icc_profile=SWAPPED)
    assert Image.open(io.BytesIO(data)).info.get("icc_profile")
    assert close(images.open_rgb(data).getpixel((5, 5)), GREEN, tol=12)
    assert close(images.load_resized(data, 16)[4, 4], GREEN, tol=12)


def test_colour_profile_survives_exif_rotation_and_alpha():
    img = Image.new("RGBA", (40, 20), RED + (255,))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees to be upright
    data = encode(img, "PNG", icc_profile=SWAPPED, exif=exif)
    out = images.open_rgb(data)
    assert out.size == (20, 40)
    assert close(out.getpixel((5, 5)), GREEN, tol=12)


def test_srgb_profile_and_unusable_profiles_leave_pixels_alone():
    srgb = rgb_profile(_SRGB_RED, _SRGB_GREEN, _SRGB_BLUE, "sRGB IEC61966-2.1")
    colour = (200, 120, 40)
    for icc in (srgb, b"not a colour profile", SWAPPED[:60]):
        data = encode(Image.new("RGB", (30, 30), colour), "PNG", icc_profile=icc)
        assert close(images.open_rgb(data).getpixel((3, 3)), colour, tol=0), icc[:20]
        assert close(images.load_resized(data, 8)[2, 2], colour, tol=0), icc[:20]


def test_rgb_profile_on_a_grey_or_cmyk_image_is_ignored():
    grey = encode(Image.new("L", (30, 30), 90), "PNG", icc_profile=SWAPPED)
    assert close(images.open_rgb(grey).getpixel((3, 3)), (90, 90, 90), tol=0)
    cmyk = encode(Image.new("CMYK", (20, 20), (0, 255, 255, 0)), "JPEG", icc_profile=SWAPPED)
    assert close(images.open_rgb(cmyk).getpixel((5, 5)), RED)


def test_pixels_that_a_decoder_change_alters_are_not_taken_from_old_caches():
    """The feature cache's folder names the decoder version (core.features.extraction reads it)."""
    assert images.DECODER_VERSION >= 2


def test_probe_streams_the_file_instead_of_holding_it(tmp_path):
    """Hash in blocks, decode from the file: memory does not grow with the file (issue 20 #5)."""
    import hashlib
    import tracemalloc

    data = encode(noisy((64, 48)), "PNG") + b"\0" * (24 * 2**20)  # trailing bytes, still a PNG
    path = tmp_path / "padded.png"
    path.write_bytes(data)
    tracemalloc.start()
    try:
        probe = images.probe_file(str(path))
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert probe.ok and (probe.info.width, probe.info.height) == (64, 48)
    assert probe.sha256 == hashlib.sha256(data).hexdigest()
    assert peak < 8 * 2**20, f"peak traced memory {peak / 2**20:.1f} MB for a 24 MB file"
