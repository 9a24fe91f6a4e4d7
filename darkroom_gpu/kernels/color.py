"""Per-pixel colour work as Triton device functions, for the epilogues of the resize kernels.

Every function takes and returns float32 blocks of pixels on the 0..255 scale, one block per
channel. Each mirrors a shared torch op operation by operation, so that results agree to float
rounding. Premultiplication and its inverse follow `darkroom_gpu.ops._compute`; luma, tint and
flattening follow `darkroom_gpu.ops.color`; sRGB encoding follows `darkroom_gpu.ops.transfer`.
sRGB decoding is a 256-entry table made by
`darkroom_gpu.ops.srgb_to_linear` itself, because the kernels decode uint8 sources only.

Divisions are guarded so that no lane divides by zero: Triton's CPU interpreter runs these
functions in numpy, which warns on such lanes even where `tl.where` discards their values.
"""

from __future__ import annotations

import triton
import triton.language as tl

__all__ = (
    "clamp_premultiplied",
    "encode_srgb",
    "flatten_over",
    "luma",
    "to_level",
    "unpremultiply",
)

# sRGB curve constants (IEC 61966-2-1) on the 0..1 scale, as in darkroom_gpu.ops.transfer.
_LINEAR_BREAK = tl.constexpr(0.0031308)
_SLOPE = tl.constexpr(12.92)
_OFFSET = tl.constexpr(0.055)
_INVERSE_EXPONENT = tl.constexpr(1 / 2.4)
# ITU-R BT.601 luma weights, as in darkroom_gpu.ops.color.
_LUMA_RED = tl.constexpr(0.299)
_LUMA_GREEN = tl.constexpr(0.587)
_LUMA_BLUE = tl.constexpr(0.114)


@triton.jit
def to_level(value):
    """Round half to even and clamp to [0, 255], as torch's ``round().clamp(0, 255)`` does."""
    base = tl.floor(value)
    fraction = value - base
    odd = (base - 2.0 * tl.floor(base * 0.5)) != 0.0
    up = (fraction > 0.5) | ((fraction == 0.5) & odd)
    return tl.minimum(tl.maximum(base + up.to(tl.float32), 0.0), 255.0)


@triton.jit
def clamp_premultiplied(red, green, blue, alpha):
    """Bring premultiplied filter overshoot back into range, keeping the straight colour."""
    # Pixels whose alpha overshoots 255 shrink as a whole; alpha at or below 0 becomes 0.
    scale = tl.where(alpha > 255.0, 255.0 / tl.maximum(alpha, 255.0), (alpha > 0.0).to(tl.float32))
    alpha = alpha * scale
    red = tl.minimum(tl.maximum(red * scale, 0.0), alpha)
    green = tl.minimum(tl.maximum(green * scale, 0.0), alpha)
    blue = tl.minimum(tl.maximum(blue * scale, 0.0), alpha)
    return red, green, blue, alpha


@triton.jit
def unpremultiply(red, green, blue, alpha):
    """Divide premultiplied colour by alpha; colour is 0 where alpha is 0 or below."""
    red, green, blue, alpha = clamp_premultiplied(red, green, blue, alpha)
    visible = alpha > 0.0
    divisor = tl.where(visible, alpha, 1.0)
    red = tl.minimum(tl.where(visible, red * 255.0 / divisor, 0.0), 255.0)
    green = tl.minimum(tl.where(visible, green * 255.0 / divisor, 0.0), 255.0)
    blue = tl.minimum(tl.where(visible, blue * 255.0 / divisor, 0.0), 255.0)
    return red, green, blue, alpha


@triton.jit
def encode_srgb(value):
    """Encode linear-light colour in [0, 255] as sRGB in [0, 255], unrounded."""
    linear = tl.minimum(tl.maximum(value, 0.0), 255.0) / 255.0
    # x ** y as exp2(y * log2(x)), with x kept off 0 in the lanes the power is not used for.
    # Each step is assigned to a name because Triton's interpreter (3.8) fails to convert a
    # product with a tl.constexpr global that is passed on directly as an argument.
    exponent = tl.log2(tl.maximum(linear, _LINEAR_BREAK)) * _INVERSE_EXPONENT
    curve = (1 + _OFFSET) * tl.exp2(exponent) - _OFFSET
    straight = linear * _SLOPE
    encoded = tl.where(linear <= _LINEAR_BREAK, straight, curve)
    return encoded * 255.0


@triton.jit
def luma(red, green, blue):
    """Return the BT.601 luma of RGB levels, unrounded."""
    weighted = red * _LUMA_RED + green * _LUMA_GREEN + blue * _LUMA_BLUE
    return weighted


@triton.jit
def flatten_over(red, green, blue, alpha, fill_red, fill_green, fill_blue, fill_alpha):
    """Composite straight-alpha RGBA over a background colour (Porter-Duff "over").

    The background channels are scalars in [0, 255]. Returns the RGBA result with straight
    alpha on the 0..255 scale, unrounded.
    """
    alpha = alpha / 255.0
    fill_alpha = fill_alpha / 255.0
    fill_weight = fill_alpha * (1.0 - alpha)
    result_alpha = alpha + fill_weight
    covered = result_alpha > 0.0
    divisor = tl.where(covered, result_alpha, 1.0)
    red = (red / 255.0) * alpha + (fill_red / 255.0) * fill_weight
    green = (green / 255.0) * alpha + (fill_green / 255.0) * fill_weight
    blue = (blue / 255.0) * alpha + (fill_blue / 255.0) * fill_weight
    red = tl.where(covered, red / divisor, 0.0) * 255.0
    green = tl.where(covered, green / divisor, 0.0) * 255.0
    blue = tl.where(covered, blue / divisor, 0.0) * 255.0
    return red, green, blue, result_alpha * 255.0
