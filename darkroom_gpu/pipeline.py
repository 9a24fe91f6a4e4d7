"""The processing pipeline: plan a request in plain Python, then run its steps on a tensor.

The order is fixed and part of the URL contract: EXIF orientation -> resize/crop/pad -> mono ->
blur -> flip -> rotate -> flatten alpha. `plan_transform` decides every size and colour from the
options and the source header, and `STEPS` lists the tensor work in that order, so the CPU and
GPU manipulators run the same code on their own devices. For speed, scaling runs before the
orientation, which then moves fewer pixels. The result is the same because the two commute.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import torch

from darkroom_gpu import ops
from darkroom_gpu.codecs import ANIMATED_SOURCE_FORMATS, ImageFormat, ImageInfo, animatable_formats
from darkroom_gpu.errors import UnprocessableImageError
from darkroom_gpu.geometry import Box, ResizePlan, Size, oriented_size, plan_resize, rotated_size
from darkroom_gpu.options import Color, OutputFormat, ProcessingOptions

__all__ = (
    "STEPS",
    "TransformPlan",
    "choose_output_format",
    "decode_size",
    "keeps_animation",
    "plan_transform",
    "run_steps",
)

WHITE: Final = Color(255, 255, 255)
TRANSPARENT: Final = Color(0, 0, 0, 0)
GRAYSCALE: Final = Color(0, 0, 0)
FORMATS_WITH_ALPHA: Final = frozenset(
    {OutputFormat.PNG, OutputFormat.WEBP, OutputFormat.AVIF, OutputFormat.GIF}
)
# Angles this close to a multiple of 90 degrees move no pixel visibly, so they are turned
# exactly instead of resampled onto an enlarged canvas.
ROTATION_SNAP_DEGREES: Final = 1e-3
# Resizing the whole image before cropping is exact but wasteful when the scaled image is much
# larger than both the source and the kept box (a 1x20000 strip filled into 300x300 would scale
# to 300x6000000); past this ratio only the region under the box is resized.
CROP_FIRST_RATIO: Final = 2
# Largest alignment step, in source pixels, worth widening a crop region by to make its resize
# exact; beyond it the region is resized approximately.
CROP_FIRST_MAX_ALIGNMENT: Final = 256
# EXIF orientations other than 1 (upright); other values, 0 among them, leave pixels alone.
ORIENTATIONS_THAT_MOVE: Final = frozenset(range(2, 9))
_SOURCE_TO_OUTPUT: Final = {
    ImageFormat.JPEG: OutputFormat.JPEG,
    ImageFormat.PNG: OutputFormat.PNG,
    ImageFormat.WEBP: OutputFormat.WEBP,
    ImageFormat.AVIF: OutputFormat.AVIF,
    ImageFormat.GIF: OutputFormat.GIF,
}


@dataclass(frozen=True, slots=True)
class TransformPlan:
    """Everything the tensor steps need, decided before any pixel is touched.

    Attributes:
        orientation: EXIF orientation 1..8 applied first.
        resize: sizes and boxes for the upright image, in pixels.
        pad_fill: colour of the area `fit=pad` adds.
        mono: ``None``, `GRAYSCALE` or a tint colour.
        blur: Gaussian sigma in output pixels; 0 for none.
        flip_horizontal: mirror left-right.
        flip_vertical: mirror top-bottom.
        rotation: degrees clockwise in [0, 360).
        rotated: canvas size after rotation.
        flatten: background to composite over at the end; ``None`` keeps alpha.
        output_format: the format to encode.
        crop_first: resize only the region under the crop box, because the whole scaled
            image would be far larger than both the source and the result.
        linear: resample in linear light rather than on sRGB-encoded values.
        animate: keep every frame: the source is animated and `output_format` can animate.
        progressive: write a progressive JPEG.
    """

    orientation: int
    resize: ResizePlan
    pad_fill: Color
    mono: Color | None
    blur: float
    flip_horizontal: bool
    flip_vertical: bool
    rotation: float
    rotated: Size
    flatten: Color | None
    output_format: OutputFormat
    crop_first: bool = False
    linear: bool = False
    animate: bool = False
    progressive: bool = False

    @property
    def result_size(self) -> Size:
        """Width and height of the encoded result."""
        return self.rotated


def choose_output_format(
    options: ProcessingOptions, source: ImageInfo, negotiated: OutputFormat | None
) -> OutputFormat:
    """Pick the output format: explicit ``format``, then the ``Accept`` choice, then the source's.

    A source in a format the server cannot write becomes JPEG, or PNG when it has alpha.
    """
    if options.output_format is not None:
        return options.output_format
    if negotiated is not None:
        return negotiated
    if source.format in _SOURCE_TO_OUTPUT:
        return _SOURCE_TO_OUTPUT[source.format]
    return OutputFormat.PNG if source.has_alpha else OutputFormat.JPEG


def plan_transform(
    options: ProcessingOptions,
    source: ImageInfo,
    output_format: OutputFormat,
    *,
    allow_enlarge: bool,
    max_output_side: int = 8192,
    max_output_pixels: int = 40_000_000,
) -> TransformPlan:
    """Plan sizes, boxes and colours for one request from its options and the source header.

    Raises:
        UnprocessableImageError: the result would have a side over `max_output_side` or more
            than `max_output_pixels` pixels, which a size set from one side or a rotation can
            produce from valid parameters.
    """
    upright = oriented_size(source.size, source.orientation)
    resize = plan_resize(
        upright,
        options.target_width,
        options.target_height,
        options.fit,
        options.gravity,
        allow_enlarge=allow_enlarge,
    )
    keeps_alpha = output_format in FORMATS_WITH_ALPHA
    default_fill = TRANSPARENT if keeps_alpha else WHITE
    background = options.background

    flatten: Color | None = None
    if not keeps_alpha:
        flatten = _opaque(background or WHITE)
    elif background is not None:
        flatten = background

    rotation = _snap_rotation(options.rotation)
    rotated = rotated_size(resize.canvas, rotation)
    _check_result_size(rotated, max_output_side, max_output_pixels)
    scaled_pixels = resize.scaled.width * resize.scaled.height
    kept_pixels = max(resize.crop.width * resize.crop.height, upright.width * upright.height)

    return TransformPlan(
        orientation=source.orientation,
        resize=resize,
        pad_fill=background or default_fill,
        mono=options.mono,
        blur=options.blur,
        flip_horizontal=options.flip_horizontal,
        flip_vertical=options.flip_vertical,
        rotation=rotation,
        rotated=rotated,
        flatten=flatten,
        output_format=output_format,
        crop_first=scaled_pixels > CROP_FIRST_RATIO * kept_pixels,
        linear=options.linear,
        animate=keeps_animation(source, output_format),
        progressive=options.progressive and output_format is OutputFormat.JPEG,
    )


def keeps_animation(source: ImageInfo, output_format: OutputFormat) -> bool:
    """Tell whether every frame of `source` is kept: it is animated and the output can animate.

    Otherwise only the first frame is decoded.
    """
    return (
        source.frames > 1
        and source.format in ANIMATED_SOURCE_FORMATS
        and output_format in animatable_formats()
    )


def _snap_rotation(degrees: float) -> float:
    nearest = round(degrees / 90) * 90 % 360
    distance = abs(degrees - round(degrees / 90) * 90)
    return float(nearest) if distance < ROTATION_SNAP_DEGREES else degrees


def _check_result_size(result: Size, max_side: int, max_pixels: int) -> None:
    pixels = result.width * result.height
    if max(result.width, result.height) > max_side or pixels > max_pixels:
        raise UnprocessableImageError(
            f"the result would be {result.width}x{result.height} pixels, over this source's "
            f"limits of {max_side} pixels a side and {max_pixels} pixels in all; "
            "request a smaller w or h"
        )


def decode_size(plan: TransformPlan) -> Size:
    """Return the smallest stored-orientation size the decoder must deliver for `plan`."""
    return oriented_size(plan.resize.scaled, plan.orientation)


def _opaque(color: Color) -> Color:
    return Color(color.red, color.green, color.blue)


def _scale(image: torch.Tensor, plan: TransformPlan) -> torch.Tensor:
    """Resize to the planned scaled size, still in stored orientation.

    Resizing commutes with flips and quarter turns because the filter is symmetric. Scaling
    first therefore gives the same pixels, up to the rounding between the filter's two passes,
    and the orientation then moves the smaller scaled image. Crop-first plans place their
    region in upright coordinates, so those scale in `_resize`.
    """
    if plan.crop_first:
        return image
    stored = oriented_size(plan.resize.scaled, plan.orientation)
    if image.shape[-2:] == (stored.height, stored.width):
        return image
    return _resample(image, stored.height, stored.width, plan)


def _orient(image: torch.Tensor, plan: TransformPlan) -> torch.Tensor:
    if plan.orientation not in ORIENTATIONS_THAT_MOVE:
        return image
    return ops.orient(image, plan.orientation)


def _resize(image: torch.Tensor, plan: TransformPlan) -> torch.Tensor:
    scaled, crop, canvas, placement = (
        plan.resize.scaled,
        plan.resize.crop,
        plan.resize.canvas,
        plan.resize.placement,
    )
    if plan.crop_first:
        image = _resize_crop_region(image, scaled, crop, plan)
    elif image.shape[-2:] != (scaled.height, scaled.width):
        image = _resample(image, scaled.height, scaled.width, plan)
    if not plan.crop_first and (crop.width, crop.height) != (scaled.width, scaled.height):
        image = ops.crop(image, crop.top, crop.left, crop.height, crop.width)
    if (canvas.width, canvas.height) != (crop.width, crop.height):
        fill = plan.pad_fill
        if fill.alpha < 255 and image.shape[-3] == 3:
            image = _add_alpha(image)
        values = (fill.red, fill.green, fill.blue, fill.alpha)[: image.shape[-3]]
        image = ops.pad(image, placement.top, placement.left, canvas.height, canvas.width, values)
    return image


def _resample(image: torch.Tensor, height: int, width: int, plan: TransformPlan) -> torch.Tensor:
    """Resize with the antialiased bicubic filter, in linear light when `plan.linear` is set."""
    if not plan.linear:
        return ops.resize(
            image, height, width, interpolation=ops.Interpolation.BICUBIC, antialias=True
        )
    linear = ops.srgb_to_linear(image)
    resized = ops.resize(
        linear, height, width, interpolation=ops.Interpolation.BICUBIC, antialias=True
    )
    return ops.linear_to_srgb(resized, image.dtype)


def _resize_crop_region(
    image: torch.Tensor, scaled: Size, crop: Box, plan: TransformPlan
) -> torch.Tensor:
    """Resize only the source region under `crop`, then cut the box out of it.

    The region is widened by the filter's support and aligned so that its offset and size map
    to whole scaled pixels when the scale is a simple fraction; then the result equals that of
    resizing the whole image. Otherwise the box lands within half a scaled pixel of it.
    """
    height, width = int(image.shape[-2]), int(image.shape[-1])
    left, right, region_width = _crop_region(width, scaled.width, crop.left, crop.width)
    top, bottom, region_height = _crop_region(height, scaled.height, crop.top, crop.height)

    region = ops.crop(image, top, left, bottom - top, right - left)
    region = _resample(region, region_height, region_width, plan)
    offset_x = min(
        region_width - crop.width, max(0, round(crop.left - left * scaled.width / width))
    )
    offset_y = min(
        region_height - crop.height, max(0, round(crop.top - top * scaled.height / height))
    )
    return ops.crop(region, offset_y, offset_x, crop.height, crop.width)


def _crop_region(source: int, scaled: int, box_start: int, box_length: int) -> tuple[int, int, int]:
    """Return the source span [start, end) under a box of the scaled axis, and its scaled length.

    Args:
        source: length of the axis in the image, in pixels.
        scaled: length of the whole axis once resized.
        box_start: where the kept box starts on the scaled axis.
        box_length: the kept box's length on the scaled axis.
    """
    scale = scaled / source
    # Bicubic reads two source pixels each side when enlarging, 2 / scale when reducing.
    margin = math.ceil(2 / min(scale, 1.0)) + 1
    start = max(0, math.floor(box_start / scale) - margin)
    end = min(source, math.ceil((box_start + box_length) / scale) + margin)

    # With scale = p / q in lowest terms, spans starting and ending on multiples of q map to
    # whole scaled pixels, which makes the region's resize sample exactly like the whole one.
    step = source // math.gcd(source, scaled)
    if step <= CROP_FIRST_MAX_ALIGNMENT:
        start -= start % step
        end = min(source, end + (-end) % step)
    length = max(box_length, round((end - start) * scale))
    return start, end, length


def _mono(image: torch.Tensor, plan: TransformPlan) -> torch.Tensor:
    if plan.mono is None:
        return image
    if plan.mono == GRAYSCALE:
        return ops.grayscale(image)
    return ops.tint(image, (plan.mono.red, plan.mono.green, plan.mono.blue))


def _blur(image: torch.Tensor, plan: TransformPlan) -> torch.Tensor:
    if plan.blur <= 0:
        return image
    return ops.gaussian_blur(image, plan.blur)


def _flip(image: torch.Tensor, plan: TransformPlan) -> torch.Tensor:
    if not (plan.flip_horizontal or plan.flip_vertical):
        return image
    return ops.flip(image, horizontal=plan.flip_horizontal, vertical=plan.flip_vertical)


def _rotate(image: torch.Tensor, plan: TransformPlan) -> torch.Tensor:
    if plan.rotation == 0:
        return image
    return ops.rotate(image, plan.rotation, plan.rotated.height, plan.rotated.width)


def _flatten(image: torch.Tensor, plan: TransformPlan) -> torch.Tensor:
    if plan.flatten is None or image.shape[-3] == 3:
        return image
    color = plan.flatten
    return ops.flatten(image, (color.red, color.green, color.blue, color.alpha))


def _add_alpha(image: torch.Tensor) -> torch.Tensor:
    opaque = torch.full_like(image[..., :1, :, :], 255)
    return torch.cat([image, opaque], dim=-3)


Step = Callable[[torch.Tensor, TransformPlan], torch.Tensor]

STEPS: Final[tuple[Step, ...]] = (_scale, _orient, _resize, _mono, _blur, _flip, _rotate, _flatten)


def run_steps(image: torch.Tensor, plan: TransformPlan) -> torch.Tensor:
    """Run every step of `plan` in order.

    Args:
        image: ``(C, H, W)`` or ``(B, C, H, W)`` uint8 in [0, 255], RGB or RGBA, in stored
            orientation, at the decoded size (which may be reduced by shrink-on-load).
        plan: the sizes, colours and flags planned for the request.

    Returns:
        The result, same dtype and device, ``plan.result_size``, RGB or RGBA.
    """
    for step in STEPS:
        image = step(image, plan)
    return image
