"""The separable antialiased resize filter that the kernels evaluate, in plain Python and torch.

Each axis is resized on its own. Output pixel i of an axis resized from `source` to `target`
pixels has its centre at source coordinate ``scale * (i + 0.5)`` with ``scale = source /
target`` (pixel centres at half-integers, ``align_corners=False``). The filter reaches
``radius`` source pixels to each side of that centre, and ``radius * scale`` when downscaling,
so that every covered source pixel counts. Its taps are the source pixels ``start .. stop - 1``
with

    start = max(trunc(centre - support + 0.5), 0)
    stop = min(trunc(centre + support + 0.5), source)
    weight(j) = filter((j - centre + 0.5) * min(1 / scale, 1))

normalised to sum to 1. The filter is the triangle for bilinear and the Keys cubic with
a = -0.5 for bicubic. This is what torch's ``F.interpolate(..., antialias=True,
align_corners=False)`` computes (and Pillow's ``Image.resize``), so the kernels match
`darkroom_gpu.ops.resize`. `window_weights` states it in torch, and the Triton kernels in
`darkroom_gpu.kernels.resize` evaluate the same formula per output pixel.
"""

from __future__ import annotations

import math
from typing import Final

import torch

from darkroom_gpu.ops import Interpolation

__all__ = ("BICUBIC_A", "FILTER_RADIUS", "max_taps", "support", "window_weights")

# The cubic's free parameter; torch and Pillow use -0.5 for antialiased resizing (torch uses
# -0.75 when antialias is off).
BICUBIC_A: Final = -0.5
# Half-width of each filter, in source pixels at scale 1.
FILTER_RADIUS: Final = {Interpolation.BILINEAR: 1, Interpolation.BICUBIC: 2}


def support(source: int, target: int, interpolation: Interpolation) -> float:
    """Return how far the filter reaches to each side of an output pixel, in source pixels."""
    scale = source / target
    radius = FILTER_RADIUS[interpolation]
    return radius * scale if scale >= 1 else float(radius)


def max_taps(source: int, target: int, interpolation: Interpolation) -> int:
    """Return an upper bound on the taps of any output pixel of an axis.

    The window spans ``2 * support`` source pixels, and truncating its two ends can add one.
    The bound is computed in exact integer arithmetic, so that it is never below the count the
    kernels get from the float32 support.
    """
    radius = FILTER_RADIUS[interpolation]
    reach = radius if source <= target else math.ceil(radius * source / target)
    return 2 * reach + 1


def window_weights(
    source: int, target: int, interpolation: Interpolation
) -> tuple[torch.Tensor, torch.Tensor]:
    """Compute the first tap and the normalised weights of every output pixel of one axis.

    Args:
        source: Input length of the axis in pixels, >= 1.
        target: Output length of the axis in pixels, >= 1.
        interpolation: Filter to evaluate.

    Returns:
        ``starts``, (target,) int64 index of each output pixel's first source pixel, and
        ``weights``, (target, `max_taps`) float64 weights of the source pixels ``starts[i]``,
        ``starts[i] + 1``, ...; taps past the window have weight 0 and each row sums to 1.
    """
    scale = source / target
    reach = support(source, target, interpolation)
    inverse = 1 / scale if scale >= 1 else 1.0
    centres = scale * (torch.arange(target, dtype=torch.float64) + 0.5)
    starts = (centres - reach + 0.5).trunc().clamp(min=0).to(torch.int64)
    stops = (centres + reach + 0.5).trunc().clamp(max=source).to(torch.int64)

    taps = torch.arange(max_taps(source, target, interpolation), dtype=torch.int64)
    positions = starts[:, None] + taps[None, :]
    distances = (positions.to(torch.float64) - centres[:, None] + 0.5) * inverse
    weights = _evaluate(distances, interpolation)
    weights = torch.where(positions < stops[:, None], weights, 0.0)
    return starts, weights / weights.sum(dim=1, keepdim=True)


def _evaluate(distances: torch.Tensor, interpolation: Interpolation) -> torch.Tensor:
    x = distances.abs()
    if interpolation is Interpolation.BILINEAR:
        return (1 - x).clamp(min=0)
    a = BICUBIC_A
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return torch.where(x < 1, near, torch.where(x < 2, far, 0.0))
