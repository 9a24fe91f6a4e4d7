"""What the GPU decoder can take, and the box reduction that replaces shrink-on-load."""

from __future__ import annotations

from typing import Final

import torch
import torch.nn.functional as F

from darkroom_gpu.codecs import SHRINK_ON_LOAD_MARGIN
from darkroom_gpu.geometry import Size

__all__ = ("is_device_decodable_jpeg", "reduce_for_resize")

# JPEG markers, from ITU-T T.81 table B.1.
_STANDALONE_MARKERS: Final = frozenset({0x01, *range(0xD0, 0xD8)})
_FRAME_MARKERS: Final = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_BASELINE_FRAME_MARKERS: Final = frozenset({0xC0, 0xC1})
_ADOBE_MARKER: Final = 0xEE
_SCAN_MARKERS: Final = frozenset({0xDA, 0xD9})
# The DCT scales libjpeg decodes at, largest first, as Pillow's JpegImageFile.draft() picks them.
_REDUCE_FACTORS: Final = (8, 4, 2)


def is_device_decodable_jpeg(data: bytes) -> bool:
    """Tell from the JPEG header whether nvJPEG's batched decoder can take the image.

    Only baseline or extended sequential (SOF0, SOF1) 8-bit JPEGs with three YCbCr components
    qualify. Progressive, lossless and arithmetic-coded JPEGs, grayscale and CMYK ones, and
    three-component JPEGs that an Adobe marker declares as RGB are left to Pillow. So are files
    with no EOI marker after the frame header: a truncated file then gets Pillow's error on
    both devices, whatever nvJPEG would make of it. Byte stuffing keeps the EOI bytes out of
    the compressed data, so a marker found there is the real end of the image, and data that
    phones append after it does not matter.

    Args:
        data: the encoded image, starting with the SOI marker.

    Returns:
        Whether the device decoder should get the image. A malformed header returns False, so
        that Pillow reports the error.
    """
    if not data.startswith(b"\xff\xd8"):
        return False
    adobe_transform: int | None = None
    position = 2
    # Every pass moves `position` forward, so the loop ends within len(data) passes.
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return False
        marker = data[position + 1]
        if marker == 0xFF:  # a fill byte before a marker
            position += 1
            continue
        if marker in _STANDALONE_MARKERS:
            position += 2
            continue
        length = int.from_bytes(data[position + 2 : position + 4], "big")
        segment = data[position + 4 : position + 2 + length]
        if marker == _ADOBE_MARKER and segment.startswith(b"Adobe") and len(segment) >= 12:
            adobe_transform = segment[11]
        elif marker in _FRAME_MARKERS:
            if marker not in _BASELINE_FRAME_MARKERS or len(segment) < 6:
                return False
            precision, components = segment[0], segment[5]
            # Adobe transform 0 on three components means the samples are RGB, not YCbCr.
            decodable = precision == 8 and components == 3 and adobe_transform != 0
            return decodable and data.find(b"\xff\xd9", position) != -1
        elif marker in _SCAN_MARKERS or length < 2:
            return False
        position += 2 + length
    return False


def reduce_for_resize(image: torch.Tensor, target: Size) -> torch.Tensor:
    """Shrink an image by 2, 4 or 8 with a box filter, staying at least twice `target`.

    This replaces JPEG shrink-on-load, which nvJPEG does not offer. The factor is chosen
    as `codecs.decode` chooses its DCT scale (the largest of 8, 4 and 2 that keeps both sides at
    least `SHRINK_ON_LOAD_MARGIN` times the target), so both paths run the final antialiased
    resize from the same size. A box average at the same scale differs from a DCT-scaled
    decode by well under one level on average (`tests/test_gpu_manipulator.py` bounds it).

    Args:
        image: ``(C, H, W)`` uint8 in [0, 255], in stored orientation.
        target: the planned scaled size in stored orientation, in pixels.

    Returns:
        ``(C, ceil(H / k), ceil(W / k))`` uint8 in [0, 255] for the chosen factor k, or `image`
        itself when even k = 2 would go below the margin. Partial blocks at the right and
        bottom edges average the pixels they cover.
    """
    height, width = int(image.shape[-2]), int(image.shape[-1])
    max_factor = min(
        width // (SHRINK_ON_LOAD_MARGIN * target.width),
        height // (SHRINK_ON_LOAD_MARGIN * target.height),
    )
    factor = next((factor for factor in _REDUCE_FACTORS if factor <= max_factor), 1)
    if factor == 1:
        return image
    pooled = F.avg_pool2d(image[None].float(), kernel_size=factor, stride=factor, ceil_mode=True)
    return pooled[0].round().clamp(0, 255).to(torch.uint8)
