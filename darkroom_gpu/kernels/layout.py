"""Data layout of a ragged batch: images packed into flat buffers, and the per-image table.

Convention:
    A ragged batch is N images of shapes (C_i, H_i, W_i), packed one after another into one
    flat buffer, each image contiguous in (C, H, W) order. `offsets` are element offsets of
    each image into its buffer. The kernels read the packed uint8 sources, write a float32
    scratch buffer of shapes (C_i, H_i, target W_i) between the horizontal and the vertical
    pass, and write a packed uint8 result buffer of shapes (result C_i, target H_i, target W_i).

    Everything else a kernel needs about image i is row i of one int64 table of `COLUMNS`
    columns, at the indices named below. Each program of a pass handles `block` consecutive
    output pixels of one image, and finds its image by binary search of the program id in the
    FIRST_*_BLOCK column.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import torch

from darkroom_gpu.kernels.filters import max_taps
from darkroom_gpu.kernels.spec import ResizeSpec
from darkroom_gpu.ops import Interpolation

__all__ = (
    "COLUMNS",
    "LaunchTable",
    "build_launch_table",
    "pack",
    "packed_offsets",
    "unpack",
)

# Columns of the per-image table.
SOURCE_OFFSET: Final = 0  # element offset of the image in the packed source
SCRATCH_OFFSET: Final = 1  # element offset of its horizontal-pass result in the scratch buffer
RESULT_OFFSET: Final = 2  # element offset of its result in the packed result
CHANNELS: Final = 3  # input channels: 1, 3 or 4
RESULT_CHANNELS: Final = 4  # result channels: the input's, or 3 after flattening RGBA
SOURCE_HEIGHT: Final = 5
SOURCE_WIDTH: Final = 6
TARGET_HEIGHT: Final = 7
TARGET_WIDTH: Final = 8
TAPS_X: Final = 9  # bound on the taps of one output pixel of the horizontal pass
TAPS_Y: Final = 10  # the same for the vertical pass
FIRST_HORIZONTAL_BLOCK: Final = 11  # id of the image's first program in the horizontal pass
FIRST_VERTICAL_BLOCK: Final = 12  # the same in the vertical pass
FLAGS: Final = 13  # a sum of the FLAG_* bits
TINT: Final = 14  # 3 columns: tint R, G, B in [0, 255]
BACKGROUND: Final = 17  # 4 columns: background R, G, B, A in [0, 255]
COLUMNS: Final = 21

# Bits of the FLAGS column.
FLAG_BICUBIC: Final = 1  # the bicubic filter, else bilinear
FLAG_PREMULTIPLY: Final = 2  # resample RGBA with premultiplied colour
FLAG_LINEAR: Final = 4  # resample in linear light
FLAG_GRAYSCALE: Final = 8
FLAG_TINT: Final = 16
FLAG_FLATTEN: Final = 32


@dataclass(frozen=True, slots=True)
class LaunchTable:
    """The host-side table and buffer sizes for one launch of both passes.

    Attributes:
        rows: (N * COLUMNS,) int64 CPU tensor, the per-image table row after row.
        horizontal_blocks: programs of the horizontal pass.
        vertical_blocks: programs of the vertical pass.
        scratch_elements: float32 elements of the scratch buffer.
        result_offsets: element offset of each result in the packed result.
        result_shapes: (C, H, W) of each result.
        search_steps: binary-search steps that find any program's image among N.
    """

    rows: torch.Tensor
    horizontal_blocks: int
    vertical_blocks: int
    scratch_elements: int
    result_offsets: tuple[int, ...]
    result_shapes: tuple[tuple[int, int, int], ...]
    search_steps: int

    @property
    def result_elements(self) -> int:
        """Bytes of the packed uint8 result."""
        channels, height, width = self.result_shapes[-1]
        return self.result_offsets[-1] + channels * height * width


def packed_offsets(shapes: Sequence[tuple[int, ...]]) -> list[int]:
    """Return each image's element offset when images of `shapes` are packed in order."""
    offsets = []
    position = 0
    for shape in shapes:
        offsets.append(position)
        position += math.prod(shape)
    return offsets


def pack(images: Sequence[torch.Tensor]) -> torch.Tensor:
    """Pack images one after another into one flat buffer.

    Args:
        images: (C, H, W) tensors of one dtype on one device, contiguous or not.

    Returns:
        (sum of C * H * W,) tensor of that dtype on that device, image i starting at
        ``packed_offsets(shapes)[i]``. It is always a new tensor.
    """
    return torch.cat([image.reshape(-1) for image in images])


def unpack(
    buffer: torch.Tensor, offsets: Sequence[int], shapes: Sequence[tuple[int, int, int]]
) -> list[torch.Tensor]:
    """Return the images of a packed buffer as (C, H, W) views into it, without copying."""
    return [
        buffer[offset : offset + math.prod(shape)].view(shape)
        for offset, shape in zip(offsets, shapes, strict=True)
    ]


def build_launch_table(
    shapes: Sequence[tuple[int, int, int]], specs: Sequence[ResizeSpec], block: int
) -> LaunchTable:
    """Lay out a checked ragged batch for the kernels.

    Args:
        shapes: (C, H, W) of each source image, C in {1, 3, 4}.
        specs: what to do to each image, checked by `check_batch`.
        block: output pixels per program.

    Returns:
        The table rows, the program counts and the buffer layout.
    """
    result_shapes = [
        (spec.result_channels(channels), spec.height, spec.width)
        for (channels, _, _), spec in zip(shapes, specs, strict=True)
    ]
    scratch_shapes = [
        (channels, height, spec.width)
        for (channels, height, _), spec in zip(shapes, specs, strict=True)
    ]
    source_offsets = packed_offsets(shapes)
    scratch_offsets = packed_offsets(scratch_shapes)
    result_offsets = packed_offsets(result_shapes)

    rows: list[int] = []
    horizontal_blocks = 0
    vertical_blocks = 0
    for index, ((channels, height, width), spec) in enumerate(zip(shapes, specs, strict=True)):
        row = [0] * COLUMNS
        row[SOURCE_OFFSET] = source_offsets[index]
        row[SCRATCH_OFFSET] = scratch_offsets[index]
        row[RESULT_OFFSET] = result_offsets[index]
        row[CHANNELS] = channels
        row[RESULT_CHANNELS] = result_shapes[index][0]
        row[SOURCE_HEIGHT], row[SOURCE_WIDTH] = height, width
        row[TARGET_HEIGHT], row[TARGET_WIDTH] = spec.height, spec.width
        row[TAPS_X] = max_taps(width, spec.width, spec.interpolation)
        row[TAPS_Y] = max_taps(height, spec.height, spec.interpolation)
        row[FIRST_HORIZONTAL_BLOCK] = horizontal_blocks
        row[FIRST_VERTICAL_BLOCK] = vertical_blocks
        row[FLAGS] = _flags(spec, channels, resized=(height, width) != (spec.height, spec.width))
        row[TINT : TINT + 3] = spec.tint or (0, 0, 0)
        row[BACKGROUND : BACKGROUND + 4] = spec.background or (0, 0, 0, 0)
        rows += row
        horizontal_blocks += math.ceil(height * spec.width / block)
        vertical_blocks += math.ceil(spec.height * spec.width / block)

    return LaunchTable(
        rows=torch.tensor(rows, dtype=torch.int64),
        horizontal_blocks=horizontal_blocks,
        vertical_blocks=vertical_blocks,
        scratch_elements=sum(math.prod(shape) for shape in scratch_shapes),
        result_offsets=tuple(result_offsets),
        result_shapes=tuple(result_shapes),
        search_steps=max(len(shapes).bit_length(), 1),
    )


def _flags(spec: ResizeSpec, channels: int, *, resized: bool) -> int:
    flags = 0
    if spec.interpolation is Interpolation.BICUBIC:
        flags |= FLAG_BICUBIC
    # An image that keeps its size is copied, as the pipeline copies it: no premultiplied
    # round trip and no trip through linear light.
    if resized and channels == 4:
        flags |= FLAG_PREMULTIPLY
    if resized and spec.linear:
        flags |= FLAG_LINEAR
    if spec.grayscale:
        flags |= FLAG_GRAYSCALE
    if spec.tint is not None:
        flags |= FLAG_TINT
    if spec.background is not None and channels == 4:
        flags |= FLAG_FLATTEN
    return flags
