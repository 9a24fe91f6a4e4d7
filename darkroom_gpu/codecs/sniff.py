"""Recognise an image format from its first bytes, never from a file name or a header."""

from __future__ import annotations

from enum import StrEnum
from typing import Final

__all__ = ("MEDIA_TYPES", "ImageFormat", "sniff")


class ImageFormat(StrEnum):
    """Image formats the server recognises by their magic bytes."""

    JPEG = "jpeg"
    PNG = "png"
    GIF = "gif"
    WEBP = "webp"
    AVIF = "avif"
    HEIF = "heif"
    TIFF = "tiff"
    BMP = "bmp"


MEDIA_TYPES: Final[dict[str, str]] = {
    "jpeg": "image/jpeg",
    "png": "image/png",
    "gif": "image/gif",
    "webp": "image/webp",
    "avif": "image/avif",
    "heif": "image/heif",
    "tiff": "image/tiff",
    "bmp": "image/bmp",
}

_AVIF_BRANDS: Final = (b"avif", b"avis")
_HEIF_BRANDS: Final = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1")


def sniff(data: bytes) -> ImageFormat | None:
    """Return the image format that `data` starts like, or ``None`` when it is no known image."""
    if data.startswith(b"\xff\xd8\xff"):
        return ImageFormat.JPEG
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return ImageFormat.PNG
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return ImageFormat.GIF
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ImageFormat.WEBP
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return ImageFormat.TIFF
    if data[:2] == b"BM" and len(data) >= 26:
        return ImageFormat.BMP
    if data[4:8] == b"ftyp":
        return _sniff_iso_brand(data)
    return None


def _sniff_iso_brand(data: bytes) -> ImageFormat | None:
    box_size = int.from_bytes(data[:4], "big")
    brands = [data[8:12]] + [
        data[offset : offset + 4] for offset in range(16, min(box_size, len(data), 64), 4)
    ]
    if any(brand in _AVIF_BRANDS for brand in brands):
        return ImageFormat.AVIF
    if any(brand in _HEIF_BRANDS for brand in brands):
        return ImageFormat.HEIF
    return None
