"""Resizing of image tensors."""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Final

import torch
import torch.nn.functional as F

from darkroom_gpu.ops._checks import check_image, check_positive_size
from darkroom_gpu.ops._compute import (
    clamp_premultiplied,
    from_premultiplied,
    from_working,
    premultiply,
    to_batch,
    to_working,
)

__all__ = ("Interpolation", "resize")

# Largest shrink factor per axis given to torch's antialiased CUDA kernel. That kernel keeps its
# filter windows in shared memory and fails once they outgrow it: on CUDA, 941 x 941 -> 10 x 10
# bilinear fails (pytorch/vision issue 7671). By the kernel's launch code, 64x fits this
# module's one-axis bicubic passes and the blur's two-axis bilinear pass, but would not fit a
# two-axis bicubic pass.
CUDA_MAX_ANTIALIAS_FACTOR: Final = 64


class Interpolation(StrEnum):
    """Interpolation filter; each value is the matching `torch.nn.functional.interpolate` mode."""

    BILINEAR = "bilinear"
    BICUBIC = "bicubic"


def resize(
    image: torch.Tensor,
    height: int,
    width: int,
    *,
    interpolation: Interpolation,
    antialias: bool,
) -> torch.Tensor:
    """Resize an image to `height` x `width` pixels.

    Pixel centres sit at half-integer coordinates (`align_corners=False`), so the image edges map
    onto each other. RGBA images are resized with premultiplied colour, so fully transparent pixels
    add no dark fringe at the edge of opaque areas.

    Args:
        image: (..., C, H, W) uint8 or float in [0, 255], C in {3, 4}, straight alpha.
        height: Output height in pixels, >= 1.
        width: Output width in pixels, >= 1.
        interpolation: Filter used to compute each output pixel.
        antialias: Widen the filter when downscaling so that it averages all covered source
            pixels. With bicubic this matches Pillow's `Image.resize` to about one level on uint8.

    Returns:
        (..., C, height, width) tensor of the input dtype in [0, 255]. Bicubic overshoot is
        clamped. The result is a new tensor even when the size is unchanged.

    Raises:
        ImageShapeError: If `image` is not an accepted image or `height` or `width` is below 1.
    """
    check_image(image)
    check_positive_size(height, width)

    if (height, width) == tuple(image.shape[-2:]):
        return image.clone()
    if image.numel() == 0:
        # CUDA rejects a kernel launch over zero images, so an empty batch never reaches one.
        return image.new_empty((*image.shape[:-2], height, width))

    if _has_uint8_kernel(image, antialias):
        return _resize_uint8(image, height, width, interpolation)

    working = to_working(image)
    has_alpha = image.shape[-3] == 4
    if has_alpha:
        working = premultiply(working)

    batch = to_batch(working)
    if interpolation is Interpolation.BICUBIC:
        # Two passes, width then height, with the overshoot of the first clamped before the second,
        # as Pillow does. A single 2-D pass adds up the ringing of both axes at sharp edges. With
        # the clamp, uint8 results match Pillow within 1 level (see tests/test_ops.py).
        batch = _interpolate(batch, batch.shape[-2], width, interpolation, antialias)
        batch = clamp_premultiplied(batch) if has_alpha else batch.clamp(0, 255)
    resized = _interpolate(batch, height, width, interpolation, antialias)
    resized = resized.reshape(*image.shape[:-2], height, width)

    if has_alpha:
        return from_premultiplied(resized, image.dtype)
    return from_working(resized, image.dtype)


def _has_uint8_kernel(image: torch.Tensor, antialias: bool) -> bool:
    """Return whether torch's CPU kernel for antialiased uint8 resizing accepts `image`.

    That kernel resizes uint8 channels-last pixels directly and rounds to 8 bits between its
    two passes, as Pillow does. It is several times faster than the float path. RGBA stays on
    the float path because it must resize premultiplied colour.
    """
    return (
        antialias
        and image.dtype == torch.uint8
        and image.device.type == "cpu"
        and image.shape[-3] == 3
    )


def _resize_uint8(
    image: torch.Tensor, height: int, width: int, interpolation: Interpolation
) -> torch.Tensor:
    """Resize (..., 3, H, W) uint8 on the CPU with torch's antialiased uint8 kernel."""
    batch = to_batch(image).contiguous(memory_format=torch.channels_last)
    resized = F.interpolate(
        batch, size=(height, width), mode=interpolation.value, align_corners=False, antialias=True
    )
    return resized.reshape(*image.shape[:-2], height, width)


def _interpolate(
    batch: torch.Tensor, height: int, width: int, interpolation: Interpolation, antialias: bool
) -> torch.Tensor:
    if tuple(batch.shape[-2:]) == (height, width):
        return batch
    if antialias and batch.is_cuda:
        batch = shrink_for_cuda_antialias(batch, height, width)
    return F.interpolate(
        batch,
        size=(height, width),
        mode=interpolation.value,
        align_corners=False,
        antialias=antialias,
    )


def shrink_for_cuda_antialias(batch: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Average pixel blocks so that no axis shrinks more than `CUDA_MAX_ANTIALIAS_FACTOR` later.

    An axis that would shrink further is first averaged over blocks of k pixels, with k the
    smallest whole number that leaves it within the factor. The antialiased filter that
    follows spans more than 32 of these blocks, so the result differs from a direct resize by
    a fraction of a level (`tests/test_ops.py` bounds it).

    Args:
        batch: (N, C, H, W) floating tensor.
        height: output height of the resize that follows, >= 1.
        width: output width of the resize that follows, >= 1.

    Returns:
        `batch` itself when no axis needs it, else (N, C, ceil(H / kh), ceil(W / kw)). Blocks
        at the bottom and right edges that are cut short average the pixels they cover.
    """
    source_height, source_width = batch.shape[-2:]
    block_height = math.ceil(source_height / (CUDA_MAX_ANTIALIAS_FACTOR * height))
    block_width = math.ceil(source_width / (CUDA_MAX_ANTIALIAS_FACTOR * width))
    if block_height == block_width == 1:
        return batch
    return F.avg_pool2d(batch, (block_height, block_width), ceil_mode=True, count_include_pad=False)
