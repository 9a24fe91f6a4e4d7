"""The split of a transform plan between the batched resize kernels and the torch steps.

The kernels take over the pipeline's resample (to the planned scaled size, in linear light when
asked) and, where it gives the same pixels, the mono step and the final flatten. They resize in
stored orientation, as the pipeline does, and the pipeline's steps then find the image at its
scaled size and skip their own resample. Per-pixel colour work commutes with the EXIF
orientation, cropping, flipping and quarter turns, which only move pixels, so those may run
later in torch. It does not commute with padding (the pad colour would be tinted or flattened
too), blurring or rotating by other angles (both mix pixels), which keep the colour work in
torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from darkroom_gpu.geometry import oriented_size
from darkroom_gpu.kernels import ResizeSpec
from darkroom_gpu.ops import Interpolation
from darkroom_gpu.pipeline import GRAYSCALE, TransformPlan

__all__ = ("KernelWork", "split_plan")


@dataclass(frozen=True, slots=True)
class KernelWork:
    """One image's share of a batched kernel launch.

    Attributes:
        spec: what the kernels do to the image in stored orientation.
        rest: the plan of the steps left to torch; running it on the kernels' result gives the
            result of the whole plan.
    """

    spec: ResizeSpec
    rest: TransformPlan


def split_plan(plan: TransformPlan, image: torch.Tensor) -> KernelWork | None:
    """Split `plan` into the kernels' resize and colour work and the steps left to torch.

    Args:
        plan: the planned transform of one image.
        image: (C, H, W) uint8 in [0, 255], C in {3, 4}, in stored orientation at the decoded
            size.

    Returns:
        The split, or ``None`` when the plan resizes only the region under its crop box (the
        kernels resize whole images) or leaves the kernels nothing to do.
    """
    if plan.crop_first:
        return None
    if image.ndim != 3 or image.shape[0] not in (3, 4) or image.dtype != torch.uint8:
        return None

    scaled = oriented_size(plan.resize.scaled, plan.orientation)
    resized = tuple(image.shape[-2:]) != (scaled.height, scaled.width)
    # Nothing is added around the image, so colour work now gets the same pixels as it would
    # after the resize step.
    unpadded = (plan.resize.canvas.width, plan.resize.canvas.height) == (
        plan.resize.crop.width,
        plan.resize.crop.height,
    )
    fuse_mono = plan.mono is not None and unpadded
    fuse_flatten = (
        plan.flatten is not None and unpadded and plan.blur <= 0 and plan.rotation % 90 == 0
    )
    if not (resized or fuse_mono or fuse_flatten):
        return None

    mono = plan.mono if fuse_mono else None
    background = plan.flatten if fuse_flatten else None
    spec = ResizeSpec(
        height=scaled.height,
        width=scaled.width,
        interpolation=Interpolation.BICUBIC,
        linear=plan.linear,
        grayscale=mono == GRAYSCALE,
        tint=(mono.red, mono.green, mono.blue) if mono is not None and mono != GRAYSCALE else None,
        background=(
            (background.red, background.green, background.blue, background.alpha)
            if background is not None
            else None
        ),
    )
    rest = dataclasses.replace(
        plan,
        mono=None if fuse_mono else plan.mono,
        flatten=None if fuse_flatten else plan.flatten,
    )
    return KernelWork(spec=spec, rest=rest)
