"""Small datasets built in tests: images, folders and zips (shared by the ingestion tests)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from conftest import patterned_image

from core.data.datasets import ValidationReport


def img_bytes(cls: int = 0, var: int = 0, size: int = 32, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    patterned_image(cls, var, size).save(buf, fmt)
    return buf.getvalue()


def write_files(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def two_classes(n: int = 3, prefix: str = "") -> dict[str, bytes]:
    """n distinct images in each of the classes 'a' and 'b'."""
    return {f"{prefix}{c}/{i}.png": img_bytes(k, i) for k, c in enumerate("ab")
            for i in range(n)}


def zip_bytes(files: dict[str, bytes], *, raw: bool = False) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED if raw else zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def patch_names(data: bytes, replacements: dict[bytes, bytes]) -> bytes:
    """Swaps same-length placeholder name bytes for raw bytes, leaving the UTF-8 flag unset."""
    for placeholder, raw in replacements.items():
        assert len(placeholder) == len(raw)
        assert data.count(placeholder) >= 2  # local header + central directory, per entry
        data = data.replace(placeholder, raw)
    return data


def rejected(report: ValidationReport) -> dict[str, str]:
    return {item["file"]: item["reason"] for item in report.rejected}
