"""The plain-torch reference of the resize kernels: the shared ops, one image at a time.

It runs the same ops as the pipeline's resize and mono steps and its final flatten, so the
kernels are compared with what the torch path of the server computes. It is also what the GPU
manipulator runs when the kernels are off.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from darkroom_gpu import ops
from darkroom_gpu.kernels.spec import ResizeSpec, check_batch

__all__ = ("resize_reference",)


def resize_reference(
    images: Sequence[torch.Tensor], specs: Sequence[ResizeSpec]
) -> list[torch.Tensor]:
    """Resize each image and do its colour work with the shared torch ops.

    Args:
        images: (C, H, W) uint8 tensors in [0, 255], C in {1, 3, 4} (gray, RGB, RGBA with
            straight alpha), all on one device.
        specs: what to do to each image.

    Returns:
        One new (``spec.result_channels(C)``, ``spec.height``, ``spec.width``) uint8 tensor
        per image, on the input device.

    Raises:
        ImageShapeError: If the batch does not pass `check_batch`.
    """
    check_batch(images, specs)
    return [_process(image, spec) for image, spec in zip(images, specs, strict=True)]


def _process(image: torch.Tensor, spec: ResizeSpec) -> torch.Tensor:
    if image.shape[0] == 1:
        # The ops take RGB, and resize each channel alike without alpha, so a gray image is
        # resized as RGB with three equal channels.
        return _resample(image.expand(3, -1, -1), spec)[:1].clone()

    result = _resample(image, spec)
    if spec.grayscale:
        result = ops.grayscale(result)
    elif spec.tint is not None:
        result = ops.tint(result, spec.tint)
    if spec.background is not None:
        result = ops.flatten(result, spec.background)
    return result


def _resample(image: torch.Tensor, spec: ResizeSpec) -> torch.Tensor:
    """Resize as the pipeline's resize step does, in linear light when `spec.linear` is set."""
    if tuple(image.shape[-2:]) == (spec.height, spec.width):
        return image.clone(memory_format=torch.contiguous_format)
    if spec.linear:
        linear = ops.srgb_to_linear(image)
        resized = ops.resize(
            linear, spec.height, spec.width, interpolation=spec.interpolation, antialias=True
        )
        return ops.linear_to_srgb(resized, image.dtype)

    # Float input, because ops.resize gives uint8 RGB on the CPU to torch's uint8 kernel,
    # which rounds to 8 bits between its passes. The float path keeps float32 between them,
    # as it does for every CUDA tensor and as the kernels do.
    resized = ops.resize(
        image.to(torch.float32),
        spec.height,
        spec.width,
        interpolation=spec.interpolation,
        antialias=True,
    )
    result = resized.round().clamp(0, 255).to(torch.uint8)
    if result.shape[0] == 4:
        # As ops.resize does for uint8 RGBA: no stray colour where alpha rounds to 0.
        result[:3].masked_fill_(result[3:] == 0, 0)
    return result
