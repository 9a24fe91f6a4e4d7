"""The processing pipeline: plan a request in plain Python, then run its steps on a tensor.

The order is fixed and part of the URL contract: EXIF orientation -> resize/crop/pad -> mono ->
blur -> flip -> rotate -> flatten alpha. `plan_transform` decides every size and colour from the
options and the source header, and `STEPS` lists the tensor work in that order, so the CPU and
GPU manipulators run the same code on their own devices.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import torch

from darkroom_gpu import ops
from darkroom_gpu.codecs import ImageFormat, ImageInfo
from darkroom_gpu.geometry import ResizePlan, Size, oriented_size, plan_resize, rotated_size
from darkroom_gpu.options import Color, OutputFormat, ProcessingOptions

__all__ = (
    "STEPS",
    "TransformPlan",
    "choose_output_format",
    "decode_size",
    "plan_transform",
    "run_steps",
)

WHITE: Final = Color(255, 255, 255)
TRANSPARENT: Final = Color(0, 0, 0, 0)
GRAYSCALE: Final = Color(0, 0, 0)
FORMATS_WITH_ALPHA: Final = frozenset(
    {OutputFormat.PNG, OutputFormat.WEBP, OutputFormat.AVIF, OutputFormat.GIF}
)
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
) -> TransformPlan:
    """Plan sizes, boxes and colours for one request from its options and the source header."""
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

    return TransformPlan(
        orientation=source.orientation,
        resize=resize,
        pad_fill=background or default_fill,
        mono=options.mono,
        blur=options.blur,
        flip_horizontal=options.flip_horizontal,
        flip_vertical=options.flip_vertical,
        rotation=options.rotation,
        rotated=rotated_size(resize.canvas, options.rotation),
        flatten=flatten,
        output_format=output_format,
    )


def decode_size(plan: TransformPlan) -> Size:
    """Return the smallest stored-orientation size the decoder must deliver for `plan`."""
    return oriented_size(plan.resize.scaled, plan.orientation)


def _opaque(color: Color) -> Color:
    return Color(color.red, color.green, color.blue)


def _orient(image: torch.Tensor, plan: TransformPlan) -> torch.Tensor:
    return ops.orient(image, plan.orientation)


def _resize(image: torch.Tensor, plan: TransformPlan) -> torch.Tensor:
    scaled, crop, canvas, placement = (
        plan.resize.scaled,
        plan.resize.crop,
        plan.resize.canvas,
        plan.resize.placement,
    )
    if image.shape[-2:] != (scaled.height, scaled.width):
        image = ops.resize(
            image,
            scaled.height,
            scaled.width,
            interpolation=ops.Interpolation.BICUBIC,
            antialias=True,
        )
    if (crop.width, crop.height) != (scaled.width, scaled.height):
        image = ops.crop(image, crop.top, crop.left, crop.height, crop.width)
    if (canvas.width, canvas.height) != (crop.width, crop.height):
        fill = plan.pad_fill
        if fill.alpha < 255 and image.shape[-3] == 3:
            image = _add_alpha(image)
        values = (fill.red, fill.green, fill.blue, fill.alpha)[: image.shape[-3]]
        image = ops.pad(image, placement.top, placement.left, canvas.height, canvas.width, values)
    return image


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

STEPS: Final[tuple[Step, ...]] = (_orient, _resize, _mono, _blur, _flip, _rotate, _flatten)


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
