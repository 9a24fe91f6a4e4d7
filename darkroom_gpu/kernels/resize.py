"""Ragged-batch antialiased resize with fused colour work, as two Triton kernels.

The horizontal pass reads the packed uint8 sources, decoding sRGB through a table and
premultiplying alpha where an image's flags request it. It writes each image's rows, resized to
the target width, into a float32 scratch buffer. The vertical pass resizes the columns to the
target height and finishes each pixel: it unpremultiplies, encodes sRGB, rounds, makes the
pixel gray or tinted, flattens it over the background and writes uint8. A whole batch is two
launches, whatever the sizes of its images. `darkroom_gpu.kernels.layout` describes the
buffers and the per-image table, and `darkroom_gpu.kernels.filters` the filter.

The filter weights are computed in the kernels from each image's sizes, in float32 as torch
does, rather than read from tables. Each output pixel sums its weighted taps and divides by the
weight total at the end, where torch normalises the weights first. The two orders differ by
float rounding only.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Final

import torch
import triton
import triton.language as tl

from darkroom_gpu import ops
from darkroom_gpu.kernels import layout
from darkroom_gpu.kernels.color import (
    clamp_premultiplied,
    encode_srgb,
    flatten_over,
    luma,
    to_level,
    unpremultiply,
)
from darkroom_gpu.kernels.filters import BICUBIC_A
from darkroom_gpu.kernels.spec import ResizeSpec, check_batch

__all__ = ("resize_images",)

# Output pixels per program. The interpreter runs programs one after another in Python, so it
# gets larger blocks. On a GPU, 256 pixels make 2 per thread of 4 warps.
# NOTE: 256 is a starting point that has not been tuned on a GPU.
_GPU_BLOCK: Final = 256
_INTERPRETER_BLOCK: Final = 4096

_COLUMNS = tl.constexpr(layout.COLUMNS)
_SOURCE_OFFSET = tl.constexpr(layout.SOURCE_OFFSET)
_SCRATCH_OFFSET = tl.constexpr(layout.SCRATCH_OFFSET)
_RESULT_OFFSET = tl.constexpr(layout.RESULT_OFFSET)
_CHANNELS = tl.constexpr(layout.CHANNELS)
_RESULT_CHANNELS = tl.constexpr(layout.RESULT_CHANNELS)
_SOURCE_HEIGHT = tl.constexpr(layout.SOURCE_HEIGHT)
_SOURCE_WIDTH = tl.constexpr(layout.SOURCE_WIDTH)
_TARGET_HEIGHT = tl.constexpr(layout.TARGET_HEIGHT)
_TARGET_WIDTH = tl.constexpr(layout.TARGET_WIDTH)
_TAPS_X = tl.constexpr(layout.TAPS_X)
_TAPS_Y = tl.constexpr(layout.TAPS_Y)
_FIRST_HORIZONTAL_BLOCK = tl.constexpr(layout.FIRST_HORIZONTAL_BLOCK)
_FIRST_VERTICAL_BLOCK = tl.constexpr(layout.FIRST_VERTICAL_BLOCK)
_FLAGS = tl.constexpr(layout.FLAGS)
_TINT = tl.constexpr(layout.TINT)
_BACKGROUND = tl.constexpr(layout.BACKGROUND)
_FLAG_BICUBIC = tl.constexpr(layout.FLAG_BICUBIC)
_FLAG_PREMULTIPLY = tl.constexpr(layout.FLAG_PREMULTIPLY)
_FLAG_LINEAR = tl.constexpr(layout.FLAG_LINEAR)
_FLAG_GRAYSCALE = tl.constexpr(layout.FLAG_GRAYSCALE)
_FLAG_TINT = tl.constexpr(layout.FLAG_TINT)
_FLAG_FLATTEN = tl.constexpr(layout.FLAG_FLATTEN)
_CUBIC_A = tl.constexpr(BICUBIC_A)


def resize_images(
    images: Sequence[torch.Tensor], specs: Sequence[ResizeSpec]
) -> list[torch.Tensor]:
    """Resize a ragged batch and do its colour work in two kernel launches.

    Args:
        images: (C, H, W) uint8 tensors in [0, 255], C in {1, 3, 4} (gray, RGB, RGBA with
            straight alpha), all on one CUDA device; or on the CPU when Triton's interpreter
            is on (``TRITON_INTERPRET=1`` set before the process imports Triton).
        specs: what to do to each image.

    Returns:
        One (``spec.result_channels(C)``, ``spec.height``, ``spec.width``) uint8 tensor per
        image, on the input device. They are views into one new buffer.

    Raises:
        ImageShapeError: If the batch does not pass `check_batch`.
    """
    check_batch(images, specs)
    if not images:
        return []

    device = images[0].device
    block = _INTERPRETER_BLOCK if triton.knobs.runtime.interpret else _GPU_BLOCK
    shapes = [(int(image.shape[0]), int(image.shape[1]), int(image.shape[2])) for image in images]
    table = layout.build_launch_table(shapes, specs, block)

    sources = layout.pack(images)
    rows = table.rows.to(device)
    scratch = torch.empty(table.scratch_elements, dtype=torch.float32, device=device)
    results = torch.empty(table.result_elements, dtype=torch.uint8, device=device)
    count = len(images)

    _horizontal_pass[(table.horizontal_blocks,)](
        sources, scratch, rows, _decode_table(device), count, table.search_steps, BLOCK=block
    )
    _vertical_pass[(table.vertical_blocks,)](
        scratch, results, rows, count, table.search_steps, BLOCK=block
    )
    return layout.unpack(results, table.result_offsets, table.result_shapes)


@functools.cache
def _decode_table(device: torch.device) -> torch.Tensor:
    """Return (512,) float32 levels on `device`: 0..255 as they are, then decoded from sRGB.

    The decoded half comes from the shared op, so it holds the values the reference computes.
    """
    levels = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 256).expand(3, 1, 256)
    decoded = ops.srgb_to_linear(levels)[0, 0]
    return torch.cat((torch.arange(256, dtype=torch.float32), decoded)).to(device)


@triton.jit
def _find_image(rows, count, steps, first_block_column: tl.constexpr):
    """Return the image whose programs include this one, by binary search of first blocks."""
    program = tl.program_id(0)
    low = 0
    high = count - 1
    for _ in range(steps):
        middle = (low + high + 1) // 2
        first = tl.load(rows + middle * _COLUMNS + first_block_column)
        right = first <= program
        low = tl.where(right, middle, low)
        high = tl.where(right, high, middle - 1)
    return low


@triton.jit
def _window(position, source, target, bicubic):
    """Return centre, distance scale, first tap and end tap of output `position` on one axis."""
    scale = source.to(tl.float32) / target.to(tl.float32)
    radius = tl.where(bicubic, 2.0, 1.0)
    support = tl.where(scale >= 1.0, radius * scale, radius)
    inverse = tl.where(scale >= 1.0, 1.0 / scale, 1.0)
    centre = scale * (position.to(tl.float32) + 0.5)
    # float to int conversion truncates toward zero, as torch's static_cast does.
    start = tl.maximum((centre - support + 0.5).to(tl.int32), 0)
    stop = tl.minimum((centre + support + 0.5).to(tl.int32), source)
    return centre, inverse, start, stop


# Triton compiles separate variants for integer arguments equal to 1 or divisible by 16. The
# image count and the search steps change from batch to batch, so they are left unspecialized
# to avoid recompiling.
@triton.jit(do_not_specialize=["count", "steps"])
def _horizontal_pass(sources, scratch, rows, decode, count, steps, BLOCK: tl.constexpr):
    image = _find_image(rows, count, steps, _FIRST_HORIZONTAL_BLOCK)
    row = rows + image * _COLUMNS
    channels = tl.load(row + _CHANNELS).to(tl.int32)
    height = tl.load(row + _SOURCE_HEIGHT).to(tl.int32)
    width = tl.load(row + _SOURCE_WIDTH).to(tl.int32)
    target_width = tl.load(row + _TARGET_WIDTH).to(tl.int32)
    taps = tl.load(row + _TAPS_X).to(tl.int32)
    flags = tl.load(row + _FLAGS).to(tl.int32)
    first_block = tl.load(row + _FIRST_HORIZONTAL_BLOCK).to(tl.int32)
    bicubic = (flags & _FLAG_BICUBIC) != 0
    premultiplied = (flags & _FLAG_PREMULTIPLY) != 0
    linear = (flags & _FLAG_LINEAR) != 0

    index = (tl.program_id(0) - first_block) * BLOCK + tl.arange(0, BLOCK)
    valid = index < height * target_width
    y = index // target_width
    x = index % target_width
    centre, inverse, start, stop = _window(x, width, target_width, bicubic)

    plane = height.to(tl.int64) * width
    line = sources + tl.load(row + _SOURCE_OFFSET) + y.to(tl.int64) * width
    total = tl.zeros((BLOCK,), dtype=tl.float32)
    red = tl.zeros((BLOCK,), dtype=tl.float32)
    green = tl.zeros((BLOCK,), dtype=tl.float32)
    blue = tl.zeros((BLOCK,), dtype=tl.float32)
    alpha = tl.zeros((BLOCK,), dtype=tl.float32)
    for tap in range(taps):
        column = start + tap
        inside = valid & (column < stop)
        distance = tl.abs((column.to(tl.float32) - centre + 0.5) * inverse)
        # The filter is written out here and in the vertical pass rather than called, because
        # Triton's interpreter (3.8) re-patches its language module on every device-function
        # call, which made the interpreted tests several times slower.
        if bicubic:
            near = ((_CUBIC_A + 2.0) * distance - (_CUBIC_A + 3.0)) * distance * distance + 1.0
            far = (((distance - 5.0) * distance + 8.0) * distance - 4.0) * _CUBIC_A
            weight = tl.where(distance < 1.0, near, tl.where(distance < 2.0, far, 0.0))
        else:
            weight = tl.maximum(1.0 - distance, 0.0)
        weight = tl.where(inside, weight, 0.0)
        total += weight

        pixel = line + column
        red_level = tl.load(pixel, mask=inside, other=0)
        green_level = red_level
        blue_level = red_level
        if channels > 1:
            green_level = tl.load(pixel + plane, mask=inside, other=0)
            blue_level = tl.load(pixel + 2 * plane, mask=inside, other=0)
        if linear:
            tap_red = tl.load(decode + 256 + red_level.to(tl.int32))
            tap_green = tl.load(decode + 256 + green_level.to(tl.int32))
            tap_blue = tl.load(decode + 256 + blue_level.to(tl.int32))
        else:
            tap_red = red_level.to(tl.float32)
            tap_green = green_level.to(tl.float32)
            tap_blue = blue_level.to(tl.float32)
        if channels > 3:
            tap_alpha = tl.load(pixel + 3 * plane, mask=inside, other=0).to(tl.float32)
            alpha += weight * tap_alpha
            if premultiplied:
                factor = tap_alpha / 255.0
                tap_red = tap_red * factor
                tap_green = tap_green * factor
                tap_blue = tap_blue * factor
        red += weight * tap_red
        green += weight * tap_green
        blue += weight * tap_blue

    total = tl.where(valid, total, 1.0)
    red = red / total
    green = green / total
    blue = blue / total
    alpha = alpha / total
    # Bicubic overshoot is clamped between the passes, as darkroom_gpu.ops.resize does.
    if bicubic:
        if premultiplied:
            red, green, blue, alpha = clamp_premultiplied(red, green, blue, alpha)
        else:
            red = tl.minimum(tl.maximum(red, 0.0), 255.0)
            green = tl.minimum(tl.maximum(green, 0.0), 255.0)
            blue = tl.minimum(tl.maximum(blue, 0.0), 255.0)
            alpha = tl.minimum(tl.maximum(alpha, 0.0), 255.0)

    out_plane = height.to(tl.int64) * target_width
    out = scratch + tl.load(row + _SCRATCH_OFFSET) + index
    tl.store(out, red, mask=valid)
    if channels > 1:
        tl.store(out + out_plane, green, mask=valid)
        tl.store(out + 2 * out_plane, blue, mask=valid)
    if channels > 3:
        tl.store(out + 3 * out_plane, alpha, mask=valid)


@triton.jit(do_not_specialize=["count", "steps"])
def _vertical_pass(scratch, results, rows, count, steps, BLOCK: tl.constexpr):
    image = _find_image(rows, count, steps, _FIRST_VERTICAL_BLOCK)
    row = rows + image * _COLUMNS
    channels = tl.load(row + _CHANNELS).to(tl.int32)
    height = tl.load(row + _SOURCE_HEIGHT).to(tl.int32)
    target_height = tl.load(row + _TARGET_HEIGHT).to(tl.int32)
    target_width = tl.load(row + _TARGET_WIDTH).to(tl.int32)
    taps = tl.load(row + _TAPS_Y).to(tl.int32)
    flags = tl.load(row + _FLAGS).to(tl.int32)
    first_block = tl.load(row + _FIRST_VERTICAL_BLOCK).to(tl.int32)
    bicubic = (flags & _FLAG_BICUBIC) != 0

    index = (tl.program_id(0) - first_block) * BLOCK + tl.arange(0, BLOCK)
    valid = index < target_height * target_width
    y = index // target_width
    x = index % target_width
    centre, inverse, start, stop = _window(y, height, target_height, bicubic)

    plane = height.to(tl.int64) * target_width
    column_top = scratch + tl.load(row + _SCRATCH_OFFSET) + x
    total = tl.zeros((BLOCK,), dtype=tl.float32)
    red = tl.zeros((BLOCK,), dtype=tl.float32)
    green = tl.zeros((BLOCK,), dtype=tl.float32)
    blue = tl.zeros((BLOCK,), dtype=tl.float32)
    alpha = tl.zeros((BLOCK,), dtype=tl.float32)
    for tap in range(taps):
        source_row = start + tap
        inside = valid & (source_row < stop)
        distance = tl.abs((source_row.to(tl.float32) - centre + 0.5) * inverse)
        if bicubic:
            near = ((_CUBIC_A + 2.0) * distance - (_CUBIC_A + 3.0)) * distance * distance + 1.0
            far = (((distance - 5.0) * distance + 8.0) * distance - 4.0) * _CUBIC_A
            weight = tl.where(distance < 1.0, near, tl.where(distance < 2.0, far, 0.0))
        else:
            weight = tl.maximum(1.0 - distance, 0.0)
        weight = tl.where(inside, weight, 0.0)
        total += weight

        pixel = column_top + source_row.to(tl.int64) * target_width
        red += weight * tl.load(pixel, mask=inside, other=0.0)
        if channels > 1:
            green += weight * tl.load(pixel + plane, mask=inside, other=0.0)
            blue += weight * tl.load(pixel + 2 * plane, mask=inside, other=0.0)
        if channels > 3:
            alpha += weight * tl.load(pixel + 3 * plane, mask=inside, other=0.0)

    total = tl.where(valid, total, 1.0)
    red, green, blue, alpha = _finish(
        red / total, green / total, blue / total, alpha / total, row, flags
    )

    out_plane = target_height.to(tl.int64) * target_width
    out = results + tl.load(row + _RESULT_OFFSET) + index
    result_channels = tl.load(row + _RESULT_CHANNELS).to(tl.int32)
    tl.store(out, red.to(tl.uint8), mask=valid)
    if result_channels > 1:
        tl.store(out + out_plane, green.to(tl.uint8), mask=valid)
        tl.store(out + 2 * out_plane, blue.to(tl.uint8), mask=valid)
    if result_channels > 3:
        tl.store(out + 3 * out_plane, alpha.to(tl.uint8), mask=valid)


@triton.jit
def _finish(red, green, blue, alpha, row, flags):
    """Turn resized float levels into the final levels, in the order of the shared ops.

    Mirrors `from_premultiplied` or `from_working`, then `linear_to_srgb`, `grayscale` or
    `tint`, and `flatten`, each where the image's flags call for it. Returns rounded levels in
    [0, 255] as float32.
    """
    premultiplied = (flags & _FLAG_PREMULTIPLY) != 0
    linear = (flags & _FLAG_LINEAR) != 0
    encoded = (flags & _FLAG_LINEAR) == 0

    if premultiplied:
        red, green, blue, alpha = unpremultiply(red, green, blue, alpha)
    red = tl.minimum(tl.maximum(red, 0.0), 255.0)
    green = tl.minimum(tl.maximum(green, 0.0), 255.0)
    blue = tl.minimum(tl.maximum(blue, 0.0), 255.0)
    alpha = tl.minimum(tl.maximum(alpha, 0.0), 255.0)
    if linear:
        # The float result is encoded as it is: unpremultiply already left colour 0 where
        # alpha is 0, and encoding keeps 0 at 0.
        red = encode_srgb(red)
        green = encode_srgb(green)
        blue = encode_srgb(blue)
    red = to_level(red)
    green = to_level(green)
    blue = to_level(blue)
    alpha = to_level(alpha)
    if premultiplied & encoded:
        # As in from_premultiplied for uint8: no stray colour where alpha rounds to 0.
        clear = alpha == 0.0
        red = tl.where(clear, 0.0, red)
        green = tl.where(clear, 0.0, green)
        blue = tl.where(clear, 0.0, blue)

    if (flags & _FLAG_GRAYSCALE) != 0:
        gray = to_level(luma(red, green, blue))
        red = gray
        green = gray
        blue = gray
    if (flags & _FLAG_TINT) != 0:
        brightness = luma(red, green, blue)
        red = to_level(brightness * (tl.load(row + _TINT).to(tl.float32) / 255.0))
        green = to_level(brightness * (tl.load(row + _TINT + 1).to(tl.float32) / 255.0))
        blue = to_level(brightness * (tl.load(row + _TINT + 2).to(tl.float32) / 255.0))

    if (flags & _FLAG_FLATTEN) != 0:
        red, green, blue, alpha = flatten_over(
            red,
            green,
            blue,
            alpha,
            tl.load(row + _BACKGROUND).to(tl.float32),
            tl.load(row + _BACKGROUND + 1).to(tl.float32),
            tl.load(row + _BACKGROUND + 2).to(tl.float32),
            tl.load(row + _BACKGROUND + 3).to(tl.float32),
        )
        red = to_level(red)
        green = to_level(green)
        blue = to_level(blue)
        alpha = to_level(alpha)
    return red, green, blue, alpha
