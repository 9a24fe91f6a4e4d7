"""What the batched kernels do to each image: resize, then colour work on the result."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import torch

from darkroom_gpu.ops import ImageShapeError, Interpolation

__all__ = ("KERNEL_CHANNELS", "ResizeSpec", "check_batch")

# 1 is gray, 3 RGB and 4 RGBA with straight alpha.
KERNEL_CHANNELS: Final = (1, 3, 4)


@dataclass(frozen=True, slots=True)
class ResizeSpec:
    """The resize and colour work on one image, in the order the pipeline runs them.

    The image is resized with the antialiased `interpolation` filter (a no-op when it already
    has the target size, as in the pipeline's resize step). Then it is made gray or tinted, as
    `darkroom_gpu.ops.grayscale` or `darkroom_gpu.ops.tint` do, and then flattened over
    `background` as `darkroom_gpu.ops.flatten` does.

    Attributes:
        height: Result height in pixels, >= 1.
        width: Result width in pixels, >= 1.
        interpolation: Resize filter.
        linear: Resample in linear light: decode sRGB before the resize and encode after it.
            Ignored when the size does not change, because nothing is resampled then.
        grayscale: Replace the colour by its luma after the resize.
        tint: RGB colour, each channel in [0, 255], that white becomes after the resize, with
            black staying black; ``None`` for no tint. Excludes `grayscale`.
        background: RGBA colour with straight alpha to composite the result over; ``None``
            keeps the alpha. An image without alpha is opaque, so it ignores the background.
    """

    height: int
    width: int
    interpolation: Interpolation = Interpolation.BICUBIC
    linear: bool = False
    grayscale: bool = False
    tint: tuple[int, int, int] | None = None
    background: tuple[int, int, int, int] | None = None

    def result_channels(self, channels: int) -> int:
        """Return the result's channel count for an input with `channels` channels.

        Flattening over an opaque background drops the alpha channel; everything else keeps
        the count.
        """
        if channels == 4 and self.background is not None and self.background[3] == 255:
            return 3
        return channels


def check_batch(images: Sequence[torch.Tensor], specs: Sequence[ResizeSpec]) -> None:
    """Check that a ragged batch and its specs can run through the kernels or the reference.

    Args:
        images: (C, H, W) uint8 tensors, C in {1, 3, 4}, all on one device.
        specs: one spec per image.

    Raises:
        ImageShapeError: If the counts differ, an image is not such a tensor, the images are
            on different devices, or a spec is out of range or requests colour work on a gray
            image.
    """
    if len(images) != len(specs):
        raise ImageShapeError(f"specs: expected one per image ({len(images)}), got {len(specs)}")
    devices = {image.device for image in images}
    if len(devices) > 1:
        names = ", ".join(sorted(str(device) for device in devices))
        raise ImageShapeError(f"images: expected one device, got {names}")
    for index, (image, spec) in enumerate(zip(images, specs, strict=True)):
        _check_image(index, image)
        _check_spec(index, spec, int(image.shape[0]))


def _check_image(index: int, image: torch.Tensor) -> None:
    shape = tuple(image.shape)
    if image.ndim != 3 or shape[0] not in KERNEL_CHANNELS or shape[1] < 1 or shape[2] < 1:
        raise ImageShapeError(
            f"images[{index}]: expected shape (C, H, W) with C in {{1, 3, 4}} and H, W >= 1, "
            f"got {shape}"
        )
    if image.dtype != torch.uint8:
        raise ImageShapeError(f"images[{index}]: expected dtype uint8, got {image.dtype}")


def _check_spec(index: int, spec: ResizeSpec, channels: int) -> None:
    if spec.height < 1 or spec.width < 1:
        raise ImageShapeError(
            f"specs[{index}]: expected height and width >= 1, got {spec.height}x{spec.width}"
        )
    if spec.grayscale and spec.tint is not None:
        raise ImageShapeError(f"specs[{index}]: expected grayscale or tint, not both")
    colours = [("tint", spec.tint, 3), ("background", spec.background, 4)]
    for name, values, count in colours:
        if values is None:
            continue
        if len(values) != count or any(not 0 <= value <= 255 for value in values):
            raise ImageShapeError(
                f"specs[{index}].{name}: expected {count} values in [0, 255], got {values}"
            )
    colour_work = spec.grayscale or spec.tint is not None or spec.background is not None
    if channels == 1 and colour_work:
        # Gray input has no colour to replace and no alpha to flatten.
        raise ImageShapeError(
            f"specs[{index}]: grayscale, tint and background need an RGB or RGBA image, "
            "got one channel"
        )
