"""The interface shared by the CPU and GPU manipulators."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from darkroom_gpu.geometry import Size
from darkroom_gpu.options import OutputFormat, ProcessingOptions

__all__ = ("ImageJob", "ImageResult", "Manipulator")


@dataclass(frozen=True, slots=True)
class ImageJob:
    """One image to transform.

    Attributes:
        data: the encoded source bytes.
        options: the validated request options with source defaults applied.
        negotiated_format: the format chosen from ``Accept`` for ``auto=format``, if any.
        allow_enlarge: whether the result may be larger than the source.
        max_pixels: limit on the source's stored width x height.
        max_output_side: limit on each side of the result, in pixels.
        max_output_pixels: limit on the result's width x height.
    """

    data: bytes
    options: ProcessingOptions
    negotiated_format: OutputFormat | None
    allow_enlarge: bool
    max_pixels: int
    max_output_side: int = 8192
    max_output_pixels: int = 40_000_000


@dataclass(frozen=True, slots=True)
class ImageResult:
    """An encoded result with what it took to make it.

    Attributes:
        data: the encoded bytes.
        output_format: their format.
        size: their width and height in pixels.
        timings: seconds spent per stage (``decode``, ``process``, ``encode``, ``queue``).
    """

    data: bytes
    output_format: OutputFormat
    size: Size
    timings: dict[str, float] = field(default_factory=dict)


class Manipulator(ABC):
    """Decodes, transforms and encodes images on one device.

    Implementations never block the event loop: `process` hands the work to worker threads
    (or a GPU batch) and awaits it.
    """

    device: str

    @abstractmethod
    async def process(self, job: ImageJob) -> ImageResult:
        """Transform one image.

        Raises:
            UnsupportedMediaTypeError: the bytes are no image format the server reads.
            UnprocessableImageError: the image is corrupt or over a limit.
        """

    async def warm_up(self) -> None:
        """Run one small image through every stage so the first request pays no set-up cost."""
        return None

    async def close(self) -> None:
        """Stop worker threads and release device memory."""
        return None
