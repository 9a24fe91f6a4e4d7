"""Pure tensor image ops that run unchanged on CPU and CUDA tensors.

Convention:
    Images are tensors of shape (..., C, H, W): any number of leading batch dims, then channels,
    rows and columns. C is 3 (RGB) or 4 (RGBA with straight, not premultiplied, alpha). The dtype
    is uint8 or a floating dtype, and in both cases values are on the 0..255 scale, not 0..1.
    Every op returns the input dtype. Ops that compute (resize, blur, colour, rotation by angles
    that are not multiples of 90 degrees, flatten) work in float32 (float64 for float64 input),
    and for uint8 output they round half to even and clamp to [0, 255]. Crop, pad, flip, orient
    and quarter-turn rotation copy values exactly. Coordinates and sizes are in pixels with x to
    the right, y down and the origin at the top-left corner of the image. No op modifies its
    input or returns a view of it, and every new tensor is created on the input's device.
"""

from __future__ import annotations

from darkroom_gpu.ops._checks import ImageShapeError
from darkroom_gpu.ops.blur import gaussian_blur
from darkroom_gpu.ops.color import flatten, grayscale, tint
from darkroom_gpu.ops.geometry import crop, flip, orient, pad, rotate
from darkroom_gpu.ops.resize import Interpolation, resize
from darkroom_gpu.ops.transfer import linear_to_srgb, srgb_to_linear

__all__ = (
    "ImageShapeError",
    "Interpolation",
    "crop",
    "flatten",
    "flip",
    "gaussian_blur",
    "grayscale",
    "linear_to_srgb",
    "orient",
    "pad",
    "resize",
    "rotate",
    "srgb_to_linear",
    "tint",
)
