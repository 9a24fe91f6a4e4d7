"""The sRGB transfer function: convert colour between sRGB-encoded values and linear light.

Averaging sRGB-encoded values, as a plain resize does, weights dark tones too much: a fine
pattern of black and white lines shrinks to about level 128, which displays darker than the
pattern's real mean brightness (about level 188). Resizing in linear light keeps the brightness.
Both functions use the piecewise curve of IEC 61966-2-1 and leave alpha as it is, because alpha
is a coverage fraction, not an encoded intensity.
"""

from __future__ import annotations

from typing import Final

import torch

from darkroom_gpu.ops._checks import check_image
from darkroom_gpu.ops._compute import from_working, to_working

__all__ = ("linear_to_srgb", "srgb_to_linear")

# Breakpoints and constants of the sRGB curve (IEC 61966-2-1), on the 0..1 scale.
_ENCODED_BREAK: Final = 0.04045
_LINEAR_BREAK: Final = 0.0031308
_SLOPE: Final = 12.92
_OFFSET: Final = 0.055
_EXPONENT: Final = 2.4


def srgb_to_linear(image: torch.Tensor) -> torch.Tensor:
    """Decode sRGB colour to linear light.

    Args:
        image: (..., C, H, W) uint8 or float in [0, 255], C in {3, 4}, straight alpha.

    Returns:
        (..., C, H, W) float32 (float64 for float64 input) in [0, 255]: linear-light colour on
        the 0..255 scale, alpha unchanged. Keep it in float for later steps, because rounding
        linear values to 8 bits loses the dark tones.

    Raises:
        ImageShapeError: If `image` is not an accepted image.
    """
    check_image(image)
    working = to_working(image)
    encoded = working[..., :3, :, :] / 255
    linear = torch.where(
        encoded <= _ENCODED_BREAK,
        encoded / _SLOPE,
        ((encoded.clamp(min=0) + _OFFSET) / (1 + _OFFSET)) ** _EXPONENT,
    )
    return torch.cat((linear * 255, working[..., 3:, :, :]), dim=-3)


def linear_to_srgb(image: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Encode linear-light colour as sRGB.

    Args:
        image: (..., C, H, W) float in [0, 255], linear-light colour on the 0..255 scale, as
            `srgb_to_linear` returns; C in {3, 4}, straight alpha.
        dtype: Output dtype. For uint8 the values are rounded half to even.

    Returns:
        (..., C, H, W) tensor of `dtype` in [0, 255], sRGB-encoded colour, alpha unchanged.

    Raises:
        ImageShapeError: If `image` is not an accepted image.
    """
    check_image(image)
    working = to_working(image)
    linear = working[..., :3, :, :].clamp(0, 255) / 255
    encoded = torch.where(
        linear <= _LINEAR_BREAK,
        linear * _SLOPE,
        (1 + _OFFSET) * linear ** (1 / _EXPONENT) - _OFFSET,
    )
    return from_working(torch.cat((encoded * 255, working[..., 3:, :, :]), dim=-3), dtype)
