"""Animated sources: GIF composition, frames of WebP, APNG and AVIF, and animated encoding."""

from __future__ import annotations

import io
from typing import Final

import numpy as np
import numpy.typing as npt
import pytest
import torch
from PIL import Image, ImageSequence

from darkroom_gpu.codecs import decode_animation, encode_animation
from darkroom_gpu.codecs.gif import compose_gif
from darkroom_gpu.errors import UnprocessableImageError
from darkroom_gpu.options import OutputFormat
from tests.images import GifFrame, gif_bytes, save

MAX_PIXELS: Final = 1_000_000
PALETTE: Final = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)]
RED, GREEN, BLUE, WHITE = ((*colour, 255) for colour in PALETTE)
CLEAR: Final = (0, 0, 0, 0)
# Largest mean difference, in 8-bit levels, between flat frames and their lossy encoding.
LOSSY_FLAT_TOLERANCE: Final = 3.0


def filled(width: int, height: int, index: int) -> npt.NDArray[np.uint8]:
    return np.full((height, width), index, dtype=np.uint8)


def pixel(frame: npt.NDArray[np.uint8], x: int, y: int) -> tuple[int, ...]:
    return tuple(int(value) for value in frame[y, x])


def frames_of(colours: list[tuple[int, int, int, int]], size: tuple[int, int]) -> torch.Tensor:
    """Return (B, 4, H, W) uint8 frames, each filled with one colour."""
    width, height = size
    stack = np.stack([np.full((height, width, 4), colour, dtype=np.uint8) for colour in colours])
    return torch.from_numpy(stack).permute(0, 3, 1, 2).contiguous()


def reopened(data: bytes) -> list[npt.NDArray[np.uint8]]:
    """Decode every frame with Pillow, as RGBA arrays."""
    image = Image.open(io.BytesIO(data))
    return [np.asarray(frame.convert("RGBA")) for frame in ImageSequence.Iterator(image)]


# --- GIF composition -----------------------------------------------------------------------


def test_gif_canvas_starts_transparent() -> None:
    data = gif_bytes((6, 4), PALETTE, [GifFrame(filled(2, 2, 0), left=1, top=1)])

    (frame,) = compose_gif(data, MAX_PIXELS).frames

    assert pixel(frame, 0, 0) == CLEAR
    assert pixel(frame, 1, 1) == RED


def test_gif_frame_drawn_over_previous() -> None:
    data = gif_bytes(
        (6, 4),
        PALETTE,
        [GifFrame(filled(6, 4, 0)), GifFrame(filled(2, 2, 1), left=4, top=2)],
    )

    first, second = compose_gif(data, MAX_PIXELS).frames

    assert pixel(first, 5, 3) == RED
    assert pixel(second, 0, 0) == RED
    assert pixel(second, 5, 3) == GREEN


def test_gif_transparent_index_keeps_previous() -> None:
    cover = filled(6, 4, 1)
    cover[0, 0] = 3
    data = gif_bytes(
        (6, 4),
        PALETTE,
        [GifFrame(filled(6, 4, 0)), GifFrame(cover, transparent_index=3)],
    )

    _, second = compose_gif(data, MAX_PIXELS).frames

    assert pixel(second, 0, 0) == RED
    assert pixel(second, 1, 0) == GREEN


def test_gif_dispose_to_background_clears() -> None:
    cover = filled(6, 4, 1)
    cover[0, 0] = 3
    data = gif_bytes(
        (6, 4),
        PALETTE,
        [GifFrame(filled(6, 4, 0), disposal=2), GifFrame(cover, transparent_index=3)],
    )

    first, second = compose_gif(data, MAX_PIXELS).frames

    assert pixel(first, 0, 0) == RED
    # Browsers clear to transparent and ignore the background colour index.
    assert pixel(second, 0, 0) == CLEAR
    assert pixel(second, 1, 0) == GREEN


def test_gif_dispose_to_previous_restores() -> None:
    data = gif_bytes(
        (6, 4),
        PALETTE,
        [
            GifFrame(filled(6, 4, 0)),
            GifFrame(filled(2, 2, 2), disposal=3),
            GifFrame(filled(1, 1, 3), left=5, top=3),
        ],
    )

    _, second, third = compose_gif(data, MAX_PIXELS).frames

    assert pixel(second, 0, 0) == BLUE
    assert pixel(third, 0, 0) == RED
    assert pixel(third, 5, 3) == WHITE


def test_gif_frame_clipped_to_screen() -> None:
    data = gif_bytes((4, 4), PALETTE, [GifFrame(filled(4, 4, 1), left=2, top=2)])

    (frame,) = compose_gif(data, MAX_PIXELS).frames

    assert frame.shape == (4, 4, 4)
    assert pixel(frame, 3, 3) == GREEN
    assert pixel(frame, 1, 1) == CLEAR


@pytest.mark.parametrize(
    ("repeats", "plays"),
    [pytest.param(None, 1, id="no loop extension"), (0, 0), (1, 2), (4, 5)],
)
def test_gif_play_count(repeats: int | None, plays: int) -> None:
    data = gif_bytes((2, 2), PALETTE, [GifFrame(filled(2, 2, 0))], repeats=repeats)

    assert compose_gif(data, MAX_PIXELS).plays == plays


def test_gif_durations_in_milliseconds() -> None:
    frames = [GifFrame(filled(2, 2, 0), delay=7), GifFrame(filled(2, 2, 1), delay=50)]
    data = gif_bytes((2, 2), PALETTE, frames)

    assert compose_gif(data, MAX_PIXELS).durations == [70, 500]


def test_gif_truncated_frame_rejected() -> None:
    data = gif_bytes((8, 8), PALETTE, [GifFrame(filled(8, 8, 0))])

    with pytest.raises(UnprocessableImageError, match="gif image is truncated"):
        compose_gif(data[:-8], MAX_PIXELS)


def test_gif_frames_over_limit_rejected() -> None:
    frames = [GifFrame(filled(10, 10, index % 4)) for index in range(5)]
    data = gif_bytes((10, 10), PALETTE, frames)

    with pytest.raises(UnprocessableImageError, match="summed over frames"):
        compose_gif(data, 499)


# --- decode_animation ----------------------------------------------------------------------


def test_decode_gif_animation() -> None:
    frames = [GifFrame(filled(4, 2, 0), delay=10), GifFrame(filled(4, 2, 1), delay=20)]

    animation = decode_animation(gif_bytes((4, 2), PALETTE, frames), max_pixels=MAX_PIXELS)

    assert animation.frames.shape == (2, 3, 2, 4)
    assert animation.frames.dtype == torch.uint8
    assert animation.frames[1, :, 0, 0].tolist() == [0, 255, 0]
    assert animation.durations == (100, 200)
    assert animation.plays == 0


def test_decode_keeps_alpha_when_any_frame_has_it() -> None:
    frames = [GifFrame(filled(4, 2, 0)), GifFrame(filled(2, 2, 1), disposal=0)]
    data = gif_bytes((4, 2), PALETTE, [GifFrame(filled(2, 2, 0), disposal=2), *frames])

    animation = decode_animation(data, max_pixels=MAX_PIXELS)

    assert animation.frames.shape[1] == 4
    assert animation.frames[0, 3, 0, 3].item() == 0


@pytest.mark.parametrize("pillow_format", ["WEBP", "PNG", "AVIF"])
def test_decode_pillow_animations(pillow_format: str) -> None:
    images = [Image.new("RGB", (8, 6), colour[:3]) for colour in (RED, GREEN, BLUE)]
    data = save(
        images[0],
        pillow_format,
        save_all=True,
        append_images=images[1:],
        duration=[100, 200, 300],
        loop=0,
        **({"lossless": True} if pillow_format == "WEBP" else {}),
    )

    animation = decode_animation(data, max_pixels=MAX_PIXELS)

    assert animation.frames.shape == (3, 3, 6, 8)
    assert animation.durations == (100, 200, 300)
    assert animation.plays == 0
    blue = animation.frames[2, :, 3, 3].tolist()
    assert blue[2] > 240
    assert blue[0] < 15


def test_decode_webp_play_count() -> None:
    images = [Image.new("RGB", (4, 4), colour[:3]) for colour in (RED, GREEN)]
    data = save(images[0], "WEBP", save_all=True, append_images=images[1:], loop=3)

    assert decode_animation(data, max_pixels=MAX_PIXELS).plays == 3


def test_decode_animation_checks_summed_pixels() -> None:
    frames = [GifFrame(filled(10, 10, index)) for index in range(3)]

    with pytest.raises(UnprocessableImageError, match="x 3 frames = 300 pixels"):
        decode_animation(gif_bytes((10, 10), PALETTE, frames), max_pixels=299)


# --- encode_animation ----------------------------------------------------------------------


@pytest.mark.parametrize("fmt", [OutputFormat.GIF, OutputFormat.WEBP, OutputFormat.AVIF], ids=str)
def test_encode_keeps_frames_and_durations(fmt: OutputFormat) -> None:
    frames = frames_of([RED, GREEN, BLUE], (16, 12))

    data = encode_animation(frames, fmt, 90, durations=[100, 200, 300], plays=0)

    image = Image.open(io.BytesIO(data))
    assert image.format == fmt.value.upper()
    assert getattr(image, "n_frames", 1) == 3
    durations = []
    for index in range(3):
        image.seek(index)
        image.load()
        durations.append(image.info.get("duration"))
    assert durations == [100, 200, 300]


@pytest.mark.parametrize("fmt", [OutputFormat.GIF, OutputFormat.WEBP], ids=str)
def test_encode_transparent_frame_shows_nothing_behind(fmt: OutputFormat) -> None:
    frames = frames_of([RED, CLEAR, GREEN], (8, 8))

    data = encode_animation(frames, fmt, 90, durations=[100] * 3, plays=0)

    decoded = decode_animation(data, max_pixels=MAX_PIXELS).frames
    assert decoded.shape[1] == 4
    assert decoded[1, 3].max().item() == 0
    assert decoded[2, :, 4, 4].tolist()[1] > 240


@pytest.mark.parametrize(
    ("plays", "gif_loop"), [pytest.param(0, 0, id="forever"), (1, None), (3, 2)]
)
def test_encode_gif_play_count(plays: int, gif_loop: int | None) -> None:
    frames = frames_of([RED, GREEN], (4, 4))

    data = encode_animation(frames, OutputFormat.GIF, 100, durations=[100, 100], plays=plays)

    assert Image.open(io.BytesIO(data)).info.get("loop") == gif_loop
    assert decode_animation(data, max_pixels=MAX_PIXELS).plays == plays


def test_encode_webp_play_count() -> None:
    frames = frames_of([RED, GREEN], (4, 4))

    data = encode_animation(frames, OutputFormat.WEBP, 90, durations=[100, 100], plays=2)

    assert Image.open(io.BytesIO(data)).info["loop"] == 2


def test_encode_lossy_frames_close() -> None:
    frames = frames_of([RED, BLUE], (16, 16))

    data = encode_animation(frames, OutputFormat.WEBP, 90, durations=[100, 100], plays=0)

    decoded = np.stack(reopened(data))[..., :3].astype(np.int16)
    expected = frames.permute(0, 2, 3, 1).numpy()[..., :3].astype(np.int16)
    assert np.abs(decoded - expected).mean() <= LOSSY_FLAT_TOLERANCE


def test_encode_rejects_wrong_duration_count() -> None:
    with pytest.raises(ValueError, match="expected 2 durations, got 1"):
        encode_animation(
            frames_of([RED, GREEN], (4, 4)), OutputFormat.GIF, 90, durations=[1], plays=0
        )


def test_encode_rejects_still_format() -> None:
    with pytest.raises(ValueError, match="png cannot hold an animation"):
        encode_animation(frames_of([RED], (4, 4)), OutputFormat.PNG, 90, durations=[1], plays=0)
