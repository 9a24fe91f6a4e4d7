"""Image codecs: sniff the type from magic bytes, probe the header, decode and encode with Pillow.

Tensors here are ``(C, H, W)`` uint8 in [0, 255] with C = 3 (RGB) or 4 (RGBA, straight alpha),
or ``(B, C, H, W)`` for the frames of an animation. Decoded pixels are always 8-bit sRGB (see
`color`). The type of a source is decided by its first bytes only, never by a file name or a
``Content-Type`` header.

Modules, by concept: `sniff` (magic bytes), `reader` (open and read the header), `decode` (the
first frame), `animation` and `gif` (every frame), `color` (bit depth, CMYK, ICC profiles),
`png` (PNG details Pillow leaves out) and `encode`.
"""

from __future__ import annotations

from darkroom_gpu.codecs.animation import (
    ANIMATED_SOURCE_FORMATS,
    DecodedAnimation,
    decode_animation,
)
from darkroom_gpu.codecs.decode import SHRINK_ON_LOAD_MARGIN, DecodedImage, decode
from darkroom_gpu.codecs.encode import (
    animatable_formats,
    default_quality,
    encodable_formats,
    encode,
    encode_animation,
)
from darkroom_gpu.codecs.reader import (
    DECODE_ERRORS,
    EXIF_ORIENTATION_TAG,
    HEIF_READABLE,
    ImageInfo,
    probe,
    profile_description,
)
from darkroom_gpu.codecs.sniff import MEDIA_TYPES, ImageFormat, sniff

__all__ = (
    "ANIMATED_SOURCE_FORMATS",
    "DECODE_ERRORS",
    "EXIF_ORIENTATION_TAG",
    "HEIF_READABLE",
    "MEDIA_TYPES",
    "SHRINK_ON_LOAD_MARGIN",
    "DecodedAnimation",
    "DecodedImage",
    "ImageFormat",
    "ImageInfo",
    "animatable_formats",
    "decode",
    "decode_animation",
    "default_quality",
    "encodable_formats",
    "encode",
    "encode_animation",
    "probe",
    "profile_description",
    "sniff",
)
