"""Open a source with Pillow and read its header: size, orientation, alpha, frames, profile."""

from __future__ import annotations

import io
import logging
import struct
import zlib
from dataclasses import dataclass
from typing import Final

from PIL import Image, ImageCms, ImageFile, UnidentifiedImageError, features

from darkroom_gpu.codecs.sniff import ImageFormat, sniff
from darkroom_gpu.errors import UnprocessableImageError, UnsupportedMediaTypeError
from darkroom_gpu.geometry import Size

__all__ = (
    "DECODE_ERRORS",
    "EXIF_ORIENTATION_TAG",
    "HEIF_READABLE",
    "ImageInfo",
    "check_pixel_limit",
    "open_image",
    "probe",
    "profile_description",
    "read_info",
    "require_format",
)

logger = logging.getLogger(__name__)

try:
    from pillow_heif import register_heif_opener
except ImportError:  # pragma: no cover - pillow-heif is a dependency, but HEIF stays optional
    HEIF_READABLE = False
else:
    # Thumbnails, depth maps and auxiliary images are never served, so they are not read.
    register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)
    HEIF_READABLE = True

# The server enforces its own pixel limit before decoding, so Pillow's global bomb check (a
# warning at 89 MP, an error at twice that) would only reject images a source allows.
Image.MAX_IMAGE_PIXELS = None
# Truncated files must fail as corrupt rather than decode with a grey bottom half.
ImageFile.LOAD_TRUNCATED_IMAGES = False

EXIF_ORIENTATION_TAG: Final = 0x0112

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


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """What the header of a source image says, read without decoding pixels.

    Attributes:
        format: the sniffed format.
        size: width and height as stored, before EXIF orientation. HEIF images are measured
            after the rotation and mirroring their container declares, which the decoder
            always applies.
        orientation: EXIF orientation 1..8 (1 when absent or invalid).
        has_alpha: whether the image has an alpha channel or a transparent palette entry.
        frames: number of frames (1 for still images).
        icc_profile: the embedded ICC profile as stored, or ``None``.
    """

    format: ImageFormat
    size: Size
    orientation: int
    has_alpha: bool
    frames: int
    icc_profile: bytes | None = None


def probe(data: bytes) -> ImageInfo:
    """Read format, size, orientation, alpha, frame count and profile from the header only.

    Raises:
        UnsupportedMediaTypeError: the bytes do not start like a known image format, or the
            format is known but this build cannot read it.
        UnprocessableImageError: the header is corrupt.
    """
    fmt = require_format(data)
    with open_image(data, fmt) as image:
        return read_info(image, fmt)


def profile_description(icc_profile: bytes) -> str | None:
    """Return the description an ICC profile gives itself, or ``None`` when it has none.

    A profile LittleCMS cannot parse also gives ``None``; decoding then ignores it too.
    """
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
        description = ImageCms.getProfileDescription(profile).strip()
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError) as exc:
        logger.warning("cannot read the embedded ICC profile's description: %s", exc)
        return None
    return description or None


def check_pixel_limit(info: ImageInfo, frames: int, max_pixels: int) -> None:
    """Reject a decode of `frames` frames whose summed pixel count is over `max_pixels`.

    Raises:
        UnprocessableImageError: width x height x frames is over `max_pixels`.
    """
    width, height = info.size.width, info.size.height
    pixel_count = width * height * frames
    if pixel_count <= max_pixels:
        return
    frame_text = f" x {frames} frames" if frames > 1 else ""
    raise UnprocessableImageError(
        f"image is {width}x{height}{frame_text} = {pixel_count} pixels, "
        f"over this source's limit of {max_pixels}"
    )


def require_format(data: bytes) -> ImageFormat:
    """Return the sniffed format of `data`.

    Raises:
        UnsupportedMediaTypeError: the bytes start like no supported image format.
    """
    fmt = sniff(data)
    if fmt is None:
        raise UnsupportedMediaTypeError("the source is not an image in a supported format")
    return fmt


def open_image(data: bytes, fmt: ImageFormat) -> Image.Image:
    """Open `data` with Pillow, reading only the header.

    Raises:
        UnsupportedMediaTypeError: `fmt` is HEIF or AVIF and this build has no decoder for it.
        UnprocessableImageError: Pillow cannot parse the header.
    """
    # Pillow warns about odd but decodable metadata (a corrupt EXIF block, say). A warning
    # alone is no failure: the server routes warnings to its log, and the pixels are checked
    # by decoding. warnings.catch_warnings() is not used because it is not thread-safe.
    try:
        return Image.open(io.BytesIO(data))
    except UnidentifiedImageError as exc:
        readable = {ImageFormat.AVIF: features.check("avif"), ImageFormat.HEIF: HEIF_READABLE}
        if not readable.get(fmt, True):
            raise UnsupportedMediaTypeError(f"{fmt.value} images are not supported") from exc
        raise UnprocessableImageError(f"{fmt.value} image is corrupt or truncated") from exc
    except DECODE_ERRORS as exc:
        raise UnprocessableImageError(f"{fmt.value} image is corrupt or truncated") from exc


def read_info(image: Image.Image, fmt: ImageFormat) -> ImageInfo:
    """Read the header fields of an opened image.

    Raises:
        UnprocessableImageError: the header is corrupt or declares an empty size.
    """
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
    icc_profile = image.info.get("icc_profile")
    return ImageInfo(
        format=fmt,
        size=Size(width=width, height=height),
        orientation=orientation,
        has_alpha=has_alpha,
        frames=frames,
        icc_profile=icc_profile if isinstance(icc_profile, bytes) and icc_profile else None,
    )
