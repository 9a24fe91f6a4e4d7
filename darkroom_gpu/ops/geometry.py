"""Geometric transforms of image tensors: crop, pad, flip, EXIF orientation and rotation.

All coordinates are in pixels with x to the right, y down and the origin at the top-left corner
of the top-left pixel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

import torch
import torch.nn.functional as F

from darkroom_gpu.ops._checks import (
    ImageShapeError,
    check_channel_values,
    check_image,
    check_positive_size,
)
from darkroom_gpu.ops._compute import (
    device_values,
    from_premultiplied,
    from_working,
    premultiply,
    to_batch,
    to_working,
)

__all__ = ("crop", "flip", "orient", "pad", "rotate")

_OPAQUE: Final = 255


def crop(image: torch.Tensor, top: int, left: int, height: int, width: int) -> torch.Tensor:
    """Cut out a box of the image.

    Args:
        image: (..., C, H, W) uint8 or float in [0, 255], C in {3, 4}.
        top: Row of the box's top edge in pixels, >= 0.
        left: Column of the box's left edge in pixels, >= 0.
        height: Box height in pixels, >= 1, with `top + height <= H`.
        width: Box width in pixels, >= 1, with `left + width <= W`.

    Returns:
        (..., C, height, width) new tensor of the input dtype with the exact input values.

    Raises:
        ImageShapeError: If `image` is not an accepted image, or the box is empty or leaves the
            image.
    """
    check_image(image)
    image_height, image_width = image.shape[-2:]
    if height < 1 or width < 1:
        raise ImageShapeError(
            f"crop: expected a box of at least 1 x 1 pixels, got height={height}, width={width}"
        )
    if top < 0 or left < 0 or top + height > image_height or left + width > image_width:
        raise ImageShapeError(
            f"crop: box top={top}, left={left}, height={height}, width={width} leaves the "
            f"{image_height} x {image_width} image"
        )
    return image[..., top : top + height, left : left + width].clone()


def pad(
    image: torch.Tensor,
    top: int,
    left: int,
    height: int,
    width: int,
    fill: Sequence[float],
) -> torch.Tensor:
    """Place the image on a larger canvas filled with one colour.

    Args:
        image: (..., C, H, W) uint8 or float in [0, 255], C in {3, 4}.
        top: Row of the canvas where the image's top edge goes, in pixels, >= 0.
        left: Column of the canvas where the image's left edge goes, in pixels, >= 0.
        height: Canvas height in pixels, with `top + H <= height`.
        width: Canvas width in pixels, with `left + W <= width`.
        fill: Canvas colour, one value per channel (C values) in [0, 255]. For uint8 images the
            values are rounded half to even.

    Returns:
        (..., C, height, width) new tensor of the input dtype. The image pixels are exact copies.

    Raises:
        ImageShapeError: If `image` is not an accepted image, `fill` does not have C values in
            [0, 255], or the image does not fit on the canvas at (top, left).
    """
    check_image(image)
    channels, image_height, image_width = image.shape[-3:]
    check_channel_values("fill", fill, channels)
    if top < 0 or left < 0 or top + image_height > height or left + image_width > width:
        raise ImageShapeError(
            f"pad: the {image_height} x {image_width} image at top={top}, left={left} does not "
            f"fit on a {height} x {width} canvas"
        )

    fill_values = device_values(fill, torch.float32, image.device)
    fill_values = from_working(fill_values, image.dtype).reshape(channels, 1, 1)
    canvas = fill_values.expand(*image.shape[:-2], height, width).clone()
    canvas[..., top : top + image_height, left : left + image_width] = image
    return canvas


def flip(image: torch.Tensor, *, horizontal: bool, vertical: bool) -> torch.Tensor:
    """Mirror the image left-right, top-bottom, or both.

    Args:
        image: (..., C, H, W) uint8 or float in [0, 255], C in {3, 4}.
        horizontal: Mirror left-right, so column x moves to column W - 1 - x.
        vertical: Mirror top-bottom, so row y moves to row H - 1 - y.

    Returns:
        (..., C, H, W) new tensor of the input dtype with the exact input values.

    Raises:
        ImageShapeError: If `image` is not an accepted image.
    """
    check_image(image)
    dims = [dim for dim, wanted in ((-1, horizontal), (-2, vertical)) if wanted]
    if not dims:
        return image.clone()
    return image.flip(dims)


def orient(image: torch.Tensor, orientation: int) -> torch.Tensor:
    """Apply an EXIF orientation so that the image displays upright.

    Each value of EXIF tag 0x0112 gets the transform that Pillow's `ImageOps.exif_transpose`
    applies: 2 mirror left-right, 3 rotate 180 degrees, 4 mirror top-bottom,
    5 transpose, 6 rotate 90 degrees clockwise, 7 transverse, 8 rotate 90 degrees
    counterclockwise.

    Args:
        image: (..., C, H, W) uint8 or float in [0, 255], C in {3, 4}.
        orientation: EXIF orientation value. 1, and any value outside 1..8 (0 is common in files
            without the tag), leaves the image as it is.

    Returns:
        (..., C, H, W) new tensor of the input dtype, or (..., C, W, H) for orientations 5 to 8,
        with the exact input values.

    Raises:
        ImageShapeError: If `image` is not an accepted image.
    """
    check_image(image)
    if orientation == 2:
        return image.flip(-1)
    if orientation == 3:
        return image.flip(-2, -1)
    if orientation == 4:
        return image.flip(-2)
    if orientation == 5:
        return _transpose(image)
    if orientation == 6:
        return _transpose(image.flip(-2))
    if orientation == 7:
        return _transpose(image.flip(-2, -1))
    if orientation == 8:
        return _transpose(image.flip(-1))
    return image.clone()


def rotate(image: torch.Tensor, degrees: float, height: int, width: int) -> torch.Tensor:
    """Rotate the image clockwise about its centre onto a canvas of `height` x `width` pixels.

    The image centre goes to the canvas centre. Multiples of 90 degrees are exact and keep C.
    Other angles sample the source bilinearly at each canvas pixel centre, at the same source
    positions as Pillow's `Image.rotate`. Pixel centres sit at half-integer coordinates. A canvas
    pixel centre at offset (dx, dy) from the canvas centre samples the source at the offset
    (dx, dy) turned counterclockwise by `degrees`, taken from the source centre. Canvas areas
    outside the source are transparent, and sampling the alpha channel bilinearly antialiases
    the image edges.

    Args:
        image: (..., C, H, W) uint8 or float in [0, 255], C in {3, 4}, straight alpha.
        degrees: Clockwise angle in degrees; any finite value, taken modulo 360.
        height: Canvas height in pixels, >= 1. For multiples of 90 degrees it must equal the
            rotated image height.
        width: Canvas width in pixels, >= 1. For multiples of 90 degrees it must equal the
            rotated image width.

    Returns:
        For multiples of 90 degrees, (..., C, height, width) with the exact input values. For
        other angles, (..., 4, height, width) RGBA with straight alpha, where a source without
        alpha counts as opaque. Both keep the input dtype and the range [0, 255].

    Raises:
        ImageShapeError: If `image` is not an accepted image, `degrees` is not finite, the canvas
            is smaller than 1 x 1, or the canvas does not match a rotation by a multiple of 90.
    """
    check_image(image)
    check_positive_size(height, width)
    if not math.isfinite(degrees):
        raise ImageShapeError(f"rotate: expected a finite angle in degrees, got {degrees}")

    degrees = degrees % 360
    if degrees % 90 == 0:
        return _rotate_quarter_turns(image, int(degrees // 90), height, width)
    return _rotate_bilinear(image, math.radians(degrees), height, width)


def _transpose(image: torch.Tensor) -> torch.Tensor:
    # A copy, because the transposed view would share storage with the input.
    return image.transpose(-2, -1).clone(memory_format=torch.contiguous_format)


def _rotate_quarter_turns(
    image: torch.Tensor, quarter_turns: int, height: int, width: int
) -> torch.Tensor:
    image_height, image_width = image.shape[-2:]
    rotated_height, rotated_width = (
        (image_width, image_height) if quarter_turns % 2 else (image_height, image_width)
    )
    if (height, width) != (rotated_height, rotated_width):
        raise ImageShapeError(
            f"rotate: a rotation by {quarter_turns * 90} degrees gives a "
            f"{rotated_height} x {rotated_width} image, got a canvas of {height} x {width}"
        )
    # torch.rot90 turns from the first dim towards the second, which is counterclockwise for
    # (H, W), so clockwise quarter turns are negative.
    rotated = torch.rot90(image, -quarter_turns, dims=(-2, -1))
    return rotated.clone(memory_format=torch.contiguous_format)


def _rotate_bilinear(image: torch.Tensor, radians: float, height: int, width: int) -> torch.Tensor:
    image_height, image_width = image.shape[-2:]
    working = to_working(image)
    if image.shape[-3] == 3:
        alpha = torch.full_like(working[..., :1, :, :], _OPAQUE)
        working = torch.cat((working, alpha), dim=-3)
    # Premultiplied colour makes the zero padding outside the source act as transparent black,
    # so edge pixels keep their colour instead of darkening.
    working = to_batch(premultiply(working))

    grid = _rotation_grid(radians, image_height, image_width, height, width, working)
    rotated = F.grid_sample(
        working,
        grid.expand(working.shape[0], -1, -1, -1),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    )
    rotated = rotated.reshape(*image.shape[:-3], 4, height, width)
    return from_premultiplied(rotated, image.dtype)


def _rotation_grid(
    radians: float,
    image_height: int,
    image_width: int,
    height: int,
    width: int,
    like: torch.Tensor,
) -> torch.Tensor:
    """Build the `grid_sample` grid, (1, height, width, 2) of normalised source (x, y)."""
    # Canvas pixel centres relative to the canvas centre.
    xs = torch.arange(width, dtype=like.dtype, device=like.device) + (0.5 - width / 2)
    ys = torch.arange(height, dtype=like.dtype, device=like.device) + (0.5 - height / 2)
    ys, xs = torch.meshgrid(ys, xs, indexing="ij")

    # With y down, a clockwise turn by a maps (x, y) to (x cos a - y sin a, x sin a + y cos a).
    # Each canvas point samples the source at the inverse turn.
    cos, sin = math.cos(radians), math.sin(radians)
    source_xs = xs * cos + ys * sin
    source_ys = ys * cos - xs * sin

    # With align_corners=False, -1 and 1 are the outer edges of the source image, so an offset of
    # half the image size from the centre normalises to 1.
    grid = torch.stack((source_xs * (2 / image_width), source_ys * (2 / image_height)), dim=-1)
    return grid.unsqueeze(0)
