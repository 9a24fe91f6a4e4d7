"""Bring decoded pixels to 8-bit sRGB: 16-bit samples, CMYK and embedded ICC profiles.

Every source is converted to RGB or RGBA in sRGB right after decoding, before any other step,
so the tensor ops never see another colour space. Outputs carry no ICC profile: untagged
images are shown as sRGB by browsers, so the pixels display as the source did.

Embedded profiles are applied with LittleCMS (Pillow's ImageCms) using the perceptual
rendering intent, which equals relative colorimetric for the matrix-and-curve profiles of
cameras and displays, and uses the profile's own gamut mapping for lookup-table profiles such
as print CMYK ones. A profile that does not match the pixels' colour space (an RGB profile on
a grey image, say) or that LittleCMS cannot parse is ignored with one warning per distinct
profile.

Note:
    HEIF and AVIF images may describe their colour with CICP codes (an ``nclx`` box) instead
    of an ICC profile. Those codes are not read, so such images are taken as sRGB; wide-gamut
    ones (Display P3, BT.2020) then look less saturated than in a colour-managed viewer.
"""

from __future__ import annotations

import functools
import io
import logging
from typing import Final

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageCms

__all__ = (
    "SIXTEEN_BIT_GREY_MODES",
    "changes_rgb_colours",
    "from_sixteen_bit",
    "to_eight_bit",
    "to_srgb",
)

logger = logging.getLogger(__name__)

# Modes Pillow opens 16-bit greyscale PNG and TIFF images in.
SIXTEEN_BIT_GREY_MODES: Final = ("I;16", "I;16B", "I;16L")
_SRGB: Final = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
# ICC colour space signatures (header bytes 16..19, trailing space stripped) per Pillow mode.
_PROFILE_SPACES: Final = {"RGB": "RGB", "RGBA": "RGB", "L": "GRAY", "CMYK": "CMYK"}
# A profile whose transform moves no colour of this grid by more than one level is treated as
# sRGB and skipped: many cameras embed an sRGB profile, and converting every pixel through it
# would cost time for no visible change.
_IDENTITY_GRID_LEVELS: Final = np.linspace(0, 255, 9).round().astype(np.uint8)
_IDENTITY_TOLERANCE: Final = 1
_MAX_CACHED_TRANSFORMS: Final = 32


def to_eight_bit(samples: npt.NDArray[np.uint16]) -> npt.NDArray[np.uint8]:
    """Scale 16-bit samples to 8 bits with rounding: round(v / 257).

    Args:
        samples: any shape, uint16 in [0, 65535].

    Returns:
        The same shape, uint8 in [0, 255]. No value lies exactly halfway between two 8-bit
        levels, so the rounding direction of ties does not matter.
    """
    wide = samples.astype(np.uint32)
    return ((wide + 128) // 257).astype(np.uint8)


def from_sixteen_bit(samples: npt.NDArray[np.uint16], transparency: object = None) -> Image.Image:
    """Build an 8-bit image from 16-bit samples, turning a ``tRNS`` colour into alpha.

    Args:
        samples: ``(H, W)`` grey, or ``(H, W, C)`` with C = 2 (grey, alpha), 3 (RGB) or
            4 (RGBA), uint16 in [0, 65535].
        transparency: the 16-bit grey value (an int) or RGB colour (a 3-tuple) that marks
            transparent pixels, as Pillow stores a PNG ``tRNS`` chunk. Other values are
            ignored.

    Returns:
        An ``L``, ``LA``, ``RGB`` or ``RGBA`` image; ``LA`` or ``RGBA`` when `transparency`
        applies.
    """
    eight = to_eight_bit(samples)
    channels = 1 if samples.ndim == 2 else samples.shape[2]
    if channels == 1 and isinstance(transparency, int):
        alpha = np.where(samples == transparency, 0, 255).astype(np.uint8)
        return Image.fromarray(np.dstack([eight, alpha]), mode="LA")
    if channels == 3 and isinstance(transparency, tuple) and len(transparency) == 3:
        keyed = np.all(samples == np.asarray(transparency, dtype=np.uint16), axis=-1)
        alpha = np.where(keyed, 0, 255).astype(np.uint8)
        return Image.fromarray(np.dstack([eight, alpha]), mode="RGBA")
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[channels]
    return Image.fromarray(eight, mode=mode)


def to_srgb(image: Image.Image, *, has_alpha: bool, icc_profile: bytes | None) -> Image.Image:
    """Convert an 8-bit image of any Pillow mode to RGB or RGBA in sRGB.

    CMYK images are converted through their CMYK profile when they have one, else with
    Pillow's plain formula (R = 255 - C, reduced by K). Pillow's JPEG decoder has already
    undone the inversion of Adobe CMYK and YCCK JPEGs, so the values here are ink amounts.

    Args:
        image: the decoded frame, in any mode Pillow opens (``1``, ``L``, ``LA``, ``P``,
            ``RGB``, ``RGBA``, ``CMYK``, ...), with palette transparency in ``info``.
        has_alpha: whether to return RGBA; otherwise alpha, if any, is dropped.
        icc_profile: the source's embedded ICC profile, or ``None``.

    Returns:
        An ``RGB`` or ``RGBA`` image in sRGB (straight alpha). It is `image` itself, loaded,
        when that is already in the target mode and needs no colour conversion.
    """
    target = "RGBA" if has_alpha else "RGB"
    if image.mode == "CMYK":
        transform = _transform_to_srgb(icc_profile, "CMYK") if icc_profile else None
        rgb = transform.apply(image) if transform else image.convert("RGB")
        return rgb.convert(target) if rgb.mode != target else rgb

    if icc_profile and image.mode in ("1", "L", "LA", "La"):
        transform = _transform_to_srgb(icc_profile, "L")
        if transform is not None:
            grey = image.convert("LA" if has_alpha else "L")
            rgb = transform.apply(grey.getchannel(0) if has_alpha else grey)
            if has_alpha:
                rgb.putalpha(grey.getchannel(1))
            return rgb

    if image.mode == target:
        # convert() to the same mode copies every pixel, so keep the decoded image.
        image.load()
        converted = image
    else:
        converted = image.convert(target)
    if icc_profile:
        transform = _transform_to_srgb(icc_profile, target)
        if transform is not None:
            converted = transform.apply(converted)
    return converted


def changes_rgb_colours(icc_profile: bytes | None) -> bool:
    """Tell whether an RGB image with this embedded profile needs converting to sRGB.

    ``False`` for no profile, an unusable one, or one that maps to sRGB within one level.
    """
    return icc_profile is not None and _transform_to_srgb(icc_profile, "RGB") is not None


@functools.lru_cache(maxsize=_MAX_CACHED_TRANSFORMS)
def _transform_to_srgb(icc_profile: bytes, mode: str) -> ImageCms.ImageCmsTransform | None:
    """Build (once per profile and mode) the transform from `icc_profile` to sRGB.

    Args:
        icc_profile: the embedded profile.
        mode: the Pillow mode of the pixels going in: ``RGB``, ``RGBA``, ``L`` or ``CMYK``.

    Returns:
        The transform, whose output mode is ``RGBA`` for ``RGBA`` input (alpha copied) and
        ``RGB`` otherwise. ``None`` when the profile cannot be used or already maps to sRGB.
    """
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
    except (ImageCms.PyCMSError, OSError) as exc:
        logger.warning("ignoring an embedded ICC profile that cannot be parsed: %s", exc)
        return None
    space = profile.profile.xcolor_space.strip()
    if space != _PROFILE_SPACES[mode]:
        logger.warning(
            "ignoring an embedded ICC profile for colour space %s on %s pixels", space, mode
        )
        return None

    output_mode = "RGBA" if mode == "RGBA" else "RGB"
    try:
        transform = ImageCms.buildTransform(
            profile,
            _SRGB,
            mode,
            output_mode,
            renderingIntent=ImageCms.Intent.PERCEPTUAL,
        )
    except ImageCms.PyCMSError as exc:
        logger.warning("ignoring an embedded ICC profile LittleCMS cannot use: %s", exc)
        return None
    if mode in ("RGB", "RGBA") and _keeps_colours(transform, mode):
        return None
    return transform


def _keeps_colours(transform: ImageCms.ImageCmsTransform, mode: str) -> bool:
    """Tell whether `transform` leaves every colour of a coarse RGB grid within one level."""
    levels = _IDENTITY_GRID_LEVELS
    red, green, blue = np.meshgrid(levels, levels, levels, indexing="ij")
    grid = np.stack([red.ravel(), green.ravel(), blue.ravel()], axis=-1)[np.newaxis]
    if mode == "RGBA":
        grid = np.dstack([grid, np.full(grid.shape[:2], 255, dtype=np.uint8)])
    result = np.asarray(transform.apply(Image.fromarray(grid, mode=mode)))
    difference = np.abs(result.astype(np.int16) - grid.astype(np.int16))
    return int(difference.max()) <= _IDENTITY_TOLERANCE
