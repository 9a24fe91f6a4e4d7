"""Decode the first frame of a source to an 8-bit sRGB tensor."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import torch
from PIL import Image

from darkroom_gpu.codecs import png
from darkroom_gpu.codecs.color import SIXTEEN_BIT_GREY_MODES, from_sixteen_bit, to_srgb
from darkroom_gpu.codecs.reader import (
    DECODE_ERRORS,
    ImageInfo,
    check_pixel_limit,
    open_image,
    read_info,
    require_format,
)
from darkroom_gpu.codecs.sniff import ImageFormat
from darkroom_gpu.errors import UnprocessableImageError
from darkroom_gpu.geometry import Size

__all__ = ("SHRINK_ON_LOAD_MARGIN", "DecodedImage", "convert_frame", "decode", "to_tensor")

# Decode JPEGs at a reduced DCT scale only down to twice the scaled size, so the final
# antialiased resize still has detail to average, as libvips does. thumbor and imgproxy decode
# down to the scaled size itself, which saves a third of the CPU time of a 300-pixel thumbnail
# of a 3264x2448 JPEG. But where the DCT scale lands on the target, those pixels differ from an
# antialiased resize by 3.7 levels on average (640x480 photo to 320x240).
SHRINK_ON_LOAD_MARGIN: Final = 2


@dataclass(frozen=True, slots=True)
class DecodedImage:
    """Decoded pixels of the first frame, in sRGB and still in stored orientation.

    Attributes:
        pixels: ``(C, H, W)`` uint8 in [0, 255], C = 4 when the source has alpha, else 3;
            channels-last in memory.
        info: the header information of the source.
    """

    pixels: torch.Tensor
    info: ImageInfo


def decode(data: bytes, *, max_pixels: int, draft_size: Size | None = None) -> DecodedImage:
    """Decode the first frame of `data` to an RGB or RGBA tensor in sRGB.

    Colour handling, in order: 16-bit samples are scaled to 8 bits with rounding, CMYK is
    converted to RGB, and an embedded ICC profile is converted to sRGB (see `color`).

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
    fmt = require_format(data)
    if fmt is ImageFormat.PNG:
        png.check_chunk_crcs(data)
    with open_image(data, fmt) as image:
        info = read_info(image, fmt)
        check_pixel_limit(info, 1, max_pixels)

        if draft_size is not None and fmt is ImageFormat.JPEG:
            image.draft(
                image.mode,
                (
                    draft_size.width * SHRINK_ON_LOAD_MARGIN,
                    draft_size.height * SHRINK_ON_LOAD_MARGIN,
                ),
            )
        try:
            rgb = convert_frame(image, data, info)
        except DECODE_ERRORS as exc:
            raise UnprocessableImageError(f"{fmt.value} image is corrupt or truncated") from exc
        # Inside the block, because `rgb` may be the opened image, whose pixels close() frees.
        pixels = to_tensor(rgb)

    return DecodedImage(pixels=pixels, info=info)


def convert_frame(image: Image.Image, data: bytes, info: ImageInfo) -> Image.Image:
    """Decode the current frame of `image` to 8-bit RGB or RGBA in sRGB.

    Args:
        image: the opened source, positioned at the frame to decode.
        data: the encoded source, which 16-bit PNGs decode a second time.
        info: the source's header information; its ``has_alpha`` chooses RGBA.

    Returns:
        An ``RGB`` or ``RGBA`` image.

    Raises:
        The errors of Pillow's decoders (see `DECODE_ERRORS`) for corrupt data.
    """
    eight_bit = _to_eight_bit_image(image, data, info.format)
    return to_srgb(eight_bit, has_alpha=info.has_alpha, icc_profile=info.icc_profile)


def to_tensor(image: Image.Image) -> torch.Tensor:
    """Turn an RGB or RGBA image into ``(C, H, W)`` uint8 pixels in [0, 255].

    The tensor is a view of one ``(H, W, C)`` array, that is channels-last. Making it
    contiguous would copy the pixels a second time, and the CPU's uint8 resize wants
    channels-last anyway.
    """
    return torch.from_numpy(np.array(image)).permute(2, 0, 1)


def _to_eight_bit_image(image: Image.Image, data: bytes, fmt: ImageFormat) -> Image.Image:
    """Return `image` with 8-bit samples, scaling 16-bit ones with rounding."""
    # Pillow's convert() (checked with 13.0) clips 16-bit grey samples at 255 instead of
    # scaling them, which turns all but the darkest tones white.
    if image.mode in SIXTEEN_BIT_GREY_MODES:
        return from_sixteen_bit(np.asarray(image), image.info.get("transparency"))
    if fmt is not ImageFormat.PNG:
        return image

    header = png.read_header(data)
    if header is None:
        return image
    if header.bit_depth == 16:
        samples = png.read_sixteen_bit(data, image)
        if samples is not None:
            return from_sixteen_bit(samples, image.info.get("transparency"))
    png.scale_grey_transparency(image, header)
    return image
