"""Plan output sizes, crop boxes and padding in plain Python, before any pixel is touched.

Convention: sizes and boxes are in whole pixels with x to the right, y down and the origin at
the top-left corner. Widths come before heights and every pair is a named `Size` or `Box`.
Target sizes passed in here already include ``dpr``; 0 means the side is unset.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Final

from darkroom_gpu.options import FitMode, Gravity

__all__ = (
    "Box",
    "ResizePlan",
    "Size",
    "oriented_size",
    "plan_resize",
    "rotated_size",
    "round_half_up",
)

# EXIF orientations 5 to 8 include a quarter turn, so the upright image has width and height
# swapped. Orientations 1 to 4 are at most a mirror or a half turn.
_TRANSPOSING_ORIENTATIONS: Final = frozenset({5, 6, 7, 8})
# Decimal places kept before rounding a rotated side up, so that float noise such as
# 100.00000000000001 does not add a whole pixel.
_ROTATION_DECIMALS: Final = 6
_ROTATION_SLACK_PIXELS: Final = 0.01

_LEFT_GRAVITIES: Final = frozenset({Gravity.LEFT, Gravity.TOP_LEFT, Gravity.BOTTOM_LEFT})
_RIGHT_GRAVITIES: Final = frozenset({Gravity.RIGHT, Gravity.TOP_RIGHT, Gravity.BOTTOM_RIGHT})
_TOP_GRAVITIES: Final = frozenset({Gravity.TOP, Gravity.TOP_LEFT, Gravity.TOP_RIGHT})
_BOTTOM_GRAVITIES: Final = frozenset({Gravity.BOTTOM, Gravity.BOTTOM_LEFT, Gravity.BOTTOM_RIGHT})


@dataclass(frozen=True, slots=True)
class Size:
    """Image size in pixels."""

    width: int
    height: int


@dataclass(frozen=True, slots=True)
class Box:
    """Rectangle in pixels: its top-left corner and its size."""

    left: int
    top: int
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class ResizePlan:
    """Resize, crop and pad steps that turn an upright source into the output."""

    scaled: Size
    """Size that the whole upright source image is resized to."""
    crop: Box
    """Region of the scaled image that is kept, or the whole scaled image when nothing is cut."""
    canvas: Size
    """Final size after padding, equal to the crop size unless the fit mode is pad."""
    placement: Box
    """Position of the kept region on the canvas, with the same width and height as the crop."""


def plan_resize(
    source: Size,
    target_width: int,
    target_height: int,
    fit: FitMode,
    gravity: Gravity,
    *,
    allow_enlarge: bool = True,
) -> ResizePlan:
    """Plan how an upright source image becomes the requested target size.

    With neither side set the source size is kept. With one side set, that side is exact
    and the other follows the aspect ratio, for every fit mode, because there is no box to
    fill. With both set:

    - inside: scale by min(tw / sw, th / sh), so that the image fits in the box.
    - crop: scale by max(tw / sw, th / sh) to cover the box, then cut tw x th at the anchor.
    - scale: resize to exactly tw x th, ignoring the aspect ratio.
    - pad: scale as inside, then centre the image on a tw x th canvas.

    The side that sets the scale factor is exact. The other side is rounded half up and
    never below 1 pixel, and never beyond the target (inside, pad) or below it (crop).

    When ``allow_enlarge`` is False, the scale factor is capped at 1 and the aspect ratio is
    kept. Then inside and one-side requests larger than the source give the source size.
    Crop cuts a min(tw, sw) x min(th, sh) box at the anchor from the unscaled source when
    the source is too small to cover the box. Scale caps each side at the source side. Pad
    keeps the requested canvas but centres the image without enlarging it.

    Args:
        source: Size of the upright source image in pixels, each side at least 1.
        target_width: Requested width in pixels including ``dpr``, or 0 when unset.
        target_height: Requested height in pixels including ``dpr``, or 0 when unset.
        fit: How the image fills the box when both sides are set.
        gravity: Anchor of the crop box for `FitMode.CROP`, ignored by the other modes.
        allow_enlarge: Whether the image may be scaled above its source size.

    Returns:
        The plan. No side of any size or box in it is 0.

    Raises:
        ValueError: A source side is below 1 or a target side is negative.
    """
    if source.width < 1 or source.height < 1:
        raise ValueError(f"source sides must be at least 1 pixel, got {source}")
    if target_width < 0 or target_height < 0:
        raise ValueError(
            f"target sides must be 0 or more pixels, got {target_width} x {target_height}"
        )

    if not target_width and not target_height:
        return _plan_without_crop(source)
    if not target_width or not target_height:
        return _plan_without_crop(
            _fit_one_side(source, target_width, target_height, allow_enlarge=allow_enlarge)
        )

    target = Size(target_width, target_height)
    if fit is FitMode.SCALE:
        if allow_enlarge:
            return _plan_without_crop(target)
        capped = Size(min(target.width, source.width), min(target.height, source.height))
        return _plan_without_crop(capped)
    if fit is FitMode.CROP:
        return _plan_crop(source, target, gravity, allow_enlarge=allow_enlarge)

    scaled = _fit_inside(source, target, allow_enlarge=allow_enlarge)
    if fit is FitMode.PAD:
        placement = Box(
            left=(target.width - scaled.width) // 2,
            top=(target.height - scaled.height) // 2,
            width=scaled.width,
            height=scaled.height,
        )
        return ResizePlan(scaled=scaled, crop=_whole(scaled), canvas=target, placement=placement)
    return _plan_without_crop(scaled)


def oriented_size(size: Size, orientation: int) -> Size:
    """Return the upright size of an image stored with an EXIF orientation.

    Args:
        size: Stored size in pixels.
        orientation: EXIF orientation tag value, where 5 to 8 include a quarter turn.

    Returns:
        The size with width and height swapped for orientations 5 to 8, otherwise unchanged,
        including for missing or invalid tag values.
    """
    if orientation in _TRANSPOSING_ORIENTATIONS:
        return Size(size.height, size.width)
    return size


def rotated_size(size: Size, degrees: float) -> Size:
    """Compute the canvas that holds an image rotated clockwise by any angle.

    Args:
        size: Size of the image before rotation in pixels.
        degrees: Clockwise rotation in degrees, any finite value, taken modulo 360.

    Returns:
        The bounding size: unchanged for 0 and 180 degrees, swapped exactly for 90 and 270,
        and otherwise the rotated extents |w cos| + |h sin| by |w sin| + |h cos| rounded up
        to whole pixels, never below 1.

    Raises:
        ValueError: ``degrees`` is NaN or infinite.
    """
    if not math.isfinite(degrees):
        raise ValueError(f"degrees must be finite, got {degrees}")
    normalised = degrees % 360.0
    if normalised in (0.0, 180.0, 360.0):
        return size
    if normalised in (90.0, 270.0):
        return Size(size.height, size.width)

    radians = math.radians(normalised)
    cos, sin = abs(math.cos(radians)), abs(math.sin(radians))
    width = size.width * cos + size.height * sin
    height = size.width * sin + size.height * cos
    return Size(_ceil_pixels(width), _ceil_pixels(height))


def round_half_up(value: float) -> int:
    """Round to the nearest integer, with halves going up (towards positive infinity).

    The float is rounded exactly as stored, so 2.5 gives 3 and -2.5 gives -2.

    Args:
        value: Any finite number.

    Returns:
        floor(value + 0.5), computed without float error.

    Raises:
        ValueError: ``value`` is NaN or infinite.
    """
    if not math.isfinite(value):
        raise ValueError(f"cannot round a non-finite value, got {value}")
    return math.floor(Fraction(value) + Fraction(1, 2))


def _plan_without_crop(scaled: Size) -> ResizePlan:
    whole = _whole(scaled)
    return ResizePlan(scaled=scaled, crop=whole, canvas=scaled, placement=whole)


def _whole(size: Size) -> Box:
    return Box(left=0, top=0, width=size.width, height=size.height)


def _fit_one_side(
    source: Size, target_width: int, target_height: int, *, allow_enlarge: bool
) -> Size:
    """Scale so that the one set side is exact, keeping the aspect ratio."""
    if target_width:
        if not allow_enlarge and target_width > source.width:
            return source
        return Size(target_width, _scale_side(source.height, target_width, source.width))
    if not allow_enlarge and target_height > source.height:
        return source
    return Size(_scale_side(source.width, target_height, source.height), target_height)


def _fit_inside(source: Size, target: Size, *, allow_enlarge: bool) -> Size:
    """Scale by min(tw / sw, th / sh) so that the image fits inside the target box."""
    # Compare tw / sw with th / sh by cross-multiplying, so that ties are decided exactly.
    width_decides = target.width * source.height <= target.height * source.width
    if width_decides:
        if not allow_enlarge and target.width >= source.width:
            return source
        height = _scale_side(source.height, target.width, source.width)
        return Size(target.width, min(height, target.height))
    if not allow_enlarge and target.height >= source.height:
        return source
    width = _scale_side(source.width, target.height, source.height)
    return Size(min(width, target.width), target.height)


def _plan_crop(source: Size, target: Size, gravity: Gravity, *, allow_enlarge: bool) -> ResizePlan:
    """Scale by max(tw / sw, th / sh) to cover the target box, then cut it at the anchor."""
    width_decides = target.width * source.height >= target.height * source.width
    if width_decides:
        scale_above_one = target.width > source.width
        height = _scale_side(source.height, target.width, source.width)
        scaled = Size(target.width, max(height, target.height))
    else:
        scale_above_one = target.height > source.height
        width = _scale_side(source.width, target.height, source.height)
        scaled = Size(max(width, target.width), target.height)

    crop_size = target
    if scale_above_one and not allow_enlarge:
        scaled = source
        crop_size = Size(min(target.width, source.width), min(target.height, source.height))

    slack_x = scaled.width - crop_size.width
    slack_y = scaled.height - crop_size.height
    crop = Box(
        left=_anchor_offset(slack_x, gravity, _LEFT_GRAVITIES, _RIGHT_GRAVITIES),
        top=_anchor_offset(slack_y, gravity, _TOP_GRAVITIES, _BOTTOM_GRAVITIES),
        width=crop_size.width,
        height=crop_size.height,
    )
    return ResizePlan(scaled=scaled, crop=crop, canvas=crop_size, placement=_whole(crop_size))


def _anchor_offset(
    slack: int, gravity: Gravity, start: frozenset[Gravity], end: frozenset[Gravity]
) -> int:
    """Offset of the crop box along one axis, given the pixels left over on that axis."""
    if gravity in start:
        return 0
    if gravity in end:
        return slack
    return slack // 2


def _scale_side(length: int, numerator: int, denominator: int) -> int:
    """Scale ``length`` by numerator / denominator, rounded half up, at least 1.

    Integer arithmetic keeps the rounding exact: 2448 * 300 / 3264 is 225, not 224.99999.
    """
    return max(1, (2 * length * numerator + denominator) // (2 * denominator))


def _ceil_pixels(extent: float) -> int:
    # A corner that pokes out by under a hundredth of a pixel adds no visible pixel, and
    # rounding it up would shift the whole image by half a pixel on the enlarged canvas.
    return max(1, math.ceil(round(extent, _ROTATION_DECIMALS) - _ROTATION_SLACK_PIXELS))
