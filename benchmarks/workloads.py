"""The five standard workloads, their thumbor equivalents and their Pillow references.

The workload definitions (source photo and darkroom-gpu query) come from `gpu_bench`, so the
in-process GPU benchmark and the HTTP benchmark measure the same requests. Here each query also
names its quality explicitly (`QUALITY`, which thumbor is configured with too), so that the
comparison does not depend on darkroom-gpu's per-format defaults.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Final

from benchmarks.gpu_bench import WORKLOADS, Workload

__all__ = (
    "QUALITY",
    "REFERENCES",
    "THUMBOR_OPTIONS",
    "WORKLOADS",
    "Reference",
    "Workload",
    "select_workloads",
)

# JPEG and WebP quality of every result, on both servers.
QUALITY: Final = 80

# Path segments between thumbor's ``/unsafe/`` and the image name, one per workload. thumbor
# 7.8's PIL engine turns ``rotate(90)`` counter-clockwise (a transpose with Pillow's ROTATE_90),
# while darkroom-gpu's ``rot=90`` turns clockwise. Both cost one transpose.
THUMBOR_OPTIONS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "W1": "300x0",
        "W2": "800x800",
        "W3": "1200x0/filters:blur(5)",
        "W4": "1200x0/filters:format(webp)",
        "W5": "600x0/filters:grayscale():rotate(90)",
    }
)


@dataclass(frozen=True, slots=True)
class Reference:
    """The steps of a workload's Pillow reference image, in processing order.

    Attributes:
        target_width: width of the resize, in pixels.
        target_height: height of the resize in pixels, or 0 to keep the aspect ratio.
        crop: whether to fill ``target_width`` x ``target_height`` and cut the centre.
        blur_sigma: Gaussian blur standard deviation in output pixels, or 0 for none.
        grayscale: whether to convert to luma and back to RGB.
        rotation: quarter turn in degrees clockwise (0, 90, 180 or 270).
    """

    target_width: int
    target_height: int = 0
    crop: bool = False
    blur_sigma: float = 0.0
    grayscale: bool = False
    rotation: int = 0


REFERENCES: Final[Mapping[str, Reference]] = MappingProxyType(
    {
        "W1": Reference(target_width=300),
        "W2": Reference(target_width=800, target_height=800, crop=True),
        "W3": Reference(target_width=1200, blur_sigma=5.0),
        "W4": Reference(target_width=1200),
        "W5": Reference(target_width=600, grayscale=True, rotation=90),
    }
)


def select_workloads(keys: Sequence[str]) -> tuple[Workload, ...]:
    """Return the standard workloads named by `keys` (``W1`` .. ``W5``), in the standard order.

    Each query names ``q=QUALITY`` unless it already names a quality.

    Raises:
        ValueError: If a key names no standard workload.
    """
    known = {workload.key for workload in WORKLOADS}
    unknown = [key for key in keys if key not in known]
    if unknown:
        raise ValueError(
            f"workloads: expected keys from {', '.join(sorted(known))}, got {', '.join(unknown)}"
        )
    return tuple(_with_quality(workload) for workload in WORKLOADS if workload.key in keys)


def _with_quality(workload: Workload) -> Workload:
    names = {pair.partition("=")[0] for pair in workload.query.split("&")}
    if "q" in names:
        return workload
    return replace(workload, query=f"{workload.query}&q={QUALITY}")
