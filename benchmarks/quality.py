"""Output quality: each server's result against a Pillow LANCZOS reference of the same request.

Convention: images are ``(H, W, 3)`` uint8 numpy arrays in [0, 255], RGB. SSIM is the mean
structural similarity of Wang et al. (2004): an 11-tap Gaussian window with sigma 1.5,
K1 = 0.01, K2 = 0.03 and a data range of 255, computed per channel over the pixels the window
covers completely, then averaged over channels. PSNR is over all channels, in decibels.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter, ImageOps

from benchmarks.workloads import Reference

__all__ = ("QualityScore", "decode_result", "psnr", "render_reference", "score", "ssim")

SSIM_WINDOW: Final = 11
SSIM_SIGMA: Final = 1.5
SSIM_K1: Final = 0.01
SSIM_K2: Final = 0.03
DATA_RANGE: Final = 255.0
# Pillow's Transpose constants turn counter-clockwise; these are keyed by clockwise degrees.
_CLOCKWISE_TRANSPOSES: Final = {
    90: Image.Transpose.ROTATE_270,
    180: Image.Transpose.ROTATE_180,
    270: Image.Transpose.ROTATE_90,
}


@dataclass(frozen=True, slots=True)
class QualityScore:
    """One result compared with its reference.

    SSIM and PSNR are ``None`` when the result and the reference differ in size, because
    a size mismatch is a geometry error that no pixel metric should hide. PSNR is ``None``
    as well when the two are identical (infinite PSNR).
    """

    ssim: float | None
    psnr_db: float | None
    result_width: int
    result_height: int
    reference_width: int
    reference_height: int


def render_reference(source: Path, reference: Reference, *, clockwise: bool = True) -> np.ndarray:
    """Render the reference image of one workload with Pillow.

    Args:
        source: the source photo; its EXIF orientation is applied first.
        reference: the steps to apply.
        clockwise: the direction of ``reference.rotation``; thumbor's PIL engine turns
            counter-clockwise, so its reference is rendered with ``False``.

    Returns:
        ``(H, W, 3)`` uint8 RGB pixels.
    """
    with Image.open(source) as opened:
        image = ImageOps.exif_transpose(opened).convert("RGB")

    if reference.crop:
        target = (reference.target_width, reference.target_height)
        image = ImageOps.fit(image, target, method=Image.Resampling.LANCZOS)
    else:
        target_height = reference.target_height or _scaled_side(
            image.height, reference.target_width, image.width
        )
        target = (reference.target_width, target_height)
        image = image.resize(target, Image.Resampling.LANCZOS)
    if reference.grayscale:
        image = image.convert("L").convert("RGB")
    if reference.blur_sigma > 0:
        image = image.filter(ImageFilter.GaussianBlur(reference.blur_sigma))
    if reference.rotation:
        degrees = reference.rotation if clockwise else 360 - reference.rotation
        image = image.transpose(_CLOCKWISE_TRANSPOSES[degrees % 360])
    return np.asarray(image)


def decode_result(data: bytes) -> np.ndarray:
    """Decode a server's response body as a viewer shows it (EXIF orientation applied).

    Returns:
        ``(H, W, 3)`` uint8 RGB pixels.
    """
    with Image.open(io.BytesIO(data)) as opened:
        image = ImageOps.exif_transpose(opened).convert("RGB")
    return np.asarray(image)


def score(result: np.ndarray, reference: np.ndarray) -> QualityScore:
    """Compare a decoded result with its reference."""
    result_height, result_width = result.shape[:2]
    reference_height, reference_width = reference.shape[:2]
    same_size = result.shape == reference.shape
    psnr_db = psnr(result, reference) if same_size else None
    return QualityScore(
        ssim=ssim(result, reference) if same_size else None,
        psnr_db=psnr_db if psnr_db is not None and math.isfinite(psnr_db) else None,
        result_width=result_width,
        result_height=result_height,
        reference_width=reference_width,
        reference_height=reference_height,
    )


def ssim(first: np.ndarray, second: np.ndarray) -> float:
    """Return the mean SSIM of two same-sized images, in [-1, 1] (1 for identical images).

    Raises:
        ValueError: If the shapes differ or an image is smaller than the window.
    """
    if first.shape != second.shape:
        raise ValueError(f"images: expected equal shapes, got {first.shape} and {second.shape}")
    if min(first.shape[:2]) < SSIM_WINDOW:
        raise ValueError(f"images: expected sides of at least {SSIM_WINDOW}, got {first.shape}")

    x = _as_planes(first)
    y = _as_planes(second)
    mean_x = _gaussian_filter(x)
    mean_y = _gaussian_filter(y)
    variance_x = _gaussian_filter(x * x) - mean_x * mean_x
    variance_y = _gaussian_filter(y * y) - mean_y * mean_y
    covariance = _gaussian_filter(x * y) - mean_x * mean_y
    c1 = (SSIM_K1 * DATA_RANGE) ** 2
    c2 = (SSIM_K2 * DATA_RANGE) ** 2
    similarity = ((2 * mean_x * mean_y + c1) * (2 * covariance + c2)) / (
        (mean_x * mean_x + mean_y * mean_y + c1) * (variance_x + variance_y + c2)
    )
    return float(similarity.mean())


def psnr(first: np.ndarray, second: np.ndarray) -> float:
    """Return the PSNR of two same-sized uint8 images in decibels (infinite when equal)."""
    difference = first.astype(np.float64) - second.astype(np.float64)
    mean_squared_error = float(np.mean(difference * difference))
    if mean_squared_error == 0:
        return math.inf
    return 10 * math.log10(DATA_RANGE**2 / mean_squared_error)


def _scaled_side(side: int, target: int, reference_side: int) -> int:
    # Round half up, never below 1, as darkroom-gpu sizes the free side.
    return max(1, (2 * side * target + reference_side) // (2 * reference_side))


def _as_planes(image: np.ndarray) -> torch.Tensor:
    # (H, W, C) uint8 -> (C, 1, H, W) float64, one plane per channel for a single-channel conv.
    return torch.from_numpy(np.array(image, dtype=np.float64)).permute(2, 0, 1).unsqueeze(1)


def _gaussian_filter(planes: torch.Tensor) -> torch.Tensor:
    offsets = torch.arange(SSIM_WINDOW, dtype=torch.float64) - (SSIM_WINDOW - 1) / 2
    taps = torch.exp(-(offsets**2) / (2 * SSIM_SIGMA**2))
    taps = taps / taps.sum()
    filtered = F.conv2d(planes, taps.view(1, 1, 1, SSIM_WINDOW))
    return F.conv2d(filtered, taps.view(1, 1, SSIM_WINDOW, 1))
