"""The switch between the Triton kernels and their torch reference.

The Triton kernel modules are imported on first use only, which keeps Triton's compiler out of
processes that never run a kernel. Triton reads ``TRITON_INTERPRET`` when it defines a kernel
and when ``triton.language`` is first imported (torchvision imports it), so a process that
interprets the kernels must set the variable before either.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from enum import StrEnum
from typing import Final

import torch

from darkroom_gpu.config.settings import KERNEL_CHOICES
from darkroom_gpu.kernels.reference import resize_reference
from darkroom_gpu.kernels.spec import ResizeSpec
from darkroom_gpu.ops import Interpolation

__all__ = (
    "MAX_LEVEL_DIFFERENCE",
    "KernelBackend",
    "KernelUnavailableError",
    "KernelMismatchError",
    "interpreter_enabled",
    "resize_batch",
    "resolve_backend",
    "verify_kernels",
)

# Largest difference between a kernel result and the reference, in uint8 levels, at any pixel.
# Both compute in float32, but the kernels add up the weighted taps before normalising and
# approximate x ** (1 / 2.4) by exp2 and log2, so a value near a rounding boundary can round the
# other way.
MAX_LEVEL_DIFFERENCE: Final = 1


class KernelBackend(StrEnum):
    """The code that resizes a ragged batch: the Triton kernels, or the torch ops per image."""

    TRITON = "triton"
    TORCH = "torch"


class KernelUnavailableError(RuntimeError):
    """The Triton kernels were requested but cannot run here."""


class KernelMismatchError(RuntimeError):
    """The Triton kernels ran but their results differ from the reference."""


def triton_importable() -> bool:
    """Tell whether the ``triton`` package is installed."""
    return importlib.util.find_spec("triton") is not None


def interpreter_enabled() -> bool:
    """Tell whether Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    if not triton_importable():
        return False
    import triton

    return bool(triton.knobs.runtime.interpret)


def resolve_backend(choice: str, device: torch.device) -> KernelBackend:
    """Turn the configured ``batching.kernels`` value into the backend for `device`.

    ``auto`` picks Triton on a CUDA device when Triton is installed, else torch. ``triton``
    insists on Triton and also accepts a CPU device while Triton's interpreter is on, which is
    how the tests run the kernels without a GPU.

    Raises:
        ValueError: If `choice` is not one of `KERNEL_CHOICES`.
        KernelUnavailableError: ``triton`` was chosen but Triton is not installed, or the
            device is not CUDA and the interpreter is off.
    """
    if choice not in KERNEL_CHOICES:
        raise ValueError(f"kernels: expected one of {KERNEL_CHOICES}, got {choice!r}")
    if choice == "torch":
        return KernelBackend.TORCH
    if choice == "auto":
        usable = device.type == "cuda" and triton_importable()
        return KernelBackend.TRITON if usable else KernelBackend.TORCH

    if not triton_importable():
        raise KernelUnavailableError(
            "batching.kernels is triton, but the triton package is not installed; install it "
            "or set batching.kernels to auto or torch"
        )
    if device.type != "cuda" and not interpreter_enabled():
        raise KernelUnavailableError(
            f"batching.kernels is triton, but Triton compiles for CUDA devices only, not "
            f"{device}; set TRITON_INTERPRET=1 to interpret the kernels on the CPU (slow), or "
            "set batching.kernels to auto or torch"
        )
    return KernelBackend.TRITON


def resize_batch(
    images: Sequence[torch.Tensor], specs: Sequence[ResizeSpec], backend: KernelBackend
) -> list[torch.Tensor]:
    """Resize a ragged batch and do its colour work with `backend`.

    See `darkroom_gpu.kernels.resize.resize_images` for the arguments and the result; the
    torch backend returns new tensors with the same shapes and, within
    `MAX_LEVEL_DIFFERENCE`, the same values.
    """
    if backend is KernelBackend.TRITON:
        from darkroom_gpu.kernels.resize import resize_images

        return resize_images(images, specs)
    return resize_reference(images, specs)


def verify_kernels(device: torch.device) -> int:
    """Run a small ragged batch through the kernels and the reference on `device`, and compare.

    The batch has gray, RGB and RGBA images, upscales and downscales, both filters, linear
    light, grayscale, tint and flattening. It takes milliseconds on a GPU once the kernels are
    compiled, and compiling them is most of the first call.

    Returns:
        The largest difference found, in uint8 levels.

    Raises:
        KernelMismatchError: If a result differs in shape, or by more than
            `MAX_LEVEL_DIFFERENCE` at any pixel.
    """
    generator = torch.Generator().manual_seed(0)
    shapes = [(3, 37, 23), (4, 64, 80), (1, 9, 7), (4, 5, 3)]
    images = [
        torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator).to(device)
        for shape in shapes
    ]
    specs = [
        ResizeSpec(50, 41, grayscale=True),
        ResizeSpec(21, 17, linear=True, tint=(255, 128, 0), background=(20, 40, 60, 128)),
        ResizeSpec(4, 12, interpolation=Interpolation.BILINEAR, linear=True),
        ResizeSpec(5, 3, background=(255, 255, 255, 255)),
    ]
    actual = resize_batch(images, specs, KernelBackend.TRITON)
    expected = resize_reference(images, specs)

    largest = 0
    for index, (result, reference) in enumerate(zip(actual, expected, strict=True)):
        if result.shape != reference.shape:
            raise KernelMismatchError(
                f"kernel result {index} has shape {tuple(result.shape)}, the reference "
                f"{tuple(reference.shape)}"
            )
        difference = int((result.int() - reference.int()).abs().max())
        largest = max(largest, difference)
    if largest > MAX_LEVEL_DIFFERENCE:
        raise KernelMismatchError(
            f"kernel results differ from the reference by up to {largest} levels, more than "
            f"the {MAX_LEVEL_DIFFERENCE} allowed"
        )
    return largest
