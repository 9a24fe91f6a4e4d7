"""Image codecs: sniff the type from magic bytes, probe the header, decode and encode with Pillow.

Tensors here are ``(C, H, W)`` uint8 in [0, 255] with C = 3 (RGB) or 4 (RGBA, straight alpha).
The type of a source is decided by its first bytes only, never by a file name or a
``Content-Type`` header.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

import numpy as np
import torch
from PIL import Image, ImageFile, UnidentifiedImageError, features

from darkroom_gpu.errors import UnprocessableImageError, UnsupportedMediaTypeError
from darkroom_gpu.geometry import Size
from darkroom_gpu.options import OutputFormat

__all__ = (
    "DecodedImage",
    "ImageFormat",
    "ImageInfo",
    "MEDIA_TYPES",
    "decode",
    "default_quality",
    "encode",
    "encodable_formats",
    "probe",
    "sniff",
)

# The server enforces its own pixel limit before decoding, so Pillow's global bomb check (a
# warning at 89 MP, an error at twice that) would only reject images a source allows.
Image.MAX_IMAGE_PIXELS = None
# Truncated files must fail as corrupt rather than decode with a grey bottom half.
ImageFile.LOAD_TRUNCATED_IMAGES = False

EXIF_ORIENTATION_TAG: Final = 0x0112
# Decode JPEGs at a reduced DCT scale only down to twice the scaled size, so the final
# antialiased resize still has detail to average.
SHRINK_ON_LOAD_MARGIN: Final = 2

# Pillow raises these for corrupt or truncated input; each is a decoding failure, not a bug.
DECODE_ERRORS: Final = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    zlib.error,
    IndexError,
    KeyError,
    TypeError,
    Image.DecompressionBombError,
    UnidentifiedImageError,
)


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

_PILLOW_SAVE_NAMES: Final = {
    OutputFormat.JPEG: "JPEG",
    OutputFormat.PNG: "PNG",
    OutputFormat.WEBP: "WEBP",
    OutputFormat.AVIF: "AVIF",
    OutputFormat.GIF: "GIF",
}
_DEFAULT_QUALITY: Final = {
    OutputFormat.JPEG: 80,
    OutputFormat.WEBP: 80,
    OutputFormat.AVIF: 60,
}
_COMPRESS_QUALITY: Final = {
    OutputFormat.JPEG: 60,
    OutputFormat.WEBP: 60,
    OutputFormat.AVIF: 45,
}
# Modes Pillow opens 16-bit greyscale PNG and TIFF images in.
_SIXTEEN_BIT_GREY_MODES: Final = ("I;16", "I;16B", "I;16L")
_AVIF_BRANDS: Final = (b"avif", b"avis")
_HEIF_BRANDS: Final = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1")


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """What the header of a source image says, read without decoding pixels.

    Attributes:
        format: the sniffed format.
        size: width and height as stored, before EXIF orientation.
        orientation: EXIF orientation 1..8 (1 when absent or invalid).
        has_alpha: whether the image has an alpha channel or a transparent palette entry.
        frames: number of frames (1 for still images).
    """

    format: ImageFormat
    size: Size
    orientation: int
    has_alpha: bool
    frames: int


@dataclass(frozen=True, slots=True)
class DecodedImage:
    """Decoded pixels of the first frame, still in stored orientation.

    Attributes:
        pixels: ``(C, H, W)`` uint8 in [0, 255], C = 4 when the source has alpha, else 3.
        info: the header information of the source.
    """

    pixels: torch.Tensor
    info: ImageInfo


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


def probe(data: bytes) -> ImageInfo:
    """Read format, size, orientation, alpha and frame count from the header only.

    Raises:
        UnsupportedMediaTypeError: the bytes do not start like a known image format, or the
            format is known but this build cannot read it.
        UnprocessableImageError: the header is corrupt.
    """
    fmt = _require_format(data)
    with _open(data, fmt) as image:
        return _read_info(image, fmt)


def decode(data: bytes, *, max_pixels: int, draft_size: Size | None = None) -> DecodedImage:
    """Decode the first frame of `data` to an RGB or RGBA tensor.

    Args:
        data: the encoded source image.
        max_pixels: limit on stored width x height, checked before any pixel is decoded.
        draft_size: for JPEG, the smallest stored-orientation size the caller needs; the
            decoder may then decode at 1/2, 1/4 or 1/8 scale (shrink-on-load), staying at
            least twice that size. ``None`` decodes at full size.

    Returns:
        The pixels, ``(C, H, W)`` uint8, and the header information (whose size is the
        stored size before any shrink-on-load).

    Raises:
        UnsupportedMediaTypeError: the bytes are no image format the server reads.
        UnprocessableImageError: the image is corrupt, truncated or over `max_pixels`.
    """
    fmt = _require_format(data)
    with _open(data, fmt) as image:
        info = _read_info(image, fmt)
        pixel_count = info.size.width * info.size.height
        if pixel_count > max_pixels:
            raise UnprocessableImageError(
                f"image is {info.size.width}x{info.size.height} = {pixel_count} pixels, "
                f"over this source's limit of {max_pixels}"
            )

        if draft_size is not None and fmt is ImageFormat.JPEG:
            image.draft(
                image.mode,
                (
                    draft_size.width * SHRINK_ON_LOAD_MARGIN,
                    draft_size.height * SHRINK_ON_LOAD_MARGIN,
                ),
            )
        try:
            rgb = _convert_to_rgb(image, has_alpha=info.has_alpha)
        except DECODE_ERRORS as exc:
            raise UnprocessableImageError(f"{fmt.value} image is corrupt or truncated") from exc

    array = np.asarray(rgb)
    pixels = torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()
    return DecodedImage(pixels=pixels, info=info)


def encode(pixels: torch.Tensor, fmt: OutputFormat, quality: int) -> bytes:
    """Encode an RGB or RGBA image.

    Args:
        pixels: ``(C, H, W)`` uint8 in [0, 255], C = 3 or 4; JPEG takes only C = 3.
        fmt: output format; it must be in `encodable_formats`.
        quality: 1..100 for lossy formats; ignored by PNG and GIF.

    Returns:
        The encoded bytes.
    """
    array = pixels.permute(1, 2, 0).contiguous().cpu().numpy()
    image = Image.fromarray(array, mode="RGBA" if array.shape[2] == 4 else "RGB")
    buffer = io.BytesIO()
    if fmt is OutputFormat.JPEG:
        image.save(buffer, "JPEG", quality=quality)
    elif fmt is OutputFormat.PNG:
        image.save(buffer, "PNG")
    else:
        image.save(buffer, _PILLOW_SAVE_NAMES[fmt], quality=quality)
    return buffer.getvalue()


def encodable_formats() -> frozenset[OutputFormat]:
    """Return the output formats this build of Pillow can write."""
    formats = {OutputFormat.JPEG, OutputFormat.PNG, OutputFormat.GIF}
    if features.check("webp"):
        formats.add(OutputFormat.WEBP)
    if features.check("avif"):
        formats.add(OutputFormat.AVIF)
    return frozenset(formats)


def default_quality(fmt: OutputFormat, *, compress: bool) -> int:
    """Return the quality used when a request names none (lower with ``auto=compress``)."""
    table = _COMPRESS_QUALITY if compress else _DEFAULT_QUALITY
    return table.get(fmt, 100)


def _require_format(data: bytes) -> ImageFormat:
    fmt = sniff(data)
    if fmt is None:
        raise UnsupportedMediaTypeError("the source is not an image in a supported format")
    return fmt


def _open(data: bytes, fmt: ImageFormat) -> Image.Image:
    # Pillow warns about odd but decodable metadata (a corrupt EXIF block, say). A warning
    # alone is no failure: the server routes warnings to its log, and the pixels are checked
    # by decoding. warnings.catch_warnings() is not used because it is not thread-safe.
    try:
        return Image.open(io.BytesIO(data))
    except UnidentifiedImageError as exc:
        readable_by_plugin = fmt is ImageFormat.AVIF and features.check("avif")
        if fmt in (ImageFormat.HEIF, ImageFormat.AVIF) and not readable_by_plugin:
            raise UnsupportedMediaTypeError(f"{fmt.value} images are not supported") from exc
        raise UnprocessableImageError(f"{fmt.value} image is corrupt or truncated") from exc
    except DECODE_ERRORS as exc:
        raise UnprocessableImageError(f"{fmt.value} image is corrupt or truncated") from exc


def _convert_to_rgb(image: Image.Image, *, has_alpha: bool) -> Image.Image:
    mode = "RGBA" if has_alpha else "RGB"
    if image.mode not in _SIXTEEN_BIT_GREY_MODES:
        return image.convert(mode)

    # Pillow's convert() (checked with 13.0) clips 16-bit samples at 255 instead of scaling
    # them, which turns all but the darkest tones white, so keep the high byte of each sample.
    samples = np.asarray(image)
    rgb = Image.fromarray((samples >> 8).astype(np.uint8)).convert(mode)
    transparent = image.info.get("transparency")
    if has_alpha and isinstance(transparent, int):
        alpha = np.where(samples == transparent, 0, 255).astype(np.uint8)
        rgb.putalpha(Image.fromarray(alpha))
    return rgb


def _read_info(image: Image.Image, fmt: ImageFormat) -> ImageInfo:
    # Counting frames walks every TIFF directory and GIF frame header, where a crafted file
    # fails with the same assorted errors as a corrupt pixel stream.
    try:
        return _info(image, fmt)
    except DECODE_ERRORS as exc:
        raise UnprocessableImageError(f"{fmt.value} image has a corrupt header") from exc


def _info(image: Image.Image, fmt: ImageFormat) -> ImageInfo:
    try:
        # PngImageFile.getexif() decodes every pixel to reach an eXIf chunk stored after the
        # image data. That would bypass the pixel limit, and a failure there would leave Pillow
        # treating the image as loaded, so decode() would return black pixels. The base method
        # reads only the chunks before the image data.
        exif = Image.Image.getexif(image) if fmt is ImageFormat.PNG else image.getexif()
        orientation = int(exif.get(EXIF_ORIENTATION_TAG, 1))
    except DECODE_ERRORS:
        orientation = 1
    if not 1 <= orientation <= 8:
        orientation = 1

    width, height = image.size
    if width < 1 or height < 1:
        raise UnprocessableImageError(f"{fmt.value} image declares an empty size {width}x{height}")
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    frames = int(getattr(image, "n_frames", 1))
    return ImageInfo(
        format=fmt,
        size=Size(width=width, height=height),
        orientation=orientation,
        has_alpha=has_alpha,
        frames=frames,
    )
