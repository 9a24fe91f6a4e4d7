"""Decode every frame of an animated GIF, WebP, PNG (APNG) or AVIF as full canvases."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image

from darkroom_gpu.codecs import gif, png
from darkroom_gpu.codecs.decode import convert_frame
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

__all__ = ("ANIMATED_SOURCE_FORMATS", "DecodedAnimation", "decode_animation")

ANIMATED_SOURCE_FORMATS: Final = frozenset(
    {ImageFormat.GIF, ImageFormat.WEBP, ImageFormat.PNG, ImageFormat.AVIF}
)
"""Source formats whose frames are kept when the output format can animate."""


@dataclass(frozen=True, slots=True)
class DecodedAnimation:
    """Every frame of an animation, each a complete canvas in sRGB, in stored orientation.

    Attributes:
        frames: ``(B, C, H, W)`` uint8 in [0, 255], C = 4 when any frame has a pixel that is
            not opaque, else 3; B >= 1.
        durations: display time of each frame in milliseconds.
        plays: how many times the animation plays; 0 means forever.
        info: the header information of the source.
    """

    frames: torch.Tensor
    durations: tuple[int, ...]
    plays: int
    info: ImageInfo


def decode_animation(data: bytes, *, max_pixels: int) -> DecodedAnimation:
    """Decode every frame of an animated source.

    GIF frames are composed here with the browsers' disposal rules (see `gif`). WebP, APNG
    and AVIF decoders already return each frame composed onto the full canvas. Each frame
    gets the same colour handling as a still image (see `decode`).

    Args:
        data: the encoded source, in one of `ANIMATED_SOURCE_FORMATS` (a still image gives
            one frame).
        max_pixels: limit on stored width x height summed over all frames, checked before
            any pixel is decoded.

    Returns:
        The frames, their durations and the play count.

    Raises:
        UnsupportedMediaTypeError: the bytes are no image format the server reads.
        UnprocessableImageError: the image is corrupt, truncated or over `max_pixels`.
    """
    fmt = require_format(data)
    if fmt is ImageFormat.PNG:
        png.check_chunk_crcs(data)
    with open_image(data, fmt) as image:
        info = read_info(image, fmt)
        check_pixel_limit(info, info.frames, max_pixels)
        try:
            if fmt is ImageFormat.GIF:
                composed = gif.compose_gif(data, max_pixels)
                arrays, durations, plays = composed.frames, composed.durations, composed.plays
            else:
                arrays, durations, plays = _pillow_frames(image, data, info)
        except DECODE_ERRORS as exc:
            raise UnprocessableImageError(f"{fmt.value} image is corrupt or truncated") from exc

    stacked = np.stack(arrays)
    if bool((stacked[..., 3] == 255).all()):
        stacked = stacked[..., :3]
    frames = torch.from_numpy(np.ascontiguousarray(stacked)).permute(0, 3, 1, 2).contiguous()
    return DecodedAnimation(frames=frames, durations=tuple(durations), plays=plays, info=info)


def _pillow_frames(
    image: Image.Image, data: bytes, info: ImageInfo
) -> tuple[list[npt.NDArray[np.uint8]], list[int], int]:
    """Return RGBA arrays, durations in milliseconds and the play count of every frame."""
    rgba_info = ImageInfo(
        format=info.format,
        size=info.size,
        orientation=info.orientation,
        has_alpha=True,
        frames=info.frames,
        icc_profile=info.icc_profile,
    )
    arrays: list[npt.NDArray[np.uint8]] = []
    durations: list[int] = []
    for index in range(info.frames):
        image.seek(index)
        # WebP and AVIF set a frame's duration when its pixels are loaded, not on seek.
        image.load()
        arrays.append(np.asarray(convert_frame(image, data, rgba_info)))
        durations.append(int(image.info.get("duration", 0)))
    # WebP and APNG store the total number of plays, 0 meaning forever. Pillow 13.0 reports
    # no play count for AVIF, so AVIF sequences are taken to repeat forever.
    plays = int(image.info.get("loop", 0))
    return arrays, durations, plays
