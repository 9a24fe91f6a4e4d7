"""The project's own GPU kernels, written in Triton, each with a plain-torch reference.

A ragged batch of uint8 images of different sizes is resized with an antialiased filter, and
its colour work (grayscale or tint, flattening, resizing in linear light) is done in the same
passes: two kernel launches per batch instead of a chain of torch ops per image. README.md in
this folder describes the data layout, the filter, the tolerances and how to run the tests.

Importing this package does not import Triton; `resize_batch` imports the kernels when the
Triton backend first runs.
"""

from darkroom_gpu.kernels.dispatch import (
    MAX_LEVEL_DIFFERENCE,
    KernelBackend,
    KernelMismatchError,
    KernelUnavailableError,
    interpreter_enabled,
    resize_batch,
    resolve_backend,
    verify_kernels,
)
from darkroom_gpu.kernels.reference import resize_reference
from darkroom_gpu.kernels.spec import ResizeSpec, check_batch

__all__ = (
    "MAX_LEVEL_DIFFERENCE",
    "KernelBackend",
    "KernelMismatchError",
    "KernelUnavailableError",
    "ResizeSpec",
    "check_batch",
    "interpreter_enabled",
    "resize_batch",
    "resize_reference",
    "resolve_backend",
    "verify_kernels",
)
