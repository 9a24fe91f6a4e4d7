"""Argument checks shared by the tensor ops.

The checks read only shapes, dtypes and Python numbers, never tensor values, so they cost nothing
on a GPU and never format a tensor into a message.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import torch

__all__ = (
    "IMAGE_CHANNELS",
    "ImageShapeError",
    "check_channel_values",
    "check_image",
    "check_positive_size",
)

IMAGE_CHANNELS: Final = (3, 4)


class ImageShapeError(ValueError):
    """An op got an image or an argument that it cannot work with.

    Raised for a wrong image shape or dtype, and for geometric or colour arguments out of range.
    """


def check_image(image: torch.Tensor) -> None:
    """Check that `image` is an RGB or RGBA image tensor that the ops accept.

    Args:
        image: Tensor expected to be (..., C, H, W) with C in {3, 4}, H and W >= 1, and dtype
            uint8 or floating.

    Raises:
        ImageShapeError: If the shape or dtype is not accepted.
    """
    shape = tuple(image.shape)
    if image.ndim < 3 or shape[-3] not in IMAGE_CHANNELS:
        raise ImageShapeError(
            f"image: expected shape (..., C, H, W) with C in {{3, 4}}, got {shape}"
        )
    if shape[-2] < 1 or shape[-1] < 1:
        raise ImageShapeError(f"image: expected height and width >= 1, got shape {shape}")
    if image.dtype != torch.uint8 and not image.dtype.is_floating_point:
        raise ImageShapeError(f"image: expected dtype uint8 or a floating dtype, got {image.dtype}")


def check_positive_size(height: int, width: int) -> None:
    """Check that an output size is at least one pixel in each dimension.

    Args:
        height: Output height in pixels.
        width: Output width in pixels.

    Raises:
        ImageShapeError: If `height` or `width` is less than 1.
    """
    if height < 1 or width < 1:
        raise ImageShapeError(
            f"size: expected height and width >= 1, got height={height}, width={width}"
        )


def check_channel_values(name: str, values: Sequence[float], count: int) -> None:
    """Check that a colour has `count` channel values, each in [0, 255].

    Args:
        name: Argument name used in the error message.
        values: Channel values on the 0..255 scale.
        count: Expected number of values.

    Raises:
        ImageShapeError: If the count is wrong or a value is outside [0, 255].
    """
    if len(values) != count:
        raise ImageShapeError(f"{name}: expected {count} channel values, got {len(values)}")
    if any(not 0 <= value <= 255 for value in values):
        raise ImageShapeError(f"{name}: expected values in [0, 255], got {tuple(values)}")
