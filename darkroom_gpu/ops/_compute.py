"""Helpers for ops that compute in floating point: dtype round trips and alpha premultiplication."""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = (
    "clamp_premultiplied",
    "device_values",
    "from_premultiplied",
    "from_working",
    "premultiply",
    "to_batch",
    "to_working",
    "unpremultiply",
)


def device_values(
    values: Sequence[float], dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """Return `values` as a 1-D tensor of `dtype` on `device`, without making the host wait.

    ``torch.tensor(values, device="cuda")`` copies from pageable memory, and torch then makes
    the host wait until the stream has run every kernel queued before the copy. A copy from
    pinned memory with ``non_blocking=True`` is queued like a kernel instead, so the host goes
    on queueing the image's next steps.
    """
    host = torch.tensor(values, dtype=dtype)
    if device.type != "cuda":
        return host.to(device)
    return host.pin_memory().to(device, non_blocking=True)


def to_working(image: torch.Tensor) -> torch.Tensor:
    """Convert `image` to the dtype that computing ops use.

    Args:
        image: (..., C, H, W) uint8 or float in [0, 255].

    Returns:
        The same values as float64 when `image` is float64, else as float32. Half-precision inputs
        are widened because several CPU kernels do not support them.
    """
    if image.dtype == torch.float64:
        return image
    return image.to(torch.float32)


def from_working(result: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Clamp a computed result to [0, 255] and convert it to `dtype`.

    Args:
        result: (..., C, H, W) float in about [0, 255].
        dtype: Output dtype. For uint8 the values are rounded half to even first.

    Returns:
        (..., C, H, W) tensor of `dtype` in [0, 255].
    """
    if dtype == torch.uint8:
        return result.round().clamp(0, 255).to(torch.uint8)
    return result.clamp(0, 255).to(dtype)


def to_batch(image: torch.Tensor) -> torch.Tensor:
    """Reshape (..., C, H, W) to (N, C, H, W), as torch and kornia kernels want 4-D input."""
    return image.reshape(-1, *image.shape[-3:])


def premultiply(image: torch.Tensor) -> torch.Tensor:
    """Multiply colour by alpha, so that filtering does not pull colour from transparent pixels.

    Args:
        image: (..., 4, H, W) float RGBA with straight alpha, in [0, 255].

    Returns:
        (..., 4, H, W) float RGBA with colour premultiplied by alpha / 255, in [0, 255].
    """
    alpha = image[..., 3:4, :, :]
    return torch.cat((image[..., :3, :, :] * (alpha / 255), alpha), dim=-3)


def clamp_premultiplied(image: torch.Tensor) -> torch.Tensor:
    """Bring filter overshoot back into range without changing the straight colour.

    Pixels whose alpha overshoots 255 are scaled down as a whole, so their colour / alpha ratio,
    which is the straight colour, stays the same. Clamping alpha alone would brighten such pixels.
    Pixels with alpha at or below 0 become 0, and colour is then clamped to [0, alpha].

    Args:
        image: (..., 4, H, W) float RGBA with premultiplied colour, about in [0, 255].

    Returns:
        (..., 4, H, W) float RGBA with alpha in [0, 255] and colour in [0, alpha].
    """
    alpha = image[..., 3:4, :, :]
    scale = torch.where(alpha > 255, 255 / alpha, (alpha > 0).to(image.dtype))
    image = image * scale
    alpha = image[..., 3:4, :, :]
    colour = torch.minimum(image[..., :3, :, :].clamp(min=0), alpha)
    return torch.cat((colour, alpha), dim=-3)


def unpremultiply(image: torch.Tensor) -> torch.Tensor:
    """Divide premultiplied colour by alpha, giving colour 0 where alpha is 0 or below.

    Args:
        image: (..., 4, H, W) float RGBA with premultiplied colour, about in [0, 255]. Values may
            overshoot after bicubic filtering, see `clamp_premultiplied`.

    Returns:
        (..., 4, H, W) float RGBA with straight alpha, in [0, 255].
    """
    image = clamp_premultiplied(image)
    alpha = image[..., 3:4, :, :]
    # Lanes where alpha is 0 divide to NaN, and torch.where discards them.
    colour = torch.where(alpha > 0, image[..., :3, :, :] * 255 / alpha, 0)
    return torch.cat((colour.clamp(max=255), alpha), dim=-3)


def from_premultiplied(image: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Unpremultiply a computed RGBA result and convert it to `dtype`.

    Args:
        image: (..., 4, H, W) float RGBA with premultiplied colour, about in [0, 255].
        dtype: Output dtype, see `from_working`.

    Returns:
        (..., 4, H, W) RGBA of `dtype` in [0, 255] with straight alpha. Pixels whose alpha is 0
        in the output have colour 0, also where a tiny alpha rounded to 0 for uint8, so that
        transparent areas hold no stray colour.
    """
    result = from_working(unpremultiply(image), dtype)
    alpha = result[..., 3:4, :, :]
    colour = result[..., :3, :, :].masked_fill(alpha == 0, 0)
    return torch.cat((colour, alpha), dim=-3)
