"""Colour transforms of image tensors: grayscale, monochrome tint and alpha flattening."""

from __future__ import annotations

from typing import Final

import torch

from darkroom_gpu.ops._checks import check_channel_values, check_image
from darkroom_gpu.ops._compute import device_values, from_working, to_working

__all__ = ("flatten", "grayscale", "tint")

# ITU-R BT.601 luma weights for R, G and B, the ones Pillow's convert("L") uses.
LUMA_WEIGHTS: Final = (0.299, 0.587, 0.114)


def grayscale(image: torch.Tensor) -> torch.Tensor:
    """Replace the colour by its luma, as Pillow's `convert("L")` does.

    Args:
        image: (..., C, H, W) uint8 or float in [0, 255], C in {3, 4}.

    Returns:
        (..., C, H, W) tensor of the input dtype in [0, 255] whose three colour channels all hold
        the luma 0.299 R + 0.587 G + 0.114 B. Alpha is copied unchanged.

    Raises:
        ImageShapeError: If `image` is not an accepted image.
    """
    check_image(image)
    luma = from_working(_luma(to_working(image)), image.dtype)
    return _with_colour(image, luma.expand(*luma.shape[:-3], 3, *luma.shape[-2:]))


def tint(image: torch.Tensor, color: tuple[int, int, int]) -> torch.Tensor:
    """Tint the image in one colour: black stays black and white becomes `color`.

    Each colour channel is luma / 255 times the matching channel of `color`, the result of
    Pillow's `ImageOps.colorize(gray, black=(0, 0, 0), white=color)` except that Pillow floors
    each value while this op rounds it.

    Args:
        image: (..., C, H, W) uint8 or float in [0, 255], C in {3, 4}.
        color: RGB tint colour, each channel in [0, 255].

    Returns:
        (..., C, H, W) tensor of the input dtype in [0, 255]. Alpha is copied unchanged.

    Raises:
        ImageShapeError: If `image` is not an accepted image or `color` does not have three values
            in [0, 255].
    """
    check_image(image)
    check_channel_values("color", color, 3)

    luma = _luma(to_working(image))
    scale = device_values(color, luma.dtype, image.device).reshape(3, 1, 1) / 255
    return _with_colour(image, from_working(luma * scale, image.dtype))


def flatten(image: torch.Tensor, background: tuple[int, int, int, int]) -> torch.Tensor:
    """Composite the image over a background colour (Porter-Duff "over").

    Image alpha a and background alpha b are taken as fractions of 255. The result alpha is
    a + b (1 - a). The result colour is (rgb a + background_rgb b (1 - a)) / result_alpha, or 0
    where the result alpha is 0.

    Args:
        image: (..., C, H, W) uint8 or float in [0, 255], C in {3, 4}, straight alpha.
        background: Background RGBA colour, each channel in [0, 255], straight alpha.

    Returns:
        A new tensor of the input dtype in [0, 255]: `image` itself when C is 3, because an
        opaque image covers any background; (..., 3, H, W) when the background alpha is 255,
        because the result is then opaque; else (..., 4, H, W) RGBA with straight alpha.

    Raises:
        ImageShapeError: If `image` is not an accepted image or `background` does not have four
            values in [0, 255].
    """
    check_image(image)
    check_channel_values("background", background, 4)
    if image.shape[-3] == 3:
        return image.clone()

    working = to_working(image) / 255
    fill = device_values(background, working.dtype, image.device).reshape(4, 1, 1)
    fill = fill / 255
    colour, alpha = working[..., :3, :, :], working[..., 3:, :, :]
    fill_colour, fill_alpha = fill[:3], fill[3:]

    fill_weight = fill_alpha * (1 - alpha)
    result_alpha = alpha + fill_weight
    blended = colour * alpha + fill_colour * fill_weight
    # Lanes where the result alpha is 0 divide to NaN or inf, and torch.where discards them.
    result_colour = torch.where(result_alpha > 0, blended / result_alpha, 0)

    if background[3] == 255:
        return from_working(result_colour * 255, image.dtype)
    result = torch.cat((result_colour, result_alpha), dim=-3) * 255
    return from_working(result, image.dtype)


def _luma(working: torch.Tensor) -> torch.Tensor:
    """Return the (..., 1, H, W) luma of a float image in [0, 255]."""
    weights = device_values(LUMA_WEIGHTS, working.dtype, working.device)
    return (working[..., :3, :, :] * weights.reshape(3, 1, 1)).sum(dim=-3, keepdim=True)


def _with_colour(image: torch.Tensor, colour: torch.Tensor) -> torch.Tensor:
    """Return new (..., C, H, W) with `colour` (..., 3, H, W) in place of the image's RGB."""
    if image.shape[-3] == 3:
        return colour.clone(memory_format=torch.contiguous_format)
    return torch.cat((colour, image[..., 3:, :, :]), dim=-3)
