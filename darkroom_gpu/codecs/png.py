"""PNG details Pillow leaves to its caller: chunk checksums, 16-bit samples, grey tRNS values.

Pillow (checked with 13.0) does not verify the CRC of image data chunks. It reads 16-bit RGB,
RGBA and grey-alpha PNGs as 8-bit images by keeping the high byte of each sample. It also
keeps the ``tRNS`` grey value of 1, 2 and 4-bit images unscaled while it scales their pixels
to 0..255.
"""

from __future__ import annotations

import io
import zlib
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageFile

from darkroom_gpu.errors import UnprocessableImageError

__all__ = (
    "PngHeader",
    "check_chunk_crcs",
    "read_header",
    "read_sixteen_bit",
    "scale_grey_transparency",
)

_SIGNATURE_LENGTH: Final = 8
# Length (4 bytes), type (4 bytes) and CRC (4 bytes) around each chunk's payload.
_CHUNK_OVERHEAD: Final = 12
_GREY: Final = 0
# Pillow's raw modes for 16-bit PNG samples, mapped to the raw mode that reads the same rows
# (same bits per pixel, so the same unfiltering) but keeps the low byte of each sample.
_LOW_BYTE_RAWMODES: Final = {"RGB;16B": "RGB;16L", "RGBA;16B": "RGBA;16L"}
# Pillow opens 16-bit grey-alpha PNGs as RGBA with this raw mode. The plain 8-bit "RGBA" raw
# mode has the same 32 bits per pixel and copies all four bytes: grey high, grey low, alpha
# high, alpha low.
_GREY_ALPHA_RAWMODE: Final = "LA;16B"


@dataclass(frozen=True, slots=True)
class PngHeader:
    """The sample format fields of a PNG ``IHDR`` chunk.

    Attributes:
        bit_depth: bits per sample: 1, 2, 4, 8 or 16.
        colour_type: 0 grey, 2 RGB, 3 palette, 4 grey with alpha, 6 RGBA.
    """

    bit_depth: int
    colour_type: int


def read_header(data: bytes) -> PngHeader | None:
    """Return the bit depth and colour type, or ``None`` when ``IHDR`` is not the first chunk."""
    # Signature (8), IHDR length (4) and type (4), width (4), height (4), then depth and type.
    if len(data) < 26 or data[12:16] != b"IHDR":
        return None
    return PngHeader(bit_depth=data[24], colour_type=data[25])


def check_chunk_crcs(data: bytes) -> None:
    """Verify the CRC-32 of every chunk up to ``IEND``.

    Raises:
        UnprocessableImageError: a chunk's CRC does not match, a chunk is cut short, or the
            file ends before ``IEND``.
    """
    view = memoryview(data)
    position = _SIGNATURE_LENGTH
    while True:
        if position + _CHUNK_OVERHEAD > len(data):
            raise UnprocessableImageError("png image is truncated: it ends before its IEND chunk")
        length = int.from_bytes(data[position : position + 4], "big")
        end = position + 8 + length
        if end + 4 > len(data):
            raise UnprocessableImageError("png image is truncated inside a chunk")
        kind = bytes(view[position + 4 : position + 8])
        expected = int.from_bytes(data[end : end + 4], "big")
        if zlib.crc32(view[position + 4 : end]) != expected:
            name = kind.decode("latin-1")
            raise UnprocessableImageError(
                f"png image is corrupt: the {name!r} chunk's CRC is wrong"
            )
        if kind == b"IEND":
            return
        position = end + 4


def scale_grey_transparency(image: Image.Image, header: PngHeader) -> None:
    """Scale the ``tRNS`` grey value of a 1, 2 or 4-bit grey image to the 0..255 pixel scale.

    Pillow stores the value as written, such as 15 for white in a 4-bit image, but it scales
    the pixels themselves, so without this the wrong pixels would turn transparent. The image's
    ``info`` is changed in place.
    """
    transparency = image.info.get("transparency")
    if header.colour_type != _GREY or header.bit_depth >= 8 or not isinstance(transparency, int):
        return
    max_value = (1 << header.bit_depth) - 1
    image.info["transparency"] = min(transparency, max_value) * 255 // max_value


def read_sixteen_bit(data: bytes, image: Image.Image) -> npt.NDArray[np.uint16] | None:
    """Decode every 16-bit sample of an RGB, RGBA or grey-alpha PNG.

    Pillow reads these images as 8-bit by keeping the high byte. A second decode of the same
    data with a raw mode that keeps the low byte instead recovers the full samples.

    Args:
        data: the encoded PNG.
        image: `data` opened by Pillow and not yet loaded; it is loaded here.

    Returns:
        ``(H, W, C)`` uint16 samples in [0, 65535], C = 3 (RGB), 4 (RGBA) or 2 (grey and
        alpha), or ``None`` when the image does not have 16-bit colour samples. Grey images
        without alpha are not handled here because Pillow reads them as mode ``I;16`` in full.

    Raises:
        The errors of Pillow's decoder (see `DECODE_ERRORS`) for corrupt data.
    """
    # NOTE: this replaces the raw mode in Pillow's tile descriptor, the documented interface
    # between image plugins and decoders; the PngSuite conformance test catches a change.
    if not isinstance(image, ImageFile.ImageFile) or len(image.tile) != 1:
        return None
    tile = image.tile[0]
    if tile.codec_name != "zip":
        return None

    if tile.args == _GREY_ALPHA_RAWMODE:
        image.tile = [tile._replace(args="RGBA")]
        raw = np.asarray(image)
        grey = _join_bytes(raw[..., 0], raw[..., 1])
        alpha = _join_bytes(raw[..., 2], raw[..., 3])
        return np.stack([grey, alpha], axis=-1)

    low_rawmode = _LOW_BYTE_RAWMODES.get(str(tile.args))
    if low_rawmode is None:
        return None
    high = np.asarray(image)
    with Image.open(io.BytesIO(data)) as second:
        if not isinstance(second, ImageFile.ImageFile) or len(second.tile) != 1:
            return None
        second.tile = [second.tile[0]._replace(args=low_rawmode)]
        low = np.asarray(second)
    return _join_bytes(high, low)


def _join_bytes(high: npt.NDArray[np.uint8], low: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint16]:
    samples: npt.NDArray[np.uint16] = high.astype(np.uint16) * np.uint16(256) + low
    return samples
