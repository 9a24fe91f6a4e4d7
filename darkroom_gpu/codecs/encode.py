"""Encode RGB or RGBA tensors, still or animated, with Pillow; per-format default qualities.

Nothing from the source is copied into the output: no EXIF, XMP or ICC profile. The pixels
are sRGB, which is what viewers assume for an image without a profile.

Default qualities were chosen so that a typical photo converted to WebP or AVIF is not
larger than its JPEG source. ``benchmarks/format_sizes.py`` measures it with Pillow 13.0
(libwebp 1.6.0, libavif 1.4.2) on 512x512 crops of the bundled samples, saved as JPEG at
quality 75 to 90 and re-encoded. WebP at 75 came out 5 to 78 % smaller than the JPEG. The
closest case was ``DSCN0010.jpg`` at quality 75, with 88934 against 94238 bytes, where WebP at
80 was 7 % larger. AVIF at 60 was 28 to 74 % smaller (67961 bytes in that case). Whole samples
shrink more: ``jolla.jpg`` (811904 bytes) gave 252518 as WebP and 328384 as AVIF, and
``DSCN0010.jpg`` (161713) gave 103052 and 80719.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any, Final

import torch
from PIL import Image, features

from darkroom_gpu.options import OutputFormat

__all__ = (
    "animatable_formats",
    "default_quality",
    "encodable_formats",
    "encode",
    "encode_animation",
)

_PILLOW_SAVE_NAMES: Final = {
    OutputFormat.JPEG: "JPEG",
    OutputFormat.PNG: "PNG",
    OutputFormat.WEBP: "WEBP",
    OutputFormat.AVIF: "AVIF",
    OutputFormat.GIF: "GIF",
}
_DEFAULT_QUALITY: Final = {
    OutputFormat.JPEG: 80,
    OutputFormat.WEBP: 75,
    OutputFormat.AVIF: 60,
}
_COMPRESS_QUALITY: Final = {
    OutputFormat.JPEG: 60,
    OutputFormat.WEBP: 60,
    OutputFormat.AVIF: 45,
}
# GIF disposal method 2: clear the frame's area before the next frame. Frames here are whole
# canvases, so a transparent pixel must show the page, not the previous frame.
_GIF_DISPOSE_TO_BACKGROUND: Final = 2


def encode(
    pixels: torch.Tensor, fmt: OutputFormat, quality: int, *, progressive: bool = False
) -> bytes:
    """Encode an RGB or RGBA image.

    An RGB image whose three channels are equal is written as a one-channel greyscale JPEG,
    which is smaller and decodes to the same pixels.

    Args:
        pixels: ``(C, H, W)`` uint8 in [0, 255], C = 3 or 4; JPEG takes only C = 3.
        fmt: output format; it must be in `encodable_formats`.
        quality: 1..100 for lossy formats; ignored by PNG and GIF.
        progressive: write a progressive JPEG; other formats ignore it.

    Returns:
        The encoded bytes.
    """
    image = _to_image(pixels)
    buffer = io.BytesIO()
    if fmt is OutputFormat.JPEG:
        if _is_grey(pixels):
            image = image.getchannel(0)
        image.save(buffer, "JPEG", quality=quality, progressive=progressive)
    elif fmt is OutputFormat.PNG:
        image.save(buffer, "PNG")
    else:
        image.save(buffer, _PILLOW_SAVE_NAMES[fmt], quality=quality)
    return buffer.getvalue()


def encode_animation(
    frames: torch.Tensor,
    fmt: OutputFormat,
    quality: int,
    *,
    durations: Sequence[int],
    plays: int,
) -> bytes:
    """Encode an animation.

    Args:
        frames: ``(B, C, H, W)`` uint8 in [0, 255], C = 3 or 4, each a complete canvas.
        fmt: one of `animatable_formats`.
        quality: 1..100 for WebP and AVIF; ignored by GIF.
        durations: display time of each frame in milliseconds, B values.
        plays: how many times the animation plays; 0 means forever. AVIF ignores it (Pillow
            13.0 writes sequences that repeat forever).

    Returns:
        The encoded bytes.

    Raises:
        ValueError: `durations` does not have one value per frame, or `fmt` cannot animate.
    """
    if len(durations) != frames.shape[0]:
        raise ValueError(f"expected {frames.shape[0]} durations, got {len(durations)}")
    images = [_to_image(frame) for frame in frames]
    params: dict[str, Any] = {
        "save_all": True,
        "append_images": images[1:],
        "duration": list(durations),
    }
    if fmt is OutputFormat.GIF:
        # GIF stores a delay as 16 bits of centiseconds, at most 655350 ms, while a WebP source
        # may declare up to 2**24 - 1 ms, which Pillow 13.0 fails to write (OverflowError).
        params["duration"] = [min(duration, 655_350) for duration in durations]
        if frames.shape[1] == 4:
            params["disposal"] = _GIF_DISPOSE_TO_BACKGROUND
        # GIF stores repetitions after the first play, and no loop extension means once.
        if plays != 1:
            params["loop"] = plays - 1 if plays else 0
    elif fmt is OutputFormat.WEBP:
        params.update(quality=quality, loop=plays)
    elif fmt is OutputFormat.AVIF:
        params.update(quality=quality)
    else:
        raise ValueError(f"{fmt.value} cannot hold an animation")
    buffer = io.BytesIO()
    images[0].save(buffer, _PILLOW_SAVE_NAMES[fmt], **params)
    return buffer.getvalue()


def encodable_formats() -> frozenset[OutputFormat]:
    """Return the output formats this build of Pillow can write."""
    formats = {OutputFormat.JPEG, OutputFormat.PNG, OutputFormat.GIF}
    if features.check("webp"):
        formats.add(OutputFormat.WEBP)
    if features.check("avif"):
        formats.add(OutputFormat.AVIF)
    return frozenset(formats)


def animatable_formats() -> frozenset[OutputFormat]:
    """Return the output formats this build of Pillow can write animations in."""
    # Pillow writes animated WebP and AVIF whenever it has the codec at all.
    return encodable_formats() - {OutputFormat.JPEG, OutputFormat.PNG}


def default_quality(fmt: OutputFormat, *, compress: bool) -> int:
    """Return the quality used when a request names none (lower with ``auto=compress``)."""
    table = _COMPRESS_QUALITY if compress else _DEFAULT_QUALITY
    return table.get(fmt, 100)


def _to_image(pixels: torch.Tensor) -> Image.Image:
    array = pixels.permute(1, 2, 0).contiguous().cpu().numpy()
    return Image.fromarray(array, mode="RGBA" if array.shape[2] == 4 else "RGB")


def _is_grey(pixels: torch.Tensor) -> bool:
    if pixels.shape[0] != 3:
        return False
    return bool(torch.equal(pixels[0], pixels[1]) and torch.equal(pixels[1], pixels[2]))
