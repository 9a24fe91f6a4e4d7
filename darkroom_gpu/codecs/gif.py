"""Compose the frames of an animated GIF into full canvases, as browsers display them.

Pillow's GIF reader (checked with 13.0) composes frames too, but it disposes a frame to the
background colour where browsers clear it to transparent, and an opaque first frame makes
every later canvas opaque. This module parses the block structure itself, lets Pillow's LZW
decoder expand each frame's indices, and composes them with the browsers' rules:

- the canvas (the logical screen) starts fully transparent;
- a frame's pixels with its transparent index leave the canvas as it is;
- disposal 2 clears the frame's rectangle to transparent after the frame is shown, disposal 3
  restores the rectangle as it was before the frame, and 0 or 1 leave the frame in place;
- frame rectangles are clipped to the logical screen.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
from PIL import Image

from darkroom_gpu.errors import UnprocessableImageError

__all__ = ("GifAnimation", "compose_gif")

_HEADER_LENGTH: Final = 13  # signature and version (6), logical screen descriptor (7)
_EXTENSION: Final = 0x21
_IMAGE: Final = 0x2C
_TRAILER: Final = 0x3B
_GRAPHIC_CONTROL: Final = 0xF9
_APPLICATION: Final = 0xFF
_LOOP_APPLICATIONS: Final = (b"NETSCAPE2.0", b"ANIMEXTS1.0")
_DISPOSE_TO_BACKGROUND: Final = 2
_DISPOSE_TO_PREVIOUS: Final = 3
# GIF delays are in hundredths of a second.
_DELAY_UNIT_MS: Final = 10


@dataclass(frozen=True, slots=True)
class GifAnimation:
    """The composed frames of a GIF.

    Attributes:
        frames: one ``(H, W, 4)`` uint8 RGBA canvas per frame, straight alpha.
        durations: display time of each frame in milliseconds, as stored.
        plays: how many times the animation plays; 0 means forever. GIF stores the number of
            repetitions after the first play, so a stored count n gives n + 1; without a loop
            extension the animation plays once.
    """

    frames: list[npt.NDArray[np.uint8]]
    durations: list[int]
    plays: int


@dataclass(slots=True)
class _Control:
    disposal: int = 0
    delay: int = 0
    transparent_index: int | None = None


def compose_gif(data: bytes, max_pixels: int) -> GifAnimation:
    """Decode and compose every frame of a GIF.

    Args:
        data: the encoded GIF, starting with ``GIF87a`` or ``GIF89a``.
        max_pixels: limit on the canvas pixels summed over frames, checked as frames are found.

    Returns:
        The composed frames with their durations and play count.

    Raises:
        UnprocessableImageError: the structure is corrupt or truncated, there is no frame, or
            the frames are over `max_pixels`.
    """
    if len(data) < _HEADER_LENGTH:
        raise UnprocessableImageError("gif image is truncated")
    width = int.from_bytes(data[6:8], "little")
    height = int.from_bytes(data[8:10], "little")
    if width < 1 or height < 1:
        raise UnprocessableImageError(f"gif image declares an empty size {width}x{height}")
    packed = data[10]
    position = _HEADER_LENGTH
    global_palette: npt.NDArray[np.uint8] | None = None
    if packed & 0x80:
        global_palette, position = _read_palette(data, position, packed)

    canvas = np.zeros((height, width, 4), dtype=np.uint8)
    frames: list[npt.NDArray[np.uint8]] = []
    durations: list[int] = []
    repeats: int | None = None
    control = _Control()
    while True:
        kind = _byte(data, position)
        position += 1
        if kind == _TRAILER:
            break
        if kind == _EXTENSION:
            label = _byte(data, position)
            blocks = list(_sub_blocks(data, position + 1))
            # The label, each block with its length byte, and the terminator.
            position += 1 + sum(1 + len(block) for block in blocks) + 1
            if label == _GRAPHIC_CONTROL and blocks and len(blocks[0]) >= 4:
                block = blocks[0]
                control = _Control(
                    disposal=(block[0] >> 2) & 0b111,
                    delay=int.from_bytes(block[1:3], "little"),
                    transparent_index=block[3] if block[0] & 1 else None,
                )
            elif label == _APPLICATION and len(blocks) >= 2 and blocks[0] in _LOOP_APPLICATIONS:
                if len(blocks[1]) >= 3 and blocks[1][0] == 1:
                    repeats = int.from_bytes(blocks[1][1:3], "little")
            continue
        if kind != _IMAGE:
            # An unknown block ends the frames; a file with no frame before it is corrupt.
            break

        if (len(frames) + 1) * width * height > max_pixels:
            raise UnprocessableImageError(
                f"animation has more than {len(frames)} frames of {width}x{height} pixels, "
                f"over this source's limit of {max_pixels} pixels summed over frames"
            )
        position, area = _draw_frame(data, position, canvas, global_palette, control)
        frames.append(canvas.copy())
        durations.append(control.delay * _DELAY_UNIT_MS)
        if area is not None:
            _dispose(canvas, area, control.disposal)
        control = _Control()

    if not frames:
        raise UnprocessableImageError("gif image has no frame")
    if repeats is None:
        plays = 1
    elif repeats == 0:
        plays = 0
    else:
        plays = repeats + 1
    return GifAnimation(frames=frames, durations=durations, plays=plays)


@dataclass(frozen=True, slots=True)
class _Area:
    """The part of the canvas a frame covered, and the pixels it covered before the frame."""

    top: int
    bottom: int
    left: int
    right: int
    before: npt.NDArray[np.uint8]


def _draw_frame(
    data: bytes,
    position: int,
    canvas: npt.NDArray[np.uint8],
    global_palette: npt.NDArray[np.uint8] | None,
    control: _Control,
) -> tuple[int, _Area | None]:
    """Decode the image descriptor and data at `position` and draw the frame onto `canvas`.

    Returns:
        The position after the frame's data, and the area it covered (``None`` when the frame
        lies outside the canvas or is empty).
    """
    descriptor = data[position : position + 9]
    if len(descriptor) < 9:
        raise UnprocessableImageError("gif image is truncated inside a frame descriptor")
    left, top, frame_width, frame_height = (
        int.from_bytes(descriptor[offset : offset + 2], "little") for offset in (0, 2, 4, 6)
    )
    packed = descriptor[8]
    position += 9
    palette = global_palette
    if packed & 0x80:
        palette, position = _read_palette(data, position, packed)
    interlaced = bool(packed & 0x40)
    code_size = _byte(data, position)
    start = position + 1
    end = _skip_sub_blocks(data, start)

    height, width = canvas.shape[:2]
    right, bottom = min(left + frame_width, width), min(top + frame_height, height)
    if frame_width == 0 or frame_height == 0 or right <= left or bottom <= top:
        return end, None
    # Pillow's LZW decoder reads the sub-blocks itself and raises ValueError when they end
    # before the frame is complete.
    indices = Image.frombytes(
        "L", (frame_width, frame_height), data[start:end], "gif", code_size, interlaced, -1
    )
    region = np.asarray(indices)[: bottom - top, : right - left]

    area = _Area(top, bottom, left, right, canvas[top:bottom, left:right].copy())
    colours = _palette_rgba(palette)[region]
    target = canvas[top:bottom, left:right]
    if control.transparent_index is None:
        target[...] = colours
    else:
        visible = region != control.transparent_index
        target[visible] = colours[visible]
    return end, area


def _dispose(canvas: npt.NDArray[np.uint8], area: _Area, disposal: int) -> None:
    """Prepare `canvas` for the next frame according to the shown frame's disposal method."""
    if disposal == _DISPOSE_TO_BACKGROUND:
        canvas[area.top : area.bottom, area.left : area.right] = 0
    elif disposal == _DISPOSE_TO_PREVIOUS:
        canvas[area.top : area.bottom, area.left : area.right] = area.before


def _palette_rgba(palette: npt.NDArray[np.uint8] | None) -> npt.NDArray[np.uint8]:
    """Return a 256-entry opaque RGBA table; indices past the palette are black."""
    table = np.zeros((256, 4), dtype=np.uint8)
    table[:, 3] = 255
    if palette is None:
        # A GIF without any colour table is undefined; Pillow shows the indices as grey levels.
        table[:, :3] = np.arange(256, dtype=np.uint8)[:, np.newaxis]
    else:
        table[: len(palette), :3] = palette
    return table


def _read_palette(data: bytes, position: int, packed: int) -> tuple[npt.NDArray[np.uint8], int]:
    """Read a colour table of 2 ** ((packed & 7) + 1) entries; return it and the next position."""
    entries = 2 ** ((packed & 0b111) + 1)
    end = position + 3 * entries
    if end > len(data):
        raise UnprocessableImageError("gif image is truncated inside a colour table")
    table = np.frombuffer(data, dtype=np.uint8, count=3 * entries, offset=position)
    return table.reshape(entries, 3), end


def _byte(data: bytes, position: int) -> int:
    if position >= len(data):
        raise UnprocessableImageError("gif image is truncated")
    return data[position]


def _sub_blocks(data: bytes, position: int) -> Iterator[bytes]:
    """Yield the data sub-blocks starting at `position`, up to the zero-length terminator."""
    while True:
        length = _byte(data, position)
        if length == 0:
            return
        block = data[position + 1 : position + 1 + length]
        if len(block) < length:
            raise UnprocessableImageError("gif image is truncated inside a data block")
        yield block
        position += 1 + length


def _skip_sub_blocks(data: bytes, position: int) -> int:
    """Return the position after the sub-blocks starting at `position` and their terminator."""
    while True:
        length = _byte(data, position)
        position += 1
        if length == 0:
            return position
        if position + length > len(data):
            raise UnprocessableImageError("gif image is truncated inside a data block")
        position += length
